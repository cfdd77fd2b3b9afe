"""Pareto charts: accuracy against cost in 2-D, or against MACs and latency in 3-D, the front highlighted.

The split every figure of :mod:`nas_core.viz` follows, after Optuna's ``visualization/_pareto_front.py``: the
public function calls a ``*_info`` function (pure pandas, easy to test) that returns a small ``NamedTuple``,
and a private drawing helper turns that into traces.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nas_core.pareto import pareto_front_order, pareto_mask
from nas_core.viz._utils import PALETTE, empty_figure, format_number, natural_key

#: Column -> (axis label, scale factor applied for display, goal on the Pareto front).
AXES: dict[str, tuple[str, float, str]] = {
    "accuracy": ("Accuracy (%)", 100.0, "max"),
    "macs": ("MACs (M)", 1e-6, "min"),
    "latency_ms": ("Latency (ms)", 1.0, "min"),
    "params": ("Params (M)", 1e-6, "min"),
}


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


def pareto_3d_info(arch_df: pd.DataFrame, color_by: str = "experiment_name") -> ParetoInfo:
    """:func:`pareto_info` on the axes of :func:`pareto_3d`: MACs, latency and accuracy."""
    return pareto_info(arch_df, x="macs", y="latency_ms", z="accuracy", color_by=color_by)


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
    return {g: PALETTE[i % len(PALETTE)] for i, g in enumerate(sorted(set(groups), key=natural_key))}


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
        return empty_figure(f"No architectures with {info.labels[0]} and {info.labels[1]} yet", title)
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
    info = pareto_3d_info(arch_df, color_by=color_by)
    if info.points.empty:
        return empty_figure("No architectures with accuracy, MACs and latency yet", "Accuracy, MACs, latency")
    return _draw_pareto_3d(info)


def _draw_pareto_3d(info: ParetoInfo) -> go.Figure:
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
