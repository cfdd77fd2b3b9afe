"""Figures for the dashboard and for notebooks: pandas DataFrame in, plotly Figure out.

Each chart is split the way Optuna's ``visualization/_pareto_front.py`` is: a small data-preparation
function (pure pandas, easy to test) and a drawing function that only turns its result into traces.
Nothing here imports streamlit or storage; the DataFrames have the columns storage.repo returns.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas_core.pareto import pareto_front_order, pareto_mask

PALETTE: tuple[str, ...] = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52",
)  # fmt: skip
SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e"}
PHASE_LABELS = {"search": "search", "train": "final training", "done": "measuring and exporting"}

#: Column -> (axis label, scale factor applied for display, goal on the Pareto front).
AXES: dict[str, tuple[str, float, str]] = {
    "accuracy": ("Accuracy (%)", 100.0, "max"),
    "macs": ("MACs (M)", 1e-6, "min"),
    "latency_ms": ("Latency (ms)", 1.0, "min"),
    "params": ("Params (M)", 1e-6, "min"),
}


def _empty_figure(message: str, title: str = "") -> go.Figure:
    """A figure that says why it is empty, instead of blank axes."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14})
    fig.update_layout(title=title or None, xaxis={"visible": False}, yaxis={"visible": False}, height=300)
    return fig


def _natural_key(text: Any) -> list[Any]:
    """Sort "2<-10" after "2<-9": edge and cell names carry numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def format_number(value: Any, spec: str, suffix: str = "", scale: float = 1.0) -> str:
    """``value * scale`` formatted, or an en dash when missing (None, NaN, not a number)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(v):
        return "–"
    return f"{v * scale:{spec}}{suffix}"


# --------------------------------------------------------------------------------------------- Pareto


class ParetoInfo(NamedTuple):
    """What a Pareto chart draws: one row per plotted architecture, plus the front's joining order."""

    points: pd.DataFrame  # id, group, x, y[, z], on_front, hover (display units)
    front_order: np.ndarray  # positions in ``points`` of the front, in drawing order (2-D only)
    axes: tuple[str, ...]  # columns on x, y[, z]
    labels: tuple[str, ...]  # axis titles
    color_by: str
    n_missing: int  # architectures left out because an axis value is missing


def architecture_hover(row: Mapping[str, Any]) -> str:
    """Hover text for one architecture: who found it, its figures, and its genotype (wrapped)."""
    genotype = html.escape(str(row.get("genotype") or ""), quote=False)
    genotype = genotype.replace("+", "+<br>") if len(genotype) > 60 else genotype
    kind = html.escape(str(row.get("accuracy_kind") or ""), quote=False)
    name, strategy = (html.escape(str(row.get(k) or ""), quote=False) for k in ("experiment_name", "strategy"))
    lines = [
        f"<b>#{row.get('id')}</b> {name} ({strategy})",
        f"accuracy {format_number(row.get('accuracy'), '.2f', '%', 100.0)}" + (f" ({kind})" if kind else ""),
        f"MACs {format_number(row.get('macs'), '.2f', ' M', 1e-6)}"
        f" · params {format_number(row.get('params'), '.3f', ' M', 1e-6)}",
        f"latency {format_number(row.get('latency_ms'), '.2f', ' ms')}",
        f"<span style='font-family:monospace'>{genotype}</span>",
    ]
    return "<br>".join(lines)


