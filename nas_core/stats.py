"""Rank statistics the engine and the figures share (how well a proxy or a predictor orders architectures).

numpy only at import; scipy is loaded on first use, so a trial worker that imports a strategy pays nothing.
No plotting here: :mod:`nas_core.viz` builds on this, not the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def rank_correlations(x: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """Kendall tau (tau-b, ties handled) and Spearman rho of two equal-length sequences; NaN if undefined."""
    from scipy import stats

    xs, ys = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if len(xs) < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan, math.nan
    tau = stats.kendalltau(xs, ys).statistic
    rho = stats.spearmanr(xs, ys).statistic
    return float(tau), float(rho)
