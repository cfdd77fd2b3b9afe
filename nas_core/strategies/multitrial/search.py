"""Multi-trial search: random search and regularized evolution (Real et al., AAAI 2019), each candidate trained.

A trial builds the candidate's stand-alone network at the search size (``channels``, ``cells_per_stage``),
trains it from scratch for ``epochs`` epochs on the training split (SGD, cosine, the final training's
recipe at ``final_lr``) and scores it by validation accuracy; the test split is never looked at during the
search. The best candidate is then trained again, at the final size, like every other strategy's result.

Trials run through an executor: in this process (``workers`` = 1) or on a pool of ``workers`` spawned
processes, one torch thread each, the data handed to each worker once; or, with ``executor=ray``, as Ray
tasks (``ray_executor.py``: on the cluster at ``RAY_ADDRESS``, else on a local instance). With several
workers, evolution runs asynchronously as in the paper (each finished trial joins the population and the
next child is bred at once), so no worker waits for a generation to finish.

Regularized (aging) evolution: the first ``population`` trials are random; after that each child mutates
the best of ``sample_size`` members drawn at random from the population, and the oldest member dies when
a child joins. The NB201 paper's REA settings are population 10 and sample size 3 (``R-EA.sh``).
Mutation changes one choice: one edge's op on NB201; one (op, input) pair of one DARTS cell; one block's
choice on the MobileNetV2-style space.

Trials are ranked by validation accuracy, or (``objective=mnas``) by MnasNet's reward (Tan et al., CVPR
2019) acc x (MACs / ``target_mmacs``)^w, w = ``mnas_alpha`` at or under the target and ``mnas_beta`` over it
(the paper's soft constraint: both -0.07), which makes the tournament and the final pick cost-aware; or
(``objective=pareto``) by validation accuracy and MACs together: evolution's tournament is NSGA-II's (front,
then crowding distance), and the search's pick is the front's most accurate trial. Every search logs the
trials' accuracy-MACs front, and the Monitor can train any trial at the final size.

On ``mobilenet`` the candidates are ProxylessNAS's space: every searchable block of the search table for
the input size (``digits``, ``cifar-search``, ``imagenet-search``) one of the six MBConvs
(kernel 3/5/7, expansion 3/6), or ``zero`` where the block keeps its shape; trials are built at the table's
own width and depth (``channels``/``cells_per_stage`` are cell-space settings).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from nas_core.errors import ConfigError
from nas_core.params import ParamSpec
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy
from nas_core.strategies.multitrial.executors import ReplayExecutor, make_executor
from nas_core.strategies.multitrial.ledger import OBJECTIVES, TrialLedger, pareto_keys
from nas_core.strategies.multitrial.trial import TRIAL_EPOCH_COST, Trial, TrialSettings

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig


def trial_executor(ctx: SearchContext) -> ReplayExecutor:
    """The executor the search's ``executor``/``workers`` params ask for, reusing a resumed run's trials."""
    p = ctx.params
    inner = make_executor(p["executor"], trial_settings(ctx), ctx.data, p["workers"], ctx.reporter.should_stop)
    if ctx.replay:
        ctx.reporter.log(f"resuming: {len(ctx.replay)} trial(s) of the earlier attempt are reused where the search "
                         "proposes them again (same trial number, same architecture)")  # fmt: skip
    return ReplayExecutor(inner, ctx.replay)


def trial_settings(ctx: SearchContext) -> TrialSettings:
    """What every trial of the search in ``ctx`` shares."""
    cfg = ctx.config
    return TrialSettings(
        ctx.space.name, cfg.channels, cfg.cells_per_stage, cfg.epochs, cfg.final_lr, cfg.batch_size, cfg.seed,
        cfg.channels_last, bool(ctx.params["latency"]), str(ctx.device),
    )  # fmt: skip


def trial_size(ctx: SearchContext) -> str:
    """The size trials are built at, for the search log."""
    return ctx.space.trial_size(ctx.config.channels, ctx.config.cells_per_stage, ctx.data.input_shape)


class MultiTrialStrategy(Strategy):
    """Shared loop: propose candidates, keep ``workers`` trials running, report each one as it lands."""

    derives_from_weights = False
    resumable = True

    common_params: tuple[ParamSpec, ...] = (
        ParamSpec("trials", 20, "int", "Candidates trained and scored in all", 1, 100_000),
        ParamSpec("workers", 1, "int", "Trials at once (1 = in this process; more = a pool, or Ray tasks)", 1, 64),
        ParamSpec(
            "executor",
            "process",
            "choice",
            "Where trials run: process (this process, or a pool for several workers) or ray (Ray tasks: "
            "the cluster at RAY_ADDRESS, else a local Ray instance; pip install ray)",
            choices=("process", "ray"),
        ),
        ParamSpec(
            "objective",
            "accuracy",
            "choice",
            "What trials are ranked by: accuracy (validation); mnas: MnasNet's reward val acc x "
            "(MACs / target_mmacs)^w, w = mnas_alpha at or under the target and mnas_beta over it; or pareto: "
            "validation accuracy and MACs together (evolution's tournament by non-dominated front, then "
            "crowding distance, as NSGA-II; the result is the front's most accurate trial)",
            choices=OBJECTIVES,
        ),
        ParamSpec(
            "target_mmacs", 0.0, "float", "MACs target in millions, for objective=mnas (required there)", 0.0, 1e6
        ),
        ParamSpec(
            "mnas_alpha",
            -0.07,
            "float",
            "Reward exponent at or under the target (MnasNet soft: -0.07, hard: 0)",
            -10.0,
            0.0,
        ),
        ParamSpec(
            "mnas_beta", -0.07, "float", "Reward exponent over the target (MnasNet soft: -0.07, hard: -1)", -10.0, 0.0
        ),
        ParamSpec(
            "latency",
            False,
            "bool",
            "Also measure each trial's latency (batch 1, one thread, over NAS_LATENCY_SECONDS); trials on several "
            "workers are timed side by side, so use workers=1 for steady figures",
        ),
    )

    def search_units(self, config: ExperimentConfig) -> float:
        return float(self.total_trials(config) * config.epochs) * TRIAL_EPOCH_COST

    def validate(self, config: ExperimentConfig) -> None:
        if config.params["workers"] > self.total_trials(config):
            raise ConfigError("params.workers", f"more workers than trials ({self.total_trials(config)})")
        if config.params["executor"] == "ray":
            from nas_core.strategies.multitrial.ray_executor import RAY_REQUIREMENT, ray_available

            if not ray_available():  # before anything is queued: the CLI and the Launch page share this check
                raise ConfigError(
                    "params.executor",
                    f"Ray is not installed here: pip install {RAY_REQUIREMENT} (or use executor=process)",
                )
        if config.params["objective"] == "mnas" and not config.params["target_mmacs"] > 0:
            raise ConfigError("params.target_mmacs", "objective=mnas needs a MACs target > 0 (in millions)")

    def propose(
        self, rng: random.Random, submitted: int, done: list[Trial], space: Any, p: dict[str, Any], shape: Any
    ) -> tuple[Any, int | None]:
        """The next candidate and its parent's trial index (None for a random draw); ``shape`` is the input's."""
        raise NotImplementedError

    def total_trials(self, config: ExperimentConfig) -> int:
        """How many trials the search trains in all (progress, and the workers check)."""
        return int(config.params["trials"])

    def search(self, ctx: SearchContext) -> SearchOutcome:
        cfg, p, rep, space = ctx.config, ctx.params, ctx.reporter, ctx.space
        rng = random.Random(cfg.seed)
        total, workers = p["trials"], p["workers"]
        ledger = TrialLedger(ctx, total)
        parents: dict[int, int | None] = {}
        submitted = 0
        with trial_executor(ctx) as ex:
            rep.log(
                f"{self.label}: {total} trials of {cfg.epochs} epoch(s) each {trial_size(ctx)}, ranked by "
                f"{ledger.ranked}; {workers} at once on {ex.where}{self.settings_text(p)}"
            )
            while len(ledger.done) < total:
                while submitted < total and ex.busy() < ex.capacity:
                    g, parent = self.propose(rng, submitted, ledger.done, space, p, ctx.data.input_shape)
                    parents[submitted] = parent
                    ex.submit(space.format(g), submitted)
                    submitted += 1
                index, genotype, score = ex.next_done()
                parent = parents[index]
                how = f"mutant of trial {parent}" if parent is not None else "random"
                ledger.land(index, genotype, score, parent, how + (", reused" if index in ex.replayed else ""))
        return ledger.outcome()

    def settings_text(self, p: dict[str, Any]) -> str:
        return ""


class RandomSearch(MultiTrialStrategy):
    """Uniform random sampling: the baseline every NAS method has to beat (Li and Talwalkar, 2019)."""

    name = "random"
    label = "Random search"
    description = "Trains `trials` uniformly random architectures for `epochs` epochs each; keeps the best by val."
    params = MultiTrialStrategy.common_params

    def propose(
        self, rng: random.Random, submitted: int, done: list[Trial], space: Any, p: dict[str, Any], shape: Any
    ) -> tuple[Any, int | None]:
        return space.sample(rng, shape), None


class RegularizedEvolution(MultiTrialStrategy):
    """Aging evolution: tournament selection of a parent, one mutation, the oldest member dies."""

    name = "evolution"
    label = "Regularized evolution"
    description = (
        "Aging evolution (Real et al. 2019): random population, then each child mutates the best of "
        "`sample_size` random members and replaces the oldest; every candidate is trained for `epochs` epochs."
    )
    params = (
        *MultiTrialStrategy.common_params,
        ParamSpec("population", 10, "int", "Population size (the first trials are random)", 2, 10_000),
        ParamSpec("sample_size", 3, "int", "Members drawn per tournament; the best one is the parent", 1, 10_000),
    )

    def validate(self, config: ExperimentConfig) -> None:
        super().validate(config)
        p = config.params
        if p["sample_size"] > p["population"]:
            raise ConfigError("params.sample_size", f"larger than the population ({p['population']})")
        if p["population"] > p["trials"]:
            raise ConfigError("params.population", f"larger than the number of trials ({p['trials']})")

    def settings_text(self, p: dict[str, Any]) -> str:
        return f"; population {p['population']}, sample size {p['sample_size']}"

    def propose(
        self, rng: random.Random, submitted: int, done: list[Trial], space: Any, p: dict[str, Any], shape: Any
    ) -> tuple[Any, int | None]:
        pareto = p["objective"] == "pareto"
        return evolve(rng, submitted, done, space, p["population"], p["sample_size"], shape, pareto)


def population_of(done: list[Trial], size: int) -> list[Trial]:
    """The living population after ``done`` (in finishing order): the ``size`` youngest, oldest first."""
    return done[-size:]


def evolve(
    rng: random.Random,
    submitted: int,
    done: list[Trial],
    space: Any,
    population: int,
    sample_size: int,
    input_shape: Any = None,
    pareto: bool = False,
) -> tuple[Any, int | None]:
    """The first ``population`` candidates are random; then the winner of a tournament of ``sample_size``
    living members (ties: the younger) is mutated. With several workers a tournament may start before the
    whole first population has finished: it then draws from those that have (at least one always has).

    ``pareto``: the tournament is NSGA-II's (Deb et al., 2002) over validation accuracy and MACs: the member on
    the better non-dominated front of the living population wins, then the one with the larger crowding
    distance on that front (the less crowded part of the front), then the younger."""
    if submitted < population or not done:
        return space.sample(rng, input_shape), None
    alive = population_of(done, population)
    contenders = rng.sample(range(len(alive)), min(sample_size, len(alive)))  # positions: later = younger
    keys = pareto_keys(alive) if pareto else [(0, t.fitness) for t in alive]
    parent = alive[max(contenders, key=lambda i: (*keys[i], i))]
    return space.mutate(parent.genotype, rng), parent.index


RANDOM = RandomSearch()


EVOLUTION = RegularizedEvolution()