def pareto_info(
    arch_df: pd.DataFrame,
    x: str = "macs",
    y: str = "accuracy",
    z: str | None = None,
    color_by: str = "experiment_name",
) -> ParetoInfo:
    """Prepare a Pareto chart: drop rows missing an axis, mark the non-dominated ones, order the front."""
    axes = (x, y) if z is None else (x, y, z)
    for col in axes:
        if col not in AXES:
            raise ValueError(f"unknown axis {col!r}; choose one of {', '.join(AXES)}")
    df = arch_df.copy()
    for col in (*axes, "id"):
        if col not in df.columns:
            df[col] = np.nan
    numeric = df[list(axes)].apply(pd.to_numeric, errors="coerce")
    complete = numeric.notna().all(axis=1).to_numpy()
    df, numeric = df[complete].reset_index(drop=True), numeric[complete].reset_index(drop=True)
    objectives = [(col, AXES[col][2]) for col in axes]
    mask = pareto_mask(numeric, objectives)
    order = pareto_front_order(numeric, objectives, sort_by=x, mask=mask) if z is None else np.flatnonzero(mask)
    group = _group_labels(df, color_by)
    points = pd.DataFrame(
        {
            "id": df["id"].to_numpy(),
            "group": group.to_numpy(),
            **{name: numeric[col].to_numpy(dtype=float) * AXES[col][1] for name, col in zip("xyz", axes)},
            "on_front": mask,
            "hover": [architecture_hover(r) for r in df.to_dict("records")],
        }
    )
    labels = tuple(AXES[col][0] for col in axes)
    return ParetoInfo(points, order, axes, labels, color_by, int((~complete).sum()))


def _group_labels(df: pd.DataFrame, color_by: str) -> pd.Series:
    """Legend label per row; experiments are labelled "#id name" because names are optional and not unique."""
    if color_by not in df.columns:
        return pd.Series([""] * len(df), index=df.index)
    labels = df[color_by].fillna("").astype(str)
    if color_by == "experiment_name" and "experiment_id" in df.columns:
        labels = ("#" + df["experiment_id"].astype(str) + " " + labels).str.strip()
    return labels


def _group_colors(groups: Iterable[str]) -> dict[str, str]:
    """Stable colours per group (sorted), so the 2-D and 3-D charts agree."""
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(sorted(set(groups), key=_natural_key))}


def _customdata(ids: pd.Series) -> list[Any]:
    return [int(v) if isinstance(v, (int, np.integer, float)) and not pd.isna(v) else v for v in ids]


def pareto_2d(
    arch_df: pd.DataFrame, x: str = "macs", color_by: str = "experiment_name", y: str = "accuracy"
) -> go.Figure:
    """Accuracy against cost; non-dominated points drawn as large outlined diamonds joined by a staircase.

    ``customdata`` of every marker is the architecture id, so a chart selection maps back to rows.
    """
    info = pareto_info(arch_df, x=x, y=y, color_by=color_by)
    title = f"{info.labels[1].split(' (')[0]} vs {info.labels[0]}"
    if info.points.empty:
        return _empty_figure(f"No architectures with {info.labels[0]} and {info.labels[1]} yet", title)
    return _draw_pareto_2d(info, title)


