"""What the figure modules of :mod:`nas_core.viz` share: colours, phase names, the empty figure, number formats.

A private module (nothing outside the package imports it), so its helpers have public names: a sibling module
imports ``empty_figure``, never another module's ``_private`` name.
"""

from __future__ import annotations

import math
import re
from typing import Any

import plotly.graph_objects as go

PALETTE: tuple[str, ...] = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52",
)  # fmt: skip
PHASE_LABELS = {"search": "search", "train": "final training", "done": "measuring and exporting"}


def empty_figure(message: str, title: str = "") -> go.Figure:
    """A figure that says why it is empty, instead of blank axes."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14})
    fig.update_layout(title=title or None, xaxis={"visible": False}, yaxis={"visible": False}, height=300)
    return fig


def natural_key(text: Any) -> list[Any]:
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
