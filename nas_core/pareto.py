"""Pareto fronts over architectures (accuracy up, MACs and latency down), for the Compare page and notebooks.

Pure numpy/pandas. Exact duplicates of a non-dominated point are all kept on the front (two experiments
that found the same cell should both be highlighted), and rows with a missing objective never are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

Objective = tuple[str, str]  # (column, "max" | "min")


def _minimisation_matrix(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """Objective values as floats, negated where larger is better, so "smaller is better" everywhere."""
    if not objectives:
        raise ValueError("at least one objective is needed")
    cols = []
    for column, goal in objectives:
        if goal not in ("max", "min"):
            raise ValueError(f"objective {column!r}: goal must be 'max' or 'min', got {goal!r}")
        if column not in df.columns:
            raise KeyError(f"objective column {column!r} is not in the data frame")
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        cols.append(-values if goal == "max" else values)
    return np.column_stack(cols) if cols else np.empty((len(df), 0))


def _dominated_by(values: np.ndarray, rows: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Per row of ``values``, how many of ``rows`` dominate it (all <=, one <), in chunks of ``chunk`` rows so
    memory stays at chunk x n whatever the number of candidates."""
    out = np.zeros(len(values), dtype=int)
    for start in range(0, len(rows), chunk):
        a = values[rows[start : start + chunk]][:, None, :]
        b = values[None, :, :]
        out += (np.all(a <= b, axis=2) & np.any(a < b, axis=2)).sum(axis=0)
    return out


def pareto_mask(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """Boolean mask (positional, len(df)) of the non-dominated rows.

    A row is dominated when another row is at least as good on every objective and strictly better on
    one. Identical rows do not dominate each other, so duplicates of a front point are all on the front.
    Rows with NaN (or non-numeric) values in any objective are never on the front.
    """
    values = _minimisation_matrix(df, objectives)
    mask = np.zeros(len(df), dtype=bool)
    valid = np.flatnonzero(~np.isnan(values).any(axis=1))
    if len(valid):
        mask[valid] = _dominated_by(values[valid], np.arange(len(valid))) == 0
    return mask


def pareto_front_order(
    df: pd.DataFrame,
    objectives: Sequence[Objective],
    sort_by: str | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Positions of the front rows in the order a line should join them (a staircase, not a zigzag).

    Sorted ascending by ``sort_by`` (default: the second objective, the x axis of a 2-D chart), ties
    broken by the remaining objectives in their better direction. ``mask`` may pass a precomputed
    :func:`pareto_mask`.
    """
    if mask is None:
        mask = pareto_mask(df, objectives)
    positions = np.flatnonzero(mask)
    if len(positions) == 0:
        return positions
    if sort_by is None:
        sort_by = objectives[1][0] if len(objectives) > 1 else objectives[0][0]
    values = _minimisation_matrix(df.iloc[positions], objectives)
    primary = pd.to_numeric(df[sort_by].iloc[positions], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    # np.lexsort sorts by the last key first.
    keys = [values[:, k] for k in reversed(range(values.shape[1]))] + [primary]
    return positions[np.lexsort(keys)]


def nondominated_ranks(df: pd.DataFrame, objectives: Sequence[Objective], stop_after: int | None = None) -> np.ndarray:
    """Front number per row (0 = the Pareto front, 1 = the front once front 0 is removed, ...): NSGA-II's sort.

    Rows with a missing objective come after every front (rank = the number of fronts). ``stop_after``: once
    that many rows are ranked, the rest get the next rank (enough to fill a selection of that size).
    """
    values = _minimisation_matrix(df, objectives)
    ranks = np.full(len(df), -1, dtype=int)
    valid = np.flatnonzero(~np.isnan(values).any(axis=1))
    v = values[valid]
    count = _dominated_by(v, np.arange(len(v)))  # how many rows dominate each row
    left = np.ones(len(v), dtype=bool)
    front, ranked = 0, 0
    while left.any() and (stop_after is None or ranked < stop_after):
        members = np.flatnonzero(left & (count == 0))
        ranks[valid[members]] = front
        left[members] = False
        count -= _dominated_by(v, members)
        front, ranked = front + 1, ranked + len(members)
    ranks[ranks < 0] = front
    return ranks


def crowding_distance(df: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """NSGA-II's crowding distance of each row within ``df`` (one front): the extremes of each objective get
    infinity, the others the sum over objectives of the normalised gap between their two neighbours."""
    values = _minimisation_matrix(df, objectives)
    n = len(values)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(values.shape[1]):
        order = np.argsort(values[:, k], kind="stable")
        col = values[order, k]
        span = col[-1] - col[0]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def select_by_fronts(df: pd.DataFrame, objectives: Sequence[Objective], k: int) -> np.ndarray:
    """Positions of ``k`` rows picked as NSGA-II does: whole fronts in order, the last one that does not fit
    thinned to the least crowded rows (ties: the earlier row). Fewer rows than ``k``: all of them."""
    if k >= len(df):
        return np.arange(len(df))
    ranks = nondominated_ranks(df, objectives, stop_after=k)
    picked: list[int] = []
    for front in range(int(ranks.max()) + 1):
        members = np.flatnonzero(ranks == front)
        if len(picked) + len(members) <= k:
            picked.extend(members.tolist())
            continue
        dist = crowding_distance(df.iloc[members], objectives)
        order = np.lexsort((members, -dist))  # most isolated first
        picked.extend(members[order[: k - len(picked)]].tolist())
        break
    return np.array(sorted(picked), dtype=int)


def hypervolume_2d(df: pd.DataFrame, objectives: Sequence[Objective], reference: Sequence[float]) -> float:
    """Area dominated by the rows and bounded by ``reference`` (one value per objective, worse than every row):
    the usual one-number quality of a 2-objective front, larger is better. Rows not better than the reference
    on both objectives add nothing."""
    if len(objectives) != 2 or len(reference) != 2:
        raise ValueError("hypervolume_2d takes exactly two objectives and a two-value reference point")
    values = _minimisation_matrix(df, objectives)
    ref = np.array([-r if goal == "max" else r for r, (_, goal) in zip(reference, objectives)], dtype=float)
    pts = values[~np.isnan(values).any(axis=1)]
    pts = pts[(pts < ref).all(axis=1)]
    area, best_second = 0.0, ref[1]
    for first, second in pts[np.lexsort((pts[:, 1], pts[:, 0]))]:  # sweep along the first objective
        if second < best_second:
            area += (ref[0] - first) * (best_second - second)
            best_second = second
    return float(area)