def _draw_pareto_2d(info: ParetoInfo, title: str) -> go.Figure:
    pts = info.points
    colors = _group_colors(pts["group"])
    fig = go.Figure()
    for group, sub in pts.groupby("group", sort=False):
        front = sub["on_front"].to_numpy()
        fig.add_trace(
            go.Scatter(
                x=sub["x"],
                y=sub["y"],
                mode="markers",
                name=str(group) or "(unnamed)",
                customdata=_customdata(sub["id"]),
                hovertext=sub["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
                marker={
                    "color": colors[group],
                    "size": np.where(front, 14, 8),
                    "symbol": np.where(front, "diamond", "circle"),
                    "opacity": np.where(front, 1.0, 0.55),
                    "line": {"color": np.where(front, "#222", colors[group]), "width": np.where(front, 1.5, 0)},
                },
            )
        )
    front = pts.iloc[info.front_order]
    fig.add_trace(
        go.Scatter(
            x=front["x"],
            y=front["y"],
            mode="lines",
            name=f"Pareto front ({len(front)})",
            line={"color": "rgba(40,40,40,0.7)", "dash": "dash", "shape": "hv", "width": 1.5},
            hoverinfo="skip",
        )
    )
    n_missing = f"; {info.n_missing} with a missing value left out" if info.n_missing else ""
    fig.update_layout(
        title=f"{title}: {len(pts)} architectures, {len(front)} non-dominated{n_missing}",
        xaxis_title=info.labels[0],
        yaxis_title=info.labels[1],
        legend_title_text=info.color_by.replace("_", " "),
        hovermode="closest",
        margin={"t": 60, "l": 10, "r": 10, "b": 10},
    )
    return fig


def selected_ids(points: Iterable[Mapping[str, Any]], fig: go.Figure | None = None) -> list[int]:
    """Architecture ids of points selected on a chart (Streamlit's ``selection.points``), in selection order.

    Uses each point's ``customdata``; when the front end left it out, looks it up in ``fig`` by curve and
    point index. Points of traces without ids (the front line) are ignored.
    """
    out: list[int] = []
    for p in points or []:
        cd = p.get("customdata")
        if cd is None and fig is not None:
            curve, idx = p.get("curve_number"), p.get("point_index", p.get("point_number"))
            if curve is not None and idx is not None and curve < len(fig.data):
                data = fig.data[curve].customdata
                cd = data[idx] if data is not None and idx < len(data) else None
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        try:
            value = int(cd)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if value not in out:
            out.append(value)
    return out


def pareto_3d(arch_df: pd.DataFrame, color_by: str = "experiment_name") -> go.Figure:
    """Accuracy, MACs and latency together; the 3-objective front drawn as large diamonds."""
    info = pareto_info(arch_df, x="macs", y="latency_ms", z="accuracy", color_by=color_by)
    if info.points.empty:
        return _empty_figure("No architectures with accuracy, MACs and latency yet", "Accuracy, MACs, latency")
    pts = info.points
    colors = _group_colors(pts["group"])
    fig = go.Figure()
    for group, sub in pts.groupby("group", sort=False):
        front = sub["on_front"].to_numpy()
        fig.add_trace(
            go.Scatter3d(
                x=sub["x"],
                y=sub["y"],
                z=sub["z"],
                mode="markers",
                name=str(group) or "(unnamed)",
                customdata=_customdata(sub["id"]),
                hovertext=sub["hover"],
                hovertemplate="%{hovertext}<extra></extra>",
                marker={
                    "color": colors[group],
                    "size": np.where(front, 9, 4),
                    "symbol": np.where(front, "diamond", "circle"),
                    "line": {"color": "#222", "width": 1},
                    "opacity": 0.9,
                },
            )
        )
    fig.update_layout(
        title=f"Accuracy, MACs, latency: {int(pts['on_front'].sum())} of {len(pts)} non-dominated",
        scene={"xaxis_title": info.labels[0], "yaxis_title": info.labels[1], "zaxis_title": info.labels[2]},
        legend_title_text=info.color_by.replace("_", " "),
        margin={"t": 60, "l": 0, "r": 0, "b": 0},
        height=560,
    )
    return fig


# --------------------------------------------------------------------------------------- training curves

_CURVE_METRICS = {"train_loss": ("loss", "train"), "val_loss": ("loss", "val"),
                  "train_acc": ("accuracy", "train"), "val_acc": ("accuracy", "val")}  # fmt: skip


def curve_data(epochs_df: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """Long-format curves on one x axis: search epochs first, final-training epochs after them.

    Returns (rows with phase, epoch, x, metric, split, value; x where final training starts or None).
    """
    cols = ["phase", "epoch", "x", "metric", "split", "value"]
    if epochs_df is None or epochs_df.empty:
        return pd.DataFrame(columns=cols), None
    df = epochs_df.copy()
    df["epoch"] = pd.to_numeric(df["epoch"], errors="coerce")
    df = df.sort_values(["epoch"], kind="stable")
    parts, offset, boundary = [], 0, None
    for phase in ["search", "train", *sorted(set(df["phase"]) - {"search", "train"})]:
        sub = df[df["phase"] == phase].drop_duplicates("epoch", keep="last").reset_index(drop=True)
        if sub.empty:
            continue
        if phase == "train" and offset:
            boundary = offset + 0.5
        sub["x"] = np.arange(1, len(sub) + 1) + offset
        offset += len(sub)
        for col, (metric, split) in _CURVE_METRICS.items():
            if col in sub.columns:
                vals = pd.to_numeric(sub[col], errors="coerce")
                parts.append(pd.DataFrame({"phase": phase, "epoch": sub["epoch"], "x": sub["x"], "metric": metric,
                                           "split": split, "value": vals}))  # fmt: skip
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    return out.dropna(subset=["value"]).reset_index(drop=True), boundary


def training_curves(epochs_df: pd.DataFrame) -> go.Figure:
    """Loss and accuracy per epoch, train vs validation, with the search and final-training phases marked."""
    data, boundary = curve_data(epochs_df)
    if data.empty:
        return _empty_figure("No epoch finished yet", "Training curves")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    for (phase, split), sub in data.groupby(["phase", "split"], sort=False):
        label = f"{PHASE_LABELS.get(phase, phase)} · {split}"
        for col, metric in ((1, "loss"), (2, "accuracy")):
            series = sub[sub["metric"] == metric]
            if series.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=series["x"],
                    y=series["value"],
                    customdata=series["epoch"],
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=col == 1 or sub[sub["metric"] == "loss"].empty,
                    line={"color": SPLIT_COLORS.get(split), "dash": "solid" if phase == "search" else "dot"},
                    hovertemplate=f"{label}<br>epoch %{{customdata}}<br>{metric} %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    if boundary is not None:
        for col in (1, 2):
            fig.add_vline(x=boundary, line={"dash": "dash", "color": "gray"}, row=1, col=col)
        fig.add_annotation(x=boundary, y=1.0, yref="y2 domain", xref="x2", text="final training →",
                           showarrow=False, xanchor="left", font={"color": "gray"})  # fmt: skip
    fig.update_xaxes(title_text="epoch (search, then final training)", dtick=1 if data["x"].max() <= 20 else None)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=340, margin={"t": 40, "l": 10, "r": 10, "b": 10}, legend={"orientation": "h", "y": -0.25})
    return fig


# -------------------------------------------------------------------------------------------------- alphas


def alpha_cells(alphas_df: pd.DataFrame) -> list[str]:
    """Cell types present in the alpha log (NB201: one; DARTS: normal and reduce)."""
    if alphas_df is None or alphas_df.empty:
        return []
    return sorted(alphas_df["cell"].astype(str).unique(), key=_natural_key)


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
    edges = sorted(df["edge"].astype(str).unique(), key=_natural_key)
    columns = [(e, o) for e in edges for o in op_order if (e, o) in wide.columns]
    return wide[columns]


ALPHA_LINES_TITLE = "Softmax weight of each op, per edge, over search steps"


def _op_colors(ops: Iterable[str]) -> dict[str, str]:
    return {op: PALETTE[i % len(PALETTE)] for i, op in enumerate(ops)}


def alpha_lines(
    alphas_df: pd.DataFrame,
    cell: str | None = None,
    ops: Sequence[str] | None = None,
    max_steps: int = 400,
    cols: int = 3,
) -> go.Figure:
    """One small chart per edge: the softmax weight of each op against the search step."""
    wide = alpha_matrix(alphas_df, cell, ops, max_steps)
    if wide.empty:
        return _empty_figure("No architecture weights recorded yet", "Alpha evolution")
    edges = list(dict.fromkeys(e for e, _ in wide.columns))
    op_order = list(dict.fromkeys(o for _, o in wide.columns))
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


def alpha_steps(alphas_df: pd.DataFrame) -> list[int]:
    """The steps at which weights were recorded, ascending (for the heatmap's step slider)."""
    if alphas_df is None or alphas_df.empty:
        return []
    return sorted(int(s) for s in pd.unique(alphas_df["step"]))


def alpha_heatmap(
    alphas_df: pd.DataFrame, step: int | None = None, cell: str | None = None, ops: Sequence[str] | None = None
) -> go.Figure:
    """Edge x op softmax weights at one step (the latest recorded step at or before ``step``; None = last)."""
    wide = alpha_matrix(alphas_df, cell, ops)
    if wide.empty:
        return _empty_figure("No architecture weights recorded yet", "Alpha heatmap")
    steps = wide.index.to_numpy()
    at = steps[-1] if step is None else steps[max(0, int(np.searchsorted(steps, step, side="right")) - 1)]
    row = wide.loc[at]
    edges = list(dict.fromkeys(e for e, _ in wide.columns))
    op_order = list(dict.fromkeys(o for _, o in wide.columns))
    z = [[float(row.get((e, o), np.nan)) for o in op_order] for e in edges]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=op_order,
            y=[f"edge {e}" for e in edges],
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=[[format_number(v, ".2f") for v in r] for r in z],
            texttemplate="%{text}",
            hovertemplate="%{y}<br>%{x}<br>weight %{z:.3f}<extra></extra>",
            colorbar={"title": {"text": "weight"}},
        )
    )
    fig.update_layout(title=f"Softmax weights at step {int(at)}", height=80 + 45 * len(edges),
                      yaxis={"autorange": "reversed"}, margin={"t": 50, "l": 10, "r": 10, "b": 10})  # fmt: skip
    return fig


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


