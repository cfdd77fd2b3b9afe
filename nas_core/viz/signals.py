"""What a search records besides alphas: named series (tau, entropy, beta, kappa ...) and events (pruning
rounds, shrinking, multi-trial candidates), from ``storage.repo.series_df`` and ``events_df``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nas_core.viz._utils import empty_figure, natural_key

#: How each series group is titled and what its y axis means; unknown groups get their own name.
SERIES_TITLES: dict[str, tuple[str, str]] = {
    "tau": ("Gumbel-softmax temperature tau", "tau"),
    "entropy": ("Entropy of the sampling distribution (nats, mean over edges)", "entropy"),
    "beta": ("Edge-normalisation weights (softmax of beta over each node's inputs)", "weight"),
    "kappa": ("NTK condition number of the remaining supernet (lower = more trainable)", "kappa"),
    "regions": ("Linear regions of the remaining supernet (higher = more expressive)", "regions"),
    "ops": ("Ops left in the supernet", "ops"),
    "seconds": ("Wall time", "s"),
}
PRUNE_COLUMNS = [
    "round", "stage", "cell", "edge", "op", "d_kappa", "d_regions", "kappa_rank", "regions_rank", "rank_sum",
]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# named series


def series_groups(series_df: pd.DataFrame) -> list[str]:
    """Chart names in first-recorded order: the part of each series name before its first '/'."""
    if series_df is None or series_df.empty:
        return []
    return list(dict.fromkeys(str(n).split("/", 1)[0] for n in series_df["name"]))


class SeriesInfo(NamedTuple):
    """What :func:`series_figure` draws: the series of one group."""

    group: str
    title: str
    y_label: str
    series: pd.DataFrame  # the group's rows (name, step, value); empty when none
    n_recorded: int  # rows recorded for all groups: 0 means nothing yet, else no series of this group
    log_y: bool  # kappa, all positive: on a log axis


def series_figure_info(series_df: pd.DataFrame, group: str) -> SeriesInfo:
    """The rows of ``group``: the series named ``group`` and those named ``group/...``."""
    title, y_label = SERIES_TITLES.get(group, (group, group))
    if series_df is None or series_df.empty:
        return SeriesInfo(group, title, y_label, pd.DataFrame(columns=["name", "step", "value"]), 0, False)
    names = series_df["name"].astype(str)
    df = series_df[(names == group) | names.str.startswith(group + "/")]
    log_y = bool(group == "kappa" and (df["value"].dropna() > 0).all() and len(df))
    return SeriesInfo(group, title, y_label, df, len(series_df), log_y)


def series_figure(series_df: pd.DataFrame, group: str, x_label: str = "step") -> go.Figure:
    """One line per series of ``group`` over steps (``beta/normal/2<-0`` is line ``normal/2<-0`` of ``beta``)."""
    info = series_figure_info(series_df, group)
    if not info.n_recorded:
        return empty_figure("Nothing recorded yet.", info.title)
    if info.series.empty:
        return empty_figure(f"No series named {group!r}.", info.title)
    return _draw_series(info, x_label)


def _draw_series(info: SeriesInfo, x_label: str) -> go.Figure:
    df = info.series
    fig = go.Figure()
    for name in sorted(df["name"].unique(), key=natural_key):
        part = df[df["name"] == name].sort_values("step")
        line = name.split("/", 1)[1] if "/" in name else name
        hover = f"{line}<br>{x_label} %{{x}}<br>%{{y:.4g}}<extra></extra>"
        mode = "lines+markers" if len(part) < 30 else "lines"
        fig.add_trace(go.Scatter(x=part["step"], y=part["value"], mode=mode, name=line, hovertemplate=hover))
    lines = df["name"].nunique()
    fig.update_layout(title=info.title, xaxis_title=x_label, yaxis_title=info.y_label,
                      height=320 if lines <= 8 else 420, margin={"t": 50, "b": 40, "l": 50, "r": 10},
                      showlegend=lines > 1)  # fmt: skip
    if info.log_y:
        fig.update_yaxes(type="log")
    return fig


# --------------------------------------------------------------------------------------------------
# events: TE-NAS pruning rounds, shrinking, multi-trial candidates


def prune_table(events_df: pd.DataFrame) -> pd.DataFrame:
    """One row per pruned op: round, edge, op, its relative kappa and region changes, and both ranks.

    ``stage`` (ops, then edges) and ``cell`` (normal, reduce) are kept only when the run recorded them
    (TE-NAS on the DARTS space); an NB201 run has one cell and one stage.
    """
    if events_df is None or events_df.empty:
        return pd.DataFrame(columns=PRUNE_COLUMNS)
    rows = [d for k, d in zip(events_df["kind"], events_df["data"]) if k == "prune" and isinstance(d, dict)]
    df = pd.DataFrame.from_records(rows)
    for col in PRUNE_COLUMNS:
        if col not in df:
            df[col] = np.nan
    cols = [c for c in PRUNE_COLUMNS if c not in ("stage", "cell") or df[c].notna().any()]
    return df[cols].reset_index(drop=True)


def event_table(events_df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Records of one kind as a flat table (nested dicts become ``outer.inner`` columns), with their step."""
    if events_df is None or events_df.empty:
        return pd.DataFrame()
    part = events_df[events_df["kind"] == kind]
    if part.empty:
        return pd.DataFrame()
    flat = pd.json_normalize([d if isinstance(d, dict) else {} for d in part["data"]])
    for col in flat.columns:  # lists (vanished blocks ...) read better as text in a table cell
        if flat[col].map(lambda v: isinstance(v, list)).any():
            flat[col] = flat[col].map(lambda v: ", ".join(map(str, v)) if isinstance(v, list) else v)
    flat.insert(0, "step", part["step"].to_numpy())
    return flat.reset_index(drop=True)


