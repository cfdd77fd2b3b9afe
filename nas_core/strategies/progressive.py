"""Pareto-aware progressive search: DPP-Net (Dong et al., ECCV 2018) on the NB201 cell.

DPP-Net grows cells the way PNAS does (Liu et al., ECCV 2018) and picks what to train by Pareto optimality
instead of predicted accuracy alone:

1. Stage 1 trains every one-node cell (node 1 takes each op but ``none``).
2. Stage b expands every cell trained at stage b-1 by each choice of the ops into node b (cells whose output no
   longer depends on the input are dropped, and so are cells already trained), predicts the expansions'
   validation accuracy with a recurrent regressor fitted on every trial so far (:mod:`nas_core.surrogate`),
   counts their cost exactly (MACs or params), and trains the ``beam`` expansions picked by Pareto optimality over
   (predicted accuracy up, cost down).
3. The last stage decides node 3: its cells are whole NB201 cells.

A partial cell is an NB201 genotype whose later nodes copy node b (:mod:`nas_core.spaces.nb201_partial`), so
every trial, of any stage, is a real architecture: the search's result is the best trial of all under the
``objective`` (validation accuracy, or MnasNet's reward), trained again at the final size; the Monitor draws every
trial on the accuracy-MACs plane, coloured by stage.

Where this departs from the paper, and why:

- When the predicted front holds more or fewer than ``beam`` cells, the fronts are taken in order of
  non-domination and the last one is thinned to its least crowded cells: NSGA-II's rule (Deb et al., 2002).
- The cost is MACs (or params), counted exactly: DPP-Net's device objectives (latency on a phone, memory) are
  measured on the target device, which a search on this machine does not have. Both are additive over the
  cell's edges, so every candidate is costed from one count per (edge, op), not by building it.
- Trials train at the search size with the final training's recipe, as random search and evolution here.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from nas_core.config import ConfigError, ExperimentConfig, ParamSpec
from nas_core.metrics import count_macs, count_params
from nas_core.pareto import pareto_mask, select_by_fronts
from nas_core.spaces.nb201 import EDGE_PAIRS, OPS, NB201Genotype
from nas_core.spaces.nb201_partial import GROWN_NODES, expand, first_stage, tokens
from nas_core.strategies.base import SearchContext, SearchOutcome
from nas_core.strategies.multitrial import (
    MultiTrialStrategy,
    Trial,
    TrialLedger,
    trial_executor,
    trial_size,
)
from nas_core.surrogate import LSTMEnsemble

COSTS: tuple[str, ...] = ("macs", "params")


@dataclass(frozen=True)
class EdgeCosts:
    """MACs and params of NB201 networks as sums over edges: the all-``none`` network plus one term per (edge, op).

    Exact because ops on different edges share no module and thop counts per module (the nodes' sums are not
    counted); tests check it against counting whole networks.
    """

    base: dict[str, int]
    per_edge: list[dict[str, dict[str, int]]]  # [edge][op][cost]

    @classmethod
    def count(
        cls, space: Any, num_classes: int, input_shape: tuple[int, int, int], channels: int, cells: int
    ) -> EdgeCosts:
        """Count the all-``none`` network and one network per (edge, op) at this size."""

        def measure(ops: list[str]) -> dict[str, int]:
            text = space.format(NB201Genotype(tuple(ops)))
            net = space.build_network(text, num_classes, input_shape, channels, cells)
            return {"macs": count_macs(net, input_shape), "params": count_params(net)}

        empty = ["none"] * len(EDGE_PAIRS)
        base = measure(empty)
        per_edge: list[dict[str, dict[str, int]]] = []
        for k in range(len(EDGE_PAIRS)):
            row = {"none": {"macs": 0, "params": 0}}
            for op in OPS[1:]:
                m = measure(empty[:k] + [op] + empty[k + 1 :])
                row[op] = {c: m[c] - base[c] for c in COSTS}
            per_edge.append(row)
        return cls(base, per_edge)

    def of(self, g: NB201Genotype, cost: str) -> int:
        return self.base[cost] + sum(self.per_edge[k][op][cost] for k, op in enumerate(g.ops))


class ProgressiveParetoSearch(MultiTrialStrategy):
    """Cells grown node by node; each stage trains the expansions on the predicted accuracy-cost Pareto front."""

    name = "progressive"
    label = "Pareto-aware progressive search"
    description = (
        "DPP-Net (Dong et al. 2018): grows NB201 cells node by node; each stage predicts the expansions' accuracy "
        "with an LSTM ensemble fitted on the trials so far and trains `beam` of them picked from the Pareto front "
        "of predicted accuracy against MACs (or params)."
    )
    spaces = ("nb201",)
    params = (
        *(s for s in MultiTrialStrategy.common_params if s.name != "trials"),
        ParamSpec("beam", 8, "int", "Cells trained per stage after the first (DPP-Net's and PNAS's K)", 1, 1000),
        ParamSpec(
            "cost",
            "macs",
            "choice",
            "The cost the Pareto selection minimises beside predicted accuracy: macs or params",
            choices=COSTS,
        ),
        ParamSpec("predictors", 5, "int", "LSTM regressors averaged in the accuracy predictor", 1, 20),
    )

    def total_trials(self, p: dict[str, Any]) -> int:
        return len(first_stage()) + (len(GROWN_NODES) - 1) * int(p["beam"])

    def validate(self, config: ExperimentConfig) -> None:
        super().validate(config)
        if config.params["beam"] < 1:
            raise ConfigError("params.beam", "at least one cell per stage")

    def settings_text(self, p: dict[str, Any]) -> str:
        return f"; beam {p['beam']}, cost {p['cost']}, {p['predictors']} LSTM predictor(s)"

    def search(self, ctx: SearchContext) -> SearchOutcome:
        from nas_core.viz_search import rank_correlations  # plotly: loaded here, not by every trial worker

        cfg, p, rep, space = ctx.config, ctx.params, ctx.reporter, ctx.space
        total = self.total_trials(p)
        ledger = TrialLedger(ctx, total)
        stage_of: dict[str, int] = {}  # genotype text -> the stage that trained it
        with trial_executor(ctx) as ex:
            rep.log(
                f"{self.label}: up to {total} trials of {cfg.epochs} epoch(s) each {trial_size(ctx)}, grown node by "
                f"node over {len(GROWN_NODES)} stages, ranked by {ledger.ranked}; {p['workers']} at once on "
                f"{ex.where}{self.settings_text(p)}"
            )
            shape = ctx.data.input_shape
            costs = EdgeCosts.count(space, ctx.data.num_classes, shape, cfg.channels, cfg.cells_per_stage)

            numbers = itertools.count()

            def train(stage: int, cells: list[tuple[NB201Genotype, int | None, float | None]]) -> list[Trial]:
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

            previous = train(1, [(g, None, None) for g in first_stage()])
            predictor = LSTMEnsemble(vocab=len(OPS), members=p["predictors"], seed=cfg.seed)
            for stage, node in enumerate(GROWN_NODES[1:], start=2):
                candidates: dict[str, tuple[NB201Genotype, int]] = {}
                for parent in previous:
                    for g in expand(space.parse(parent.genotype), node):
                        text = space.format(g)
                        if text not in stage_of and text not in candidates:
                            candidates[text] = (g, parent.index)
                if not candidates:
                    rep.log(f"stage {stage}: no new cell to grow; the search ends here")
                    break
                seen = ledger.done
                predictor.fit(
                    [tokens(space.parse(t.genotype), stage_of[t.genotype]) for t in seen], [t.val_acc for t in seen]
                )
                cells = list(candidates.values())
                predicted = predictor.predict([tokens(g, node) for g, _ in cells])
                table = pd.DataFrame({"predicted": predicted, "cost": [costs.of(g, p["cost"]) for g, _ in cells]})
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