def param_free_share(alphas_df: pd.DataFrame, param_free_ops: Iterable[str]) -> go.Figure:
    """Stacked share of weight on parameter-free ops over steps: a rising stack is the DARTS collapse."""
    data = param_free_share_df(alphas_df, param_free_ops)
    if data.empty:
        return _empty_figure("No weights on parameter-free ops recorded yet", "Parameter-free share")
    cells = sorted(data["cell"].astype(str).unique(), key=_natural_key)
    colors = _op_colors(sorted(data["op"].unique()))
    fig = make_subplots(rows=1, cols=len(cells), subplot_titles=[f"{c} cell" for c in cells], shared_yaxes=True)
    for k, cell in enumerate(cells):
        sub = data[data["cell"].astype(str) == cell]
        for op, series in sub.groupby("op", sort=True):
            fig.add_trace(
                go.Scatter(
                    x=series["step"],
                    y=series["share"],
                    mode="lines",
                    stackgroup=f"cell{k}",
                    name=op,
                    legendgroup=op,
                    showlegend=k == 0,
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


def collapse_flag(genotype_str: str, space: Any, threshold: float = 0.5) -> str | None:
    """A warning when parameter-free ops take more than ``threshold`` of the derived cell's edges, else None.

    ``space`` is a SearchSpace (or its registered name); ops are read from the genotype text, so any
    space's format works as long as op names appear in it.
    """
    if not genotype_str:
        return None
    if isinstance(space, str):
        from nas_core.spaces import get_space

        space = get_space(space)
    known = set(space.ops)
    found = [tok for tok in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(genotype_str)) if tok in known]
    if not found:
        return None
    free = [op for op in found if op in set(space.param_free_ops)]
    if len(free) / len(found) <= threshold:
        return None
    counts = ", ".join(f"{op} ×{free.count(op)}" for op in dict.fromkeys(free))
    return (
        f"Parameter-free ops hold {len(free)} of {len(found)} edges of the derived cell ({counts}). "
        "That is the pattern of the performance collapse reported for bi-level DARTS (which Single-DARTS "
        "addresses); early in a short run it may also mean the weights have not separated yet."
    )


# -------------------------------------------------------------------------------------- progress and tables

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")


def format_duration(seconds: float | None) -> str:
    """Short human duration: "45 s", "3 min 05 s", "1 h 02 min"."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)) or seconds < 0:
        return "–"
    s = round(float(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _utc(ts: Any) -> pd.Timestamp | None:
    """Timestamps from storage as UTC (naive ones are taken to be UTC)."""
    if ts is None or (not isinstance(ts, str) and pd.isna(ts)):
        return None
    try:
        t = pd.Timestamp(ts)
    except (TypeError, ValueError):
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


class ProgressInfo(NamedTuple):
    """What the Monitor page's progress bar shows."""

    fraction: float  # 0..1, for st.progress
    text: str
    elapsed_s: float | None
    eta_s: float | None


def progress_info(exp: Mapping[str, Any], now: datetime | None = None) -> ProgressInfo:
    """Progress fraction, a one-line description (phase, epoch, ETA) and timings, from an experiment row.

    The ETA extrapolates the elapsed time linearly in the reported fraction; it is shown only once the
    job is past 2 % so the first noisy seconds do not promise nonsense.
    """
    status = str(exp.get("status") or "")
    try:
        fraction = float(exp.get("progress") or 0.0)
    except (TypeError, ValueError):
        fraction = 0.0
    fraction = 0.0 if math.isnan(fraction) else min(max(fraction, 0.0), 1.0)
    started, finished = _utc(exp.get("started_at")), _utc(exp.get("finished_at"))
    now_ts = _utc(now) if now is not None else pd.Timestamp.now(tz="UTC")
    elapsed = None
    if started is not None:
        elapsed = max(0.0, ((finished or now_ts) - started).total_seconds())
    elif exp.get("duration_s") is not None and not pd.isna(exp.get("duration_s")):
        elapsed = float(exp["duration_s"])
    if status == "succeeded":
        return ProgressInfo(1.0, f"finished in {format_duration(elapsed)}", elapsed, 0.0)
    if status == "queued":
        return ProgressInfo(0.0, "queued, waiting for a worker", None, None)
    if status in TERMINAL:
        return ProgressInfo(fraction, f"{status} at {fraction:.0%} after {format_duration(elapsed)}", elapsed, None)
    phase = PHASE_LABELS.get(str(exp.get("phase") or ""), str(exp.get("phase") or "starting"))
    parts = [phase]
    epoch, total = exp.get("epoch"), exp.get("total_epochs")
    if total is not None and not pd.isna(total) and int(total) > 0 and epoch is not None and not pd.isna(epoch):
        parts.append(f"epoch {int(epoch)}/{int(total)}")
    parts.append(f"{fraction:.0%}")
    eta = elapsed * (1.0 - fraction) / fraction if elapsed is not None and fraction > 0.02 else None
    parts.append(f"ETA {format_duration(eta)}" if eta is not None else "ETA estimating…")
    return ProgressInfo(fraction, " · ".join(parts), elapsed, eta)


def _float_or_none(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def experiments_table(experiments: pd.DataFrame) -> pd.DataFrame:
    """The Overview table: display units (% accuracy, M MACs, text durations), newest first.

    ``state`` says what an unfinished run is doing (phase, epoch, ETA); ``strategy`` reads "strategy / space".
    """
    cols = ["id", "name", "status", "progress", "state", "strategy", "dataset", "accuracy (%)",
            "MACs (M)", "latency (ms)", "started", "duration", "search cost", "device"]  # fmt: skip
    if experiments is None or experiments.empty:
        return pd.DataFrame(columns=cols)
    df = experiments.sort_values("id", ascending=False)
    now = pd.Timestamp.now(tz="UTC")
    infos = [progress_info(r, now) for r in df.to_dict("records")]
    out = pd.DataFrame(
        {
            "id": df["id"].astype(int),
            "name": df["name"].fillna(""),
            "status": df["status"],
            "progress": pd.to_numeric(df["progress"], errors="coerce").fillna(0.0).clip(0, 1),
            "state": ["" if s == "succeeded" else i.text for s, i in zip(df["status"], infos)],
            "strategy": df["strategy"].astype(str) + " / " + df["space"].astype(str),
            "dataset": df["dataset"],
            "accuracy (%)": pd.to_numeric(df["best_accuracy"], errors="coerce") * 100,
            "MACs (M)": pd.to_numeric(df["macs"], errors="coerce") / 1e6,
            "latency (ms)": pd.to_numeric(df["latency_ms"], errors="coerce"),
            "started": [t.tz_convert(None) if t is not None else pd.NaT for t in map(_utc, df["started_at"])],
            "duration": [format_duration(i.elapsed_s) for i in infos],
            "search cost": [format_duration(_float_or_none(v)) for v in df.get("search_seconds", [None] * len(df))],
            "device": df.get("device", pd.Series([None] * len(df), index=df.index)).fillna(""),
        }
    )
    return out.reset_index(drop=True)


def architectures_table(arch_df: pd.DataFrame) -> pd.DataFrame:
    """Side-by-side metrics of selected architectures, in display units."""
    if arch_df is None or arch_df.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "id": arch_df["id"].astype(int),
            "experiment": arch_df["experiment_name"].fillna(""),
            "strategy": arch_df["strategy"],
            "accuracy (%)": pd.to_numeric(arch_df["accuracy"], errors="coerce") * 100,
            "accuracy kind": arch_df["accuracy_kind"],
            "MACs (M)": pd.to_numeric(arch_df["macs"], errors="coerce") / 1e6,
            "params (M)": pd.to_numeric(arch_df["params"], errors="coerce") / 1e6,
            "latency (ms)": pd.to_numeric(arch_df["latency_ms"], errors="coerce"),
            "NTK cond": pd.to_numeric(arch_df.get("ntk_cond", math.nan), errors="coerce"),
            "linear regions": pd.to_numeric(arch_df.get("linear_regions", math.nan), errors="coerce"),
            "origin": arch_df["origin"],
            "genotype": arch_df["genotype"],
        }
    ).reset_index(drop=True)


