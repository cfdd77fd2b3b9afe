"""Figures of what a search does besides alphas: named series, pruning rounds, the shrinking supernet, proxies.

Data first, drawing second, as :mod:`nas_core.viz`: each function takes the DataFrames of
``storage.repo`` (``series_df``, ``events_df``, ``alphas_df``, ``architectures_df``) and returns a pandas
frame, a DOT string or a Plotly figure. No streamlit, no storage.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas_core.viz import _empty_figure, _natural_key, format_duration

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
PROXIES = {"ntk_cond": "NTK condition number", "linear_regions": "linear regions"}


# --------------------------------------------------------------------------------------------------
# named series


def series_groups(series_df: pd.DataFrame) -> list[str]:
    """Chart names in first-recorded order: the part of each series name before its first '/'."""
    if series_df is None or series_df.empty:
        return []
    return list(dict.fromkeys(str(n).split("/", 1)[0] for n in series_df["name"]))


def series_figure(series_df: pd.DataFrame, group: str, x_label: str = "step") -> go.Figure:
    """One line per series of ``group`` over steps (``beta/normal/2<-0`` is line ``normal/2<-0`` of ``beta``)."""
    title, y_label = SERIES_TITLES.get(group, (group, group))
    if series_df is None or series_df.empty:
        return _empty_figure("Nothing recorded yet.", title)
    names = series_df["name"].astype(str)
    df = series_df[(names == group) | names.str.startswith(group + "/")]
    if df.empty:
        return _empty_figure(f"No series named {group!r}.", title)
    fig = go.Figure()
    for name in sorted(df["name"].unique(), key=_natural_key):
        part = df[df["name"] == name].sort_values("step")
        line = name.split("/", 1)[1] if "/" in name else name
        hover = f"{line}<br>{x_label} %{{x}}<br>%{{y:.4g}}<extra></extra>"
        mode = "lines+markers" if len(part) < 30 else "lines"
        fig.add_trace(go.Scatter(x=part["step"], y=part["value"], mode=mode, name=line, hovertemplate=hover))
    lines = df["name"].nunique()
    fig.update_layout(title=title, xaxis_title=x_label, yaxis_title=y_label, height=320 if lines <= 8 else 420,
                      margin={"t": 50, "b": 40, "l": 50, "r": 10}, showlegend=lines > 1)  # fmt: skip
    if group == "kappa" and (df["value"].dropna() > 0).all() and len(df):
        fig.update_yaxes(type="log")
    return fig


# --------------------------------------------------------------------------------------------------
# TE-NAS pruning rounds


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


def _edge_nodes(edge: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"\s*(\w+)\s*<-\s*(\w+)\s*", str(edge))
    return (m.group(1), m.group(2)) if m else None


def supernet_dot(alphas_df: pd.DataFrame, step: int | None = None, cell: str | None = None,
                 input_labels: dict[str, str] | None = None) -> str:  # fmt: skip
    """DOT of the supernet at ``step``: every edge labelled with the ops still alive on it (weight > 0).

    Pruning strategies (TE-NAS) record pruned ops with weight 0, so this draws the supernet shrinking
    round by round; edges are named ``target<-source``.
    """
    empty = 'digraph { label="no supernet recorded"; }'
    if alphas_df is None or alphas_df.empty:
        return empty
    df = alphas_df if cell is None else alphas_df[alphas_df["cell"] == cell]
    if df.empty:
        return empty
    step = int(df["step"].max()) if step is None else int(step)
    df = df[(df["step"] == step) & (df["weight"] > 0)]
    labels = input_labels or {}
    lines = ["digraph {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb"];']
    nodes: list[str] = []
    edges: list[str] = []
    for edge, part in df.groupby("edge", sort=False):
        pair = _edge_nodes(str(edge))
        if pair is None:
            continue
        dst, src = pair
        for n in (src, dst):
            if n not in nodes:
                nodes.append(n)
        ops = "\\n".join(str(o) for o in part.sort_values("weight", ascending=False)["op"])
        width = 1.0 + 1.5 / max(1, len(part))
        edges.append(f'  "{src}" -> "{dst}" [label="{ops}", penwidth={width:.2f}, fontsize=10];')
    for n in sorted(nodes, key=_natural_key):
        lines.append(f'  "{n}" [label="{labels.get(n, n)}"];')
    lines += edges
    lines.append("}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# proxies versus accuracy


def rank_correlations(x: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """Kendall tau (tau-b, ties handled) and Spearman rho of two equal-length sequences; NaN if undefined."""
    from scipy import stats

    xs, ys = np.asarray(list(x), dtype=float), np.asarray(list(y), dtype=float)
    if len(xs) < 2 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return math.nan, math.nan
    tau = stats.kendalltau(xs, ys).statistic
    rho = stats.spearmanr(xs, ys).statistic
    return float(tau), float(rho)


def proxy_correlations(arch_df: pd.DataFrame) -> pd.DataFrame:
    """Per proxy, over architectures that have both it and an accuracy: n, Kendall tau, Spearman rho."""
    rows = []
    for col, label in PROXIES.items():
        if arch_df is None or arch_df.empty or col not in arch_df:
            rows.append({"proxy": label, "n": 0, "kendall_tau": math.nan, "spearman_rho": math.nan})
            continue
        both = arch_df[["accuracy", col]].apply(pd.to_numeric, errors="coerce").dropna()
        tau, rho = rank_correlations(both[col], both["accuracy"])
        rows.append({"proxy": label, "n": len(both), "kendall_tau": tau, "spearman_rho": rho})
    return pd.DataFrame(rows, columns=["proxy", "n", "kendall_tau", "spearman_rho"])


def _fmt_corr(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.3f}"


def proxy_scatter(arch_df: pd.DataFrame, color_by: str = "experiment_name") -> go.Figure:
    """Accuracy against each proxy (NTK condition number on a log axis), with tau and rho in the titles."""
    title = "Training-free proxies against accuracy"
    if arch_df is None or arch_df.empty:
        return _empty_figure("No architectures.", title)
    corr = proxy_correlations(arch_df).set_index("proxy")
    subtitles = [
        f"{label}: Kendall tau {_fmt_corr(corr.loc[label, 'kendall_tau'])}, "
        f"Spearman rho {_fmt_corr(corr.loc[label, 'spearman_rho'])} (n={int(corr.loc[label, 'n'])})"
        for label in PROXIES.values()
    ]
    fig = make_subplots(rows=1, cols=2, subplot_titles=subtitles, horizontal_spacing=0.1)
    groups = arch_df[color_by].fillna("").astype(str) if color_by in arch_df else pd.Series("", index=arch_df.index)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for gi, group in enumerate(sorted(groups.unique(), key=_natural_key)):
        part = arch_df[groups == group]
        for ci, col in enumerate(PROXIES, start=1):
            both = part[pd.to_numeric(part[col], errors="coerce").notna() & part["accuracy"].notna()]
            if both.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=both[col], y=both["accuracy"] * 100, mode="markers", name=group or "architectures",
                    legendgroup=group, showlegend=ci == 1, marker={"color": palette[gi % len(palette)], "size": 9},
                    customdata=np.stack([both["id"].astype(int), both["genotype"].astype(str)], axis=-1),
                    hovertemplate="#%{customdata[0]}<br>%{customdata[1]}<br>" + PROXIES[col]
                    + " %{x:.4g}<br>accuracy %{y:.2f} %<extra></extra>",
                ),  # fmt: skip
                row=1, col=ci,
            )  # fmt: skip
    fig.update_xaxes(title_text="NTK condition number (log)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="linear regions", row=1, col=2)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_layout(title=title, height=420, margin={"t": 80, "b": 40, "l": 50, "r": 10})
    if not fig.data:
        fig.add_annotation(text="No architecture has both a proxy and an accuracy yet.", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)  # fmt: skip
    return fig


def missing_proxies(arch_df: pd.DataFrame, spaces: Iterable[str] = ("nb201",)) -> list[int]:
    """Ids of architectures of supported spaces that have no proxies yet (what a proxy run would compute)."""
    if arch_df is None or arch_df.empty:
        return []
    ok = arch_df["space"].isin(list(spaces)) & (arch_df["ntk_cond"].isna() | arch_df["linear_regions"].isna())
    return [int(i) for i in arch_df.loc[ok, "id"]]


def search_cost_text(exp: dict[str, Any]) -> str:
    """'search 2 min 3 s, final training 40 s, on <device>' from an experiment row; '' when unknown."""
    parts = []
    for key, label in (("search_seconds", "search"), ("train_seconds", "final training")):
        value = exp.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(f"{label} {format_duration(float(value))}")
    if not parts:
        return ""
    device = exp.get("device")
    return ", ".join(parts) + (f", on {device}" if device else "")