def trial_points(trials: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Multi-trial candidates as architecture rows for :func:`nas_core.viz.pareto_2d`, and its cost axis.

    ``trials`` is :func:`event_table` of the ``trial`` events (``step`` = trial index). Validation accuracy
    goes on the accuracy axis; the cost axis is MACs, or params for trials recorded before MACs were (a search
    that timed its trials also has ``latency_ms``, which the caller may put on that axis instead).
    Each point is labelled by how it was proposed (a random draw or a mutant; progressive search: its stage),
    which colours the chart.
    """
    missing = pd.Series(np.nan, index=trials.index)  # columns that trials recorded before them lack
    df = pd.DataFrame(
        {
            "id": trials["step"].astype(int),
            "accuracy": pd.to_numeric(trials["val_acc"], errors="coerce"),
            "params": pd.to_numeric(trials.get("params"), errors="coerce"),
            "macs": pd.to_numeric(trials.get("macs", missing), errors="coerce"),
            "latency_ms": pd.to_numeric(trials.get("latency_ms", missing), errors="coerce"),
            "genotype": trials.get("genotype"),
            "accuracy_kind": "val",
        }
    )
    parent = pd.to_numeric(trials.get("parent", missing), errors="coerce")
    stage = pd.to_numeric(trials.get("stage", missing), errors="coerce")
    if stage.notna().any():  # progressive search: the stage (cell size) it was trained at; parent = the cell it grows
        df["origin"] = [f"stage {int(s)}" for s in stage.fillna(0)]
        grows = ["" if pd.isna(p) else f", grows trial {int(p)}" for p in parent]
        df["experiment_name"] = [f"{o}{g}" for o, g in zip(df["origin"], grows)]
    else:
        df["origin"] = np.where(parent.isna(), "random draw", "mutant")
        df["experiment_name"] = ["trial" if pd.isna(p) else f"trial, mutant of {int(p)}" for p in parent]
    df["strategy"] = df["origin"]
    x = "macs" if df["macs"].notna().any() else "params"
    return df, x
