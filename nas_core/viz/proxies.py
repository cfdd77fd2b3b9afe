"""Training-free proxies against accuracy: rank correlations, the scatter, what is still to compute.

Reads ``storage.repo.architectures_df`` rows (``ntk_cond``, ``linear_regions``, ``accuracy``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas_core.stats import rank_correlations
from nas_core.viz._utils import empty_figure, natural_key

PROXIES = {"ntk_cond": "NTK condition number", "linear_regions": "linear regions"}
PROXY_SCATTER_TITLE = "Training-free proxies against accuracy"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


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


class ProxyScatterInfo(NamedTuple):
    """What :func:`proxy_scatter` draws: a panel per proxy, a colour per group."""

    correlations: pd.DataFrame  # proxy_correlations, indexed by proxy label
    groups: list[str]  # every group, in natural order (a group's colour is its position here)
    points: list[tuple[str, str, pd.DataFrame]]  # (group, proxy column, its rows with that proxy and an accuracy)
    n_architectures: int


def proxy_scatter_info(arch_df: pd.DataFrame, color_by: str = "experiment_name") -> ProxyScatterInfo:
    """Correlations and, per group and proxy, the architectures that have both the proxy and an accuracy."""
    corr = proxy_correlations(arch_df).set_index("proxy")
    if arch_df is None or arch_df.empty:
        return ProxyScatterInfo(corr, [], [], 0)
    groups = arch_df[color_by].fillna("").astype(str) if color_by in arch_df else pd.Series("", index=arch_df.index)
    names = sorted(groups.unique(), key=natural_key)
    points = []
    for group in names:
        part = arch_df[groups == group]
        for col in PROXIES:
            both = part[pd.to_numeric(part[col], errors="coerce").notna() & part["accuracy"].notna()]
            if not both.empty:
                points.append((group, col, both))
    return ProxyScatterInfo(corr, names, points, len(arch_df))


def proxy_scatter(arch_df: pd.DataFrame, color_by: str = "experiment_name") -> go.Figure:
    """Accuracy against each proxy (NTK condition number on a log axis), with tau and rho in the titles."""
    info = proxy_scatter_info(arch_df, color_by)
    if not info.n_architectures:
        return empty_figure("No architectures.", PROXY_SCATTER_TITLE)
    return _draw_proxy_scatter(info)


def _draw_proxy_scatter(info: ProxyScatterInfo) -> go.Figure:
    corr = info.correlations
    subtitles = [
        f"{label}: Kendall tau {_fmt_corr(corr.loc[label, 'kendall_tau'])}, "
        f"Spearman rho {_fmt_corr(corr.loc[label, 'spearman_rho'])} (n={int(corr.loc[label, 'n'])})"
        for label in PROXIES.values()
    ]
    fig = make_subplots(rows=1, cols=2, subplot_titles=subtitles, horizontal_spacing=0.1)
    columns = list(PROXIES)
    for group, col, both in info.points:
        gi, ci = info.groups.index(group), columns.index(col) + 1
        fig.add_trace(
            go.Scatter(
                x=both[col], y=both["accuracy"] * 100, mode="markers", name=group or "architectures",
                legendgroup=group, showlegend=ci == 1, marker={"color": _PALETTE[gi % len(_PALETTE)], "size": 9},
                customdata=np.stack([both["id"].astype(int), both["genotype"].astype(str)], axis=-1),
                hovertemplate="#%{customdata[0]}<br>%{customdata[1]}<br>" + PROXIES[col]
                + " %{x:.4g}<br>accuracy %{y:.2f} %<extra></extra>",
            ),  # fmt: skip
            row=1, col=ci,
        )  # fmt: skip
    fig.update_xaxes(title_text="NTK condition number (log)", type="log", row=1, col=1)
    fig.update_xaxes(title_text="linear regions", row=1, col=2)
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    fig.update_layout(title=PROXY_SCATTER_TITLE, height=420, margin={"t": 80, "b": 40, "l": 50, "r": 10})
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