def node_top2(alphas_df: pd.DataFrame, step: int | None, cell: str | None, space: Any) -> go.Figure:
    """Per intermediate node, each incoming edge's best non-``none`` weight; the top-2 kept edges highlighted.

    The DARTS derivation rule made visible: a node keeps the 2 incoming edges whose strongest non-``none``
    op weighs most (bar text names that op). ``step`` picks the latest recorded step at or before it
    (None = the last); ``cell`` the cell type (None = the first). Edges are named ``"node<-input"``.
    """
    title = "Per-node incoming edges (top 2 kept)"
    wide = alpha_matrix(alphas_df, cell, getattr(space, "ops", None))
    if wide.empty:
        return _empty_figure("No architecture weights recorded yet", title)
    steps = wide.index.to_numpy()
    at = steps[-1] if step is None else steps[max(0, int(np.searchsorted(steps, step, side="right")) - 1)]
    row = wide.loc[at]
    ops = [o for o in dict.fromkeys(o for _, o in wide.columns) if o != "none"]
    nodes: dict[str, list[tuple[str, str, float]]] = {}
    for edge in dict.fromkeys(e for e, _ in wide.columns):
        vals = [(o, float(row.get((edge, o), np.nan))) for o in ops]
        vals = [(o, v) for o, v in vals if not math.isnan(v)]
        if not vals:
            continue
        best_op, best = max(vals, key=lambda t: t[1])
        nodes.setdefault(str(edge).split("<-")[0], []).append((str(edge), best_op, best))
    if not nodes:
        return _empty_figure("No non-none op weights recorded", title)
    names = sorted(nodes, key=_natural_key)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"node {n}" for n in names], shared_yaxes=True)
    for col, node in enumerate(names, start=1):
        edges = nodes[node]
        ranked = sorted(range(len(edges)), key=lambda i: -edges[i][2])  # stable: ties keep edge order
        kept = set(ranked[:2])
        fig.add_trace(
            go.Bar(
                x=[e for e, _, _ in edges],
                y=[v for _, _, v in edges],
                text=[op for _, op, _ in edges],
                textposition="auto",
                marker={
                    "color": ["#1f77b4" if i in kept else "#c7c7c7" for i in range(len(edges))],
                    "line": {"color": ["#0b3d66" if i in kept else "#c7c7c7" for i in range(len(edges))], "width": 1},
                },
                customdata=["kept" if i in kept else "dropped" for i in range(len(edges))],
                hovertemplate="edge %{x}<br>best op %{text}<br>weight %{y:.3f}<br>%{customdata}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=col,
        )
    label = f" ({cell})" if cell else ""
    fig.update_layout(title=f"{title}{label}, step {int(at)}", height=320, margin={"t": 70, "l": 10, "r": 10, "b": 10})
    fig.update_yaxes(title_text="best non-none weight", row=1, col=1)
    return fig
