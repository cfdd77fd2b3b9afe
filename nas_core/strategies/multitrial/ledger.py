"""The finished trials of a search: scored under the objective (accuracy, MnasNet's reward, Pareto fronts),
reported, and ranked alike for every multi-trial strategy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nas_core.pareto import crowding_distance, nondominated_ranks, pareto_mask
from nas_core.strategies.base import SearchContext, SearchOutcome
from nas_core.strategies.multitrial.trial import Trial, TrialScore

#: what trials can be ranked by (the ``objective`` parameter)
OBJECTIVES: tuple[str, ...] = ("accuracy", "mnas", "pareto")


#: the two objectives of ``objective=pareto`` and of the front every search reports
TRIAL_OBJECTIVES: list[tuple[str, str]] = [("val_acc", "max"), ("macs", "min")]


def mnas_reward(acc: float, macs: float, target: float, alpha: float, beta: float) -> float:
    """MnasNet's multi-objective reward ACC x (cost / T)^w, w = ``alpha`` at or under the target, ``beta`` over it.

    Tan et al. (CVPR 2019): alpha = beta = -0.07 is the soft constraint (a 2x costlier network must be about
    5% more accurate to score the same); alpha = 0, beta = -1 the hard one. The paper's cost is measured
    latency on a phone; here it is MACs, which every trial counts exactly and which do not drift with the
    machine's load.
    """
    if target <= 0:
        raise ValueError("the MACs target must be > 0")
    ratio = macs / target
    return acc * ratio ** (alpha if ratio <= 1 else beta)


class TrialLedger:
    """The finished trials of one search: scores each under the objective, reports it, keeps the best.

    Every multi-trial strategy lands its trials here, so they all log, chart and rank trials alike.
    """

    def __init__(self, ctx: SearchContext, total: int) -> None:
        self.ctx, self.total = ctx, max(1, total)
        p = ctx.params
        self.mnas = p["objective"] == "mnas"
        self.ranked = {
            "mnas": f"MnasNet's reward (target {p['target_mmacs']:g} M MACs, w = {p['mnas_alpha']:g} under, "
            f"{p['mnas_beta']:g} over)",
            "pareto": "validation accuracy and MACs (Pareto fronts; the pick: the front's most accurate)",
        }.get(p["objective"], "validation accuracy")
        self.done: list[Trial] = []
        self.best: Trial | None = None

    def land(
        self, index: int, genotype: str, result: TrialScore, parent: int | None, how: str,
        extra: dict[str, Any] | None = None,
    ) -> Trial:  # fmt: skip
        """Record one finished trial: log line, series, ``trial`` event (with ``extra``), progress; check cancel."""
        ctx, p, rep = self.ctx, self.ctx.params, self.ctx.reporter
        acc, params, secs, macs, latency = result
        score = None
        if self.mnas:
            score = mnas_reward(acc, macs, p["target_mmacs"] * 1e6, p["mnas_alpha"], p["mnas_beta"])
        trial = Trial(index, genotype, acc, params, secs, parent, macs, score)
        self.done.append(trial)
        if self.best is None or self._better(trial, self.best):
            self.best = trial
            rep.genotype(len(self.done), len(self.done), genotype)
        scored = f", reward {score:.4f}" if score is not None else ""
        timed = f", {latency:.3f} ms" if latency is not None else ""
        rep.log(f"trial {index} ({how}): val acc {acc:.4f}{scored}, {params:,} params, "
                f"{macs / 1e6:.2f} M MACs{timed}, {secs:.1f} s: {genotype}")  # fmt: skip
        points = {"trial/val_acc": acc, "best/val_acc": self.best.val_acc}
        if score is not None:
            points |= {"trial/reward": score, "best/reward": self.best.fitness}
        rep.series(len(self.done), len(self.done), points)
        data = {"genotype": genotype, "val_acc": acc, "params": params, "macs": macs, "seconds": secs,
                "parent": parent, **(extra or {})}  # fmt: skip
        data |= {"reward": score} if score is not None else {}
        rep.event("trial", index, data | ({"latency_ms": latency} if latency is not None else {}))
        ctx.report_progress(len(self.done) / self.total, min(ctx.config.epochs, len(self.done)))
        ctx.check_stop()
        return trial

    def _better(self, a: Trial, b: Trial) -> bool:
        """Whether ``a`` ranks above ``b``; under objective=pareto equal accuracy goes to fewer MACs (the front)."""
        if self.ctx.params["objective"] == "pareto" and a.fitness == b.fitness:
            return a.macs < b.macs
        return a.fitness > b.fitness

    def outcome(self, extra: dict[str, Any] | None = None) -> SearchOutcome:
        """The best trial as the search's result (trained again at the final size by the pipeline)."""
        best, p = self.best, self.ctx.params
        assert best is not None
        self.ctx.reporter.log(f"best of {len(self.done)} trials by {self.ranked}: trial {best.index}, val acc "
                              f"{best.val_acc:.4f}, {best.macs / 1e6:.2f} M MACs")  # fmt: skip
        front = measured_front(self.done)
        self.ctx.reporter.log(f"Pareto front of all trials (val acc against MACs): trials {', '.join(map(str, front))}")
        out: dict[str, Any] = {"trials": len(self.done), "best_trial": best.index, "objective": p["objective"],
                               "front": front}  # fmt: skip
        if best.score is not None:
            out["reward"] = best.score
        return SearchOutcome(best.genotype, best.val_acc, "trial-val", out | (extra or {}))


def trial_table(trials: list[Trial]) -> pd.DataFrame:
    """Validation accuracy and MACs of ``trials``, one row each, for the Pareto functions."""
    return pd.DataFrame({"val_acc": [t.val_acc for t in trials], "macs": [t.macs for t in trials]})


def pareto_keys(trials: list[Trial]) -> list[tuple[int, float]]:
    """NSGA-II's order of ``trials`` as (-front number, crowding distance within its front): larger is better."""
    table = trial_table(trials)
    ranks = nondominated_ranks(table, TRIAL_OBJECTIVES)
    crowd = np.zeros(len(trials))
    for front in np.unique(ranks):
        members = np.flatnonzero(ranks == front)
        crowd[members] = crowding_distance(table.iloc[members], TRIAL_OBJECTIVES)
    return [(-int(r), float(c)) for r, c in zip(ranks, crowd)]


def measured_front(done: list[Trial]) -> list[int]:
    """Trial indices on the Pareto front of measured validation accuracy against MACs."""
    mask = pareto_mask(trial_table(done), TRIAL_OBJECTIVES)
    return sorted(t.index for t, on in zip(done, mask) if on)
