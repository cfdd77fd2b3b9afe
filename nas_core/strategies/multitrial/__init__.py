"""Multi-trial search: every candidate is trained for a few epochs and measured.

- :mod:`~nas_core.strategies.multitrial.trial`: one trial (what a pool process or a Ray task runs);
- :mod:`~nas_core.strategies.multitrial.executors`: where trials run (this process, a local pool, Ray via
  :mod:`~nas_core.strategies.multitrial.ray_executor`) and a resumed search's trials replayed;
- :mod:`~nas_core.strategies.multitrial.ledger`: the finished trials, scored under the objective;
- :mod:`~nas_core.strategies.multitrial.search`: random search and regularized evolution;
- :mod:`~nas_core.strategies.multitrial.progressive`: progressive search (PNAS-style, cells grown node by node).
"""

from nas_core.strategies.multitrial.executors import ReplayExecutor, TrialExecutor, make_executor
from nas_core.strategies.multitrial.ledger import (
    OBJECTIVES,
    TrialLedger,
    measured_front,
    mnas_reward,
    pareto_keys,
    trial_table,
)
from nas_core.strategies.multitrial.progressive import PROGRESSIVE
from nas_core.strategies.multitrial.search import (
    EVOLUTION,
    RANDOM,
    MultiTrialStrategy,
    evolve,
    population_of,
    trial_executor,
    trial_settings,
)
from nas_core.strategies.multitrial.trial import Trial, TrialScore, TrialSettings, run_trial

__all__ = [
    "EVOLUTION",
    "OBJECTIVES",
    "PROGRESSIVE",
    "RANDOM",
    "MultiTrialStrategy",
    "ReplayExecutor",
    "Trial",
    "TrialExecutor",
    "TrialLedger",
    "TrialScore",
    "TrialSettings",
    "evolve",
    "make_executor",
    "measured_front",
    "mnas_reward",
    "pareto_keys",
    "population_of",
    "run_trial",
    "trial_executor",
    "trial_settings",
    "trial_table",
]
