"""Training curves: loss and accuracy per epoch, train against validation, search then final training."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas_core.viz._utils import PHASE_LABELS, empty_figure

SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e"}

_CURVE_METRICS = {"train_loss": ("loss", "train"), "val_loss": ("loss", "val"),
                  "train_acc": ("accuracy", "train"), "val_acc": ("accuracy", "val")}  # fmt: skip


class CurvesInfo(NamedTuple):
    """What :func:`training_curves` draws."""

    data: pd.DataFrame  # long format: phase, epoch, x, metric, split, value
    boundary: float | None  # x where final training starts, or None


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


def training_curves_info(epochs_df: pd.DataFrame) -> CurvesInfo:
    """:func:`curve_data` as a :class:`CurvesInfo`."""
    return CurvesInfo(*curve_data(epochs_df))


def training_curves(epochs_df: pd.DataFrame) -> go.Figure:
    """Loss and accuracy per epoch, train vs validation, with the search and final-training phases marked."""
    info = training_curves_info(epochs_df)
    if info.data.empty:
        return empty_figure("No epoch finished yet", "Training curves")
    return _draw_training_curves(info)


def _draw_training_curves(info: CurvesInfo) -> go.Figure:
    data, boundary = info
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    for (phase, split), sub in data.groupby(["phase", "split"], sort=False):
        label = f"{PHASE_LABELS.get(phase, phase)} · {split}"
        for col, metric in ((1, "loss"), (2, "accuracy")):
            series = sub[sub["metric"] == metric]
            if series.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=series["x"], y=series["value"], customdata=series["epoch"], mode="lines+markers",
                    name=label, legendgroup=label,
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
