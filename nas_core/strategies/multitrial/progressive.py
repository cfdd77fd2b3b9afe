"""Pareto-aware progressive search: DPP-Net (Dong et al., ECCV 2018) on the NB201 and DARTS cells.

DPP-Net grows cells the way PNAS does (Liu et al., ECCV 2018) and picks what to train by Pareto optimality
instead of predicted accuracy alone:

1. Stage 1 trains every one-node cell (or ``first_stage`` of them drawn at random).
2. Stage b expands every cell trained at stage b-1 by each choice for its next node (cells already trained,
   and NB201 cells whose output no longer depends on the input, are dropped), predicts the expansions'
   validation accuracy with a recurrent regressor fitted on every trial so far (:mod:`nas_core.surrogate`),
   counts their cost exactly (MACs or params), and trains the ``beam`` expansions picked by Pareto optimality
   over (predicted accuracy up, cost down).
3. The last stage completes the cell: NB201's node 3, DARTS's node 5.

How cells grow on each space is in :mod:`nas_core.spaces.growers` (each space's ``grower``):

- NB201: a partial cell is a whole NB201 genotype whose later nodes copy node b through skip edges
  (:mod:`nas_core.spaces.nb201_partial`); 4 one-node cells.
- DARTS: a partial cell has fewer nodes, all concatenated; as in PNAS the reduction cell is the normal cell
  (:mod:`nas_core.spaces.darts_partial`); each node takes two distinct earlier states, so 49 one-node cells.

Every trial, of any stage, is a real architecture: the search's result is the best trial of all under the
``objective``, trained again at the final size; the Monitor draws every trial on the accuracy-MACs plane,
coloured by stage, and can train any of them.

Where this departs from the papers, and why:

- When the predicted front holds more or fewer than ``beam`` cells, the fronts are taken in order of
  non-domination and the last one is thinned to its least crowded cells: NSGA-II's rule (Deb et al., 2002).
- The cost is MACs (or params), counted exactly: DPP-Net's device objectives (latency on a phone, memory) are
  measured on the target device, which a search on this machine does not have.
- ``first_stage`` can sample the first stage (PNAS trains all of its one-block cells) to fit a budget.
- Trials train at the search size with the final training's recipe, as random search and evolution here.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING, Any

import pandas as pd

from nas_core.params import ParamSpec
from nas_core.pareto import pareto_mask, select_by_fronts
from nas_core.spaces import get_space
from nas_core.spaces.growers import COSTS
from nas_core.stats import rank_correlations
from nas_core.strategies.base import SearchContext, SearchOutcome
from nas_core.strategies.multitrial.ledger import TrialLedger
from nas_core.strategies.multitrial.search import MultiTrialStrategy, trial_executor, trial_size
from nas_core.strategies.multitrial.trial import Trial
from nas_core.surrogate import LSTMEnsemble

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig


class ProgressiveParetoSearch(MultiTrialStrategy):
    """Cells grown node by node; each stage trains the expansions on the predicted accuracy-cost Pareto front."""

    name = "progressive"
    label = "Pareto-aware progressive search"
    description = (
        "DPP-Net (Dong et al. 2018): grows cells node by node; each stage predicts the expansions' accuracy "
        "with an LSTM ensemble fitted on the trials so far and trains `beam` of them picked from the Pareto front "
        "of predicted accuracy against MACs (or params)."
    )
    params = (
        *(s for s in MultiTrialStrategy.common_params if s.name != "trials"),
        ParamSpec("beam", 8, "int", "Cells trained per stage after the first (DPP-Net's and PNAS's K)", 1, 1000),
        ParamSpec(
            "first_stage",
            0,
            "int",
            "One-node cells trained at stage 1, drawn at random (0 = all of them, as PNAS: 4 on nb201, 49 on darts)",
            0,
            1000,
        ),
        ParamSpec(
            "cost",
            "macs",
            "choice",
            "The cost the Pareto selection minimises beside predicted accuracy: macs or params",
            choices=COSTS,
        ),
        ParamSpec("predictors", 5, "int", "LSTM regressors averaged in the accuracy predictor", 1, 20),
    )

    def total_trials(self, config: ExperimentConfig) -> int:
        p, grower = config.params, get_space(config.space).grower(None)  # stage counts only: no size needed
        first = len(grower.first_stage())
        first = min(first, p["first_stage"]) if p["first_stage"] else first
        return first + (grower.stages - 1) * int(p["beam"])

    def settings_text(self, p: dict[str, Any]) -> str:
        first = f"first stage {p['first_stage']} drawn, " if p["first_stage"] else ""
        return f"; {first}beam {p['beam']}, cost {p['cost']}, {p['predictors']} LSTM predictor(s)"

    def search(self, ctx: SearchContext) -> SearchOutcome:
        cfg, p, rep, space = ctx.config, ctx.params, ctx.reporter, ctx.space
        total = self.total_trials(cfg)
        ledger = TrialLedger(ctx, total)
        size = (ctx.data.num_classes, ctx.data.input_shape, cfg.channels, cfg.cells_per_stage)
        grower = space.grower(size)
        stage_of: dict[str, int] = {}  # genotype text -> the stage that trained it
        with trial_executor(ctx) as ex:
            rep.log(
                f"{self.label}: up to {total} trials of {cfg.epochs} epoch(s) each {trial_size(ctx)}, grown node by "
                f"node over {grower.stages} stages, ranked by {ledger.ranked}; {p['workers']} at once on "
                f"{ex.where}{self.settings_text(p)}"
            )
            numbers = itertools.count()

            def train(stage: int, cells: list[tuple[Any, int | None, float | None]]) -> list[Trial]:
                """Train ``cells`` (genotype, parent trial, predicted accuracy) on the executor; land each."""
                queue = list(cells)
                info: dict[int, tuple[int | None, float | None]] = {}
                landed: list[Trial] = []
                while queue or ex.busy():
                    while queue and ex.busy() < ex.capacity:
                        g, parent, predicted = queue.pop(0)
                        index = next(numbers)
                        info[index] = (parent, predicted)
                        stage_of[space.format(g)] = stage
                        ex.submit(space.format(g), index)
                    index, genotype, score = ex.next_done()
                    parent, predicted = info.pop(index)
                    how = f"stage {stage}" + (f", extends trial {parent}" if parent is not None else "")
                    if predicted is not None:
                        how += f", predicted {predicted:.4f}"
                    if index in ex.replayed:
                        how += ", reused"
                    extra = {"stage": stage, "predicted": predicted}
                    landed.append(ledger.land(index, genotype, score, parent, how, extra))
                return sorted(landed, key=lambda t: t.index)  # submission order: the order of ``cells``

            first = grower.first_stage()
            if p["first_stage"] and p["first_stage"] < len(first):
                first = random.Random(cfg.seed).sample(first, p["first_stage"])
            previous = train(1, [(g, None, None) for g in first])
            predictor = LSTMEnsemble(vocab=grower.vocab, members=p["predictors"], seed=cfg.seed)
            for stage in range(2, grower.stages + 1):
                candidates: dict[str, tuple[Any, int]] = {}
                for parent in previous:
                    for g in grower.expand(space.parse(parent.genotype), stage):
                        text = space.format(g)
                        if text not in stage_of and text not in candidates:
                            candidates[text] = (g, parent.index)
                if not candidates:
                    rep.log(f"stage {stage}: no new cell to grow; the search ends here")
                    break
                seen = ledger.done
                predictor.fit(
                    [grower.tokens(space.parse(t.genotype), stage_of[t.genotype]) for t in seen],
                    [t.val_acc for t in seen],
                )
                cells = list(candidates.values())
                predicted = predictor.predict([grower.tokens(g, stage) for g, _ in cells])
                costs = [grower.cost(g, stage, p["cost"]) for g, _ in cells]
                table = pd.DataFrame({"predicted": predicted, "cost": costs})
                objectives = [("predicted", "max"), ("cost", "min")]
                picked = select_by_fronts(table, objectives, p["beam"])
                front = int(pareto_mask(table, objectives).sum())
                rep.log(
                    f"stage {stage}: {len(cells)} new cells grown from the {len(previous)} of stage {stage - 1}; "
                    f"predictor fitted on {len(seen)} trials; {front} on the predicted front of accuracy against "
                    f"{p['cost']}; training {len(picked)}"
                )
                previous = train(stage, [(cells[i][0], cells[i][1], predicted[i]) for i in picked])
                tau, _ = rank_correlations([predicted[i] for i in picked], [t.val_acc for t in previous])
                if not math.isnan(tau):
                    rep.log(f"stage {stage}: Kendall tau of predicted against measured accuracy {tau:+.3f}")
        return ledger.outcome({"beam": p["beam"], "cost": p["cost"]})


PROGRESSIVE = ProgressiveParetoSearch()
