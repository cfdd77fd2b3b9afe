"""Architecture weights over a search: per-edge lines, the heatmap at one step, the parameter-free share.

Each takes the alpha log of ``storage.repo.alphas_df`` (step, cell, edge, op, weight); edges are named
``"node<-input"`` and sorted naturally ("2<-10" after "2<-9").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas_core.viz._utils import PALETTE, empty_figure, format_number, natural_key

ALPHA_LINES_TITLE = "Softmax weight of each op, per edge, over search steps"


def alpha_cells(alphas_df: pd.DataFrame) -> list[str]:
    """Cell types present in the alpha log (NB201: one; DARTS: normal and reduce)."""
    if alphas_df is None or alphas_df.empty:
        return []
    return sorted(alphas_df["cell"].astype(str).unique(), key=natural_key)


def alpha_matrix(
    alphas_df: pd.DataFrame, cell: str | None = None, ops: Sequence[str] | None = None, max_steps: int | None = None
) -> pd.DataFrame:
    """Wide table of one cell's op weights: index step, columns (edge, op) in natural edge / given op order.

    ``max_steps`` thins long runs evenly (always keeping the first and last step) so live charts stay light.
    """
    if alphas_df is None or alphas_df.empty:
        return pd.DataFrame()
    cells = alpha_cells(alphas_df)
    cell = cell if cell is not None else cells[0]
    df = alphas_df[alphas_df["cell"].astype(str) == str(cell)]
    if df.empty:
        return pd.DataFrame()
    wide = df.pivot_table(index="step", columns=["edge", "op"], values="weight", aggfunc="last").sort_index()
    if max_steps and len(wide) > max_steps:
        keep = np.unique(np.linspace(0, len(wide) - 1, max_steps).round().astype(int))
        wide = wide.iloc[keep]
    op_order = list(ops) if ops else list(dict.fromkeys(df["op"]))
    op_order += [o for o in dict.fromkeys(df["op"]) if o not in op_order]
    edges = sorted(df["edge"].astype(str).unique(), key=natural_key)
    columns = [(e, o) for e in edges for o in op_order if (e, o) in wide.columns]
    return wide[columns]


def alpha_steps(alphas_df: pd.DataFrame) -> list[int]:
    """The steps at which weights were recorded, ascending (for the heatmap's step slider)."""
    if alphas_df is None or alphas_df.empty:
        return []
    return sorted(int(s) for s in pd.unique(alphas_df["step"]))


def latest_step(wide: pd.DataFrame, step: int | None) -> Any:
    """The row label of :func:`alpha_matrix` shown for ``step``: the latest recorded at or before it (None = last;
    before the first = the first)."""
    steps = wide.index.to_numpy()
    return steps[-1] if step is None else steps[max(0, int(np.searchsorted(steps, step, side="right")) - 1)]


def _op_colors(ops: Iterable[str]) -> dict[str, str]:
    return {op: PALETTE[i % len(PALETTE)] for i, op in enumerate(ops)}


# ------------------------------------------------------------------------------------------ alpha lines


class AlphaLinesInfo(NamedTuple):
    """What :func:`alpha_lines` draws: one small chart per edge, one line per op."""

    weights: pd.DataFrame  # alpha_matrix, thinned: index step, columns (edge, op); empty when nothing recorded
    edges: list[str]  # in drawing order
    ops: list[str]  # in legend order


def alpha_lines_info(
    alphas_df: pd.DataFrame, cell: str | None = None, ops: Sequence[str] | None = None, max_steps: int = 400
) -> AlphaLinesInfo:
    """One cell's weights over steps (at most ``max_steps`` of them), with its edges and ops in order."""
    wide = alpha_matrix(alphas_df, cell, ops, max_steps)
    edges = list(dict.fromkeys(e for e, _ in wide.columns)) if not wide.empty else []
    op_order = list(dict.fromkeys(o for _, o in wide.columns)) if not wide.empty else []
    return AlphaLinesInfo(wide, edges, op_order)


def alpha_lines(
    alphas_df: pd.DataFrame,
    cell: str | None = None,
    ops: Sequence[str] | None = None,
    max_steps: int = 400,
    cols: int = 3,
) -> go.Figure:
    """One small chart per edge: the softmax weight of each op against the search step."""
    info = alpha_lines_info(alphas_df, cell, ops, max_steps)
    if info.weights.empty:
        return empty_figure("No architecture weights recorded yet", "Alpha evolution")
    return _draw_alpha_lines(info, cols)


def _draw_alpha_lines(info: AlphaLinesInfo, cols: int) -> go.Figure:
    wide, edges, op_order = info
    colors = _op_colors(op_order)
    rows = math.ceil(len(edges) / cols)
    fig = make_subplots(rows=rows, cols=min(cols, len(edges)), subplot_titles=[f"edge {e}" for e in edges],
                        shared_xaxes=True, vertical_spacing=0.12 if rows > 1 else 0.0)  # fmt: skip
    for k, edge in enumerate(edges):
        r, c = divmod(k, cols)
        for op in op_order:
            if (edge, op) not in wide.columns:
                continue
            fig.add_trace(
                go.Scatter(
                    x=wide.index,
                    y=wide[(edge, op)],
                    mode="lines",
                    name=op,
                    legendgroup=op,
                    showlegend=k == 0,
                    line={"color": colors[op], "width": 1.8},
                    hovertemplate=f"edge {edge}<br>{op}<br>step %{{x}}<br>weight %{{y:.3f}}<extra></extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
    # One y scale for all edges, fitted to the data: early in a search the weights move by hundredths.
    # Ticks with enough digits to tell apart weights that differ in the fourth decimal.
    span = float(np.nanmax(wide.to_numpy()) - np.nanmin(wide.to_numpy())) if wide.size else 1.0
    digits = min(5, max(2, 1 - math.floor(math.log10(span)))) if span > 0 else 3
    fig.update_yaxes(matches="y", tickformat=f".{digits}f")
    fig.update_xaxes(title_text="step", row=rows)
    fig.update_layout(title=ALPHA_LINES_TITLE, height=230 * rows + 100, margin={"t": 70, "l": 10, "r": 10, "b": 10},
                      legend={"orientation": "h", "y": -0.12})  # fmt: skip
    return fig


# ---------------------------------------------------------------------------------------- alpha heatmap


class AlphaHeatmapInfo(NamedTuple):
    """What :func:`alpha_heatmap` draws: edge x op weights at one recorded step."""

    step: int | None  # the recorded step shown; None when nothing was recorded
    edges: list[str]  # rows, in natural order
    ops: list[str]  # columns
    weights: list[list[float]]  # edges x ops, NaN where an op was not recorded on an edge


def alpha_heatmap_info(
    alphas_df: pd.DataFrame, step: int | None = None, cell: str | None = None, ops: Sequence[str] | None = None
) -> AlphaHeatmapInfo:
    """The weights of the latest recorded step at or before ``step`` (None = the last one)."""
    wide = alpha_matrix(alphas_df, cell, ops)
    if wide.empty:
        return AlphaHeatmapInfo(None, [], [], [])
    at = latest_step(wide, step)
    row = wide.loc[at]
    edges = list(dict.fromkeys(e for e, _ in wide.columns))
    op_order = list(dict.fromkeys(o for _, o in wide.columns))
    z = [[float(row.get((e, o), np.nan)) for o in op_order] for e in edges]
    return AlphaHeatmapInfo(int(at), edges, op_order, z)


def alpha_heatmap(
    alphas_df: pd.DataFrame, step: int | None = None, cell: str | None = None, ops: Sequence[str] | None = None
) -> go.Figure:
    """Edge x op softmax weights at one step (the latest recorded step at or before ``step``; None = last)."""
    info = alpha_heatmap_info(alphas_df, step, cell, ops)
    if info.step is None:
        return empty_figure("No architecture weights recorded yet", "Alpha heatmap")
    return _draw_alpha_heatmap(info)


def _draw_alpha_heatmap(info: AlphaHeatmapInfo) -> go.Figure:
    z = info.weights
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=info.ops,
            y=[f"edge {e}" for e in info.edges],
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=[[format_number(v, ".2f") for v in r] for r in z],
            texttemplate="%{text}",
            hovertemplate="%{y}<br>%{x}<br>weight %{z:.3f}<extra></extra>",
            colorbar={"title": {"text": "weight"}},
        )
    )
    fig.update_layout(title=f"Softmax weights at step {info.step}", height=80 + 45 * len(info.edges),
                      yaxis={"autorange": "reversed"}, margin={"t": 50, "l": 10, "r": 10, "b": 10})  # fmt: skip
    return fig


# ------------------------------------------------------------------------------------ parameter-free share


def param_free_share_df(alphas_df: pd.DataFrame, param_free_ops: Iterable[str]) -> pd.DataFrame:
    """Per step and cell, the weight each parameter-free op holds, as a share of the edge total, mean over edges.

    Columns: step, cell, op, share. Summing ``share`` over ops gives the cell's parameter-free share.
    """
    cols = ["step", "cell", "op", "share"]
    if alphas_df is None or alphas_df.empty:
        return pd.DataFrame(columns=cols)
    df = alphas_df[["step", "cell", "edge", "op", "weight"]].copy()
    df["weight"] = pd.to_numeric(df["weight"], errors="coerce")
    total = df.groupby(["step", "cell", "edge"])["weight"].transform("sum")
    df["share"] = df["weight"] / total.where(total > 0)
    pf = df[df["op"].isin(set(param_free_ops))]
    if pf.empty:
        return pd.DataFrame(columns=cols)
    n_edges = df.groupby(["step", "cell"])["edge"].nunique().rename("n_edges")
    out = pf.groupby(["step", "cell", "op"], as_index=False)["share"].sum().join(n_edges, on=["step", "cell"])
    out["share"] = out["share"] / out["n_edges"]
    return out[cols].sort_values(["cell", "step", "op"]).reset_index(drop=True)


class ParamFreeShareInfo(NamedTuple):
    """What :func:`param_free_share` draws: one stacked panel per cell, one band per parameter-free op."""

    shares: pd.DataFrame  # param_free_share_df: step, cell, op, share
    cells: list[str]  # panels, in natural order
    ops: list[str]  # sorted; their colours


def param_free_share_info(alphas_df: pd.DataFrame, param_free_ops: Iterable[str]) -> ParamFreeShareInfo:
    """:func:`param_free_share_df` with the cells and ops it holds."""
    data = param_free_share_df(alphas_df, param_free_ops)
    if data.empty:
        return ParamFreeShareInfo(data, [], [])
    cells = sorted(data["cell"].astype(str).unique(), key=natural_key)
    return ParamFreeShareInfo(data, cells, sorted(data["op"].unique()))


def param_free_share(alphas_df: pd.DataFrame, param_free_ops: Iterable[str]) -> go.Figure:
    """Stacked share of weight on parameter-free ops over steps: a rising stack is the DARTS collapse."""
    info = param_free_share_info(alphas_df, param_free_ops)
    if info.shares.empty:
        return empty_figure("No weights on parameter-free ops recorded yet", "Parameter-free share")
    return _draw_param_free_share(info)


def _draw_param_free_share(info: ParamFreeShareInfo) -> go.Figure:
    data, cells = info.shares, info.cells
    colors = _op_colors(info.ops)
    fig = make_subplots(rows=1, cols=len(cells), subplot_titles=[f"{c} cell" for c in cells], shared_yaxes=True)
    for k, cell in enumerate(cells):
        sub = data[data["cell"].astype(str) == cell]
        for op, series in sub.groupby("op", sort=True):
            fig.add_trace(
                go.Scatter(
                    x=series["step"], y=series["share"], mode="lines", stackgroup=f"cell{k}",
                    name=op, legendgroup=op, showlegend=k == 0,
                    line={"color": colors[op], "width": 1},
                    hovertemplate=f"{cell} cell<br>{op}<br>step %{{x}}<br>share %{{y:.1%}}<extra></extra>",
                ),
                row=1,
                col=k + 1,
            )
    fig.add_hline(y=0.5, line={"dash": "dot", "color": "gray"})
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_xaxes(title_text="step")
    fig.update_layout(title="Share of weight on parameter-free ops (mean over edges)", height=300,
                      margin={"t": 60, "l": 10, "r": 10, "b": 10})  # fmt: skip
    return fig
