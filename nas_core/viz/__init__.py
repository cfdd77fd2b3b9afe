"""Figures for the dashboard and for notebooks: pandas DataFrame in, plotly Figure out.

One module per figure family, as Optuna's ``visualization`` package: :mod:`~nas_core.viz.pareto`,
:mod:`~nas_core.viz.curves`, :mod:`~nas_core.viz.alphas`, :mod:`~nas_core.viz.cells`,
:mod:`~nas_core.viz.signals`, :mod:`~nas_core.viz.proxies`, :mod:`~nas_core.viz.tables`. Each figure is split
the same way: the public function calls a ``*_info`` function (pure pandas, easy to test) that returns a small
``NamedTuple``, and a private helper of the same module draws it. :data:`FIGURES` lists every figure with its
info function; ``tests/test_viz_contract.py`` renders each on an empty and a tiny frame.

Nothing here imports streamlit or storage; the DataFrames have the columns ``storage.repo`` returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import plotly.graph_objects as go

from nas_core.stats import rank_correlations
from nas_core.viz._utils import PALETTE, PHASE_LABELS, format_duration, format_number
from nas_core.viz.alphas import (
    ALPHA_LINES_TITLE,
    AlphaHeatmapInfo,
    AlphaLinesInfo,
    ParamFreeShareInfo,
    alpha_cells,
    alpha_heatmap,
    alpha_heatmap_info,
    alpha_lines,
    alpha_lines_info,
    alpha_matrix,
    alpha_steps,
    param_free_share,
    param_free_share_df,
    param_free_share_info,
)
from nas_core.viz.cells import NodeTop2Info, collapse_flag, node_top2, node_top2_info, supernet_dot
from nas_core.viz.curves import SPLIT_COLORS, CurvesInfo, curve_data, training_curves, training_curves_info
from nas_core.viz.pareto import (
    AXES,
    ParetoInfo,
    architecture_hover,
    pareto_2d,
    pareto_3d,
    pareto_3d_info,
    pareto_info,
    selected_ids,
)
from nas_core.viz.proxies import (
    PROXIES,
    ProxyScatterInfo,
    missing_proxies,
    proxy_correlations,
    proxy_scatter,
    proxy_scatter_info,
)
from nas_core.viz.signals import (
    PRUNE_COLUMNS,
    SERIES_TITLES,
    SeriesInfo,
    event_table,
    prune_table,
    series_figure,
    series_figure_info,
    series_groups,
    trial_points,
)
from nas_core.viz.tables import (
    TERMINAL,
    ProgressInfo,
    architectures_table,
    experiments_table,
    progress_info,
    search_cost_text,
)


class FigureSpec(NamedTuple):
    """One registered figure: the public function, the ``*_info`` function it draws from, and what that returns."""

    figure: Callable[..., go.Figure]
    info: Callable[..., Any]
    info_type: type


#: Every public function that returns a plotly Figure, by name (timm-style registry for the contract test).
FIGURES: dict[str, FigureSpec] = {
    "pareto_2d": FigureSpec(pareto_2d, pareto_info, ParetoInfo),
    "pareto_3d": FigureSpec(pareto_3d, pareto_3d_info, ParetoInfo),
    "training_curves": FigureSpec(training_curves, training_curves_info, CurvesInfo),
    "alpha_lines": FigureSpec(alpha_lines, alpha_lines_info, AlphaLinesInfo),
    "alpha_heatmap": FigureSpec(alpha_heatmap, alpha_heatmap_info, AlphaHeatmapInfo),
    "param_free_share": FigureSpec(param_free_share, param_free_share_info, ParamFreeShareInfo),
    "node_top2": FigureSpec(node_top2, node_top2_info, NodeTop2Info),
    "series_figure": FigureSpec(series_figure, series_figure_info, SeriesInfo),
    "proxy_scatter": FigureSpec(proxy_scatter, proxy_scatter_info, ProxyScatterInfo),
}

__all__ = [
    "ALPHA_LINES_TITLE",
    "AXES",
    "FIGURES",
    "PALETTE",
    "PHASE_LABELS",
    "PROXIES",
    "PRUNE_COLUMNS",
    "SERIES_TITLES",
    "SPLIT_COLORS",
    "TERMINAL",
    "AlphaHeatmapInfo",
    "AlphaLinesInfo",
    "CurvesInfo",
    "FigureSpec",
    "NodeTop2Info",
    "ParamFreeShareInfo",
    "ParetoInfo",
    "ProgressInfo",
    "ProxyScatterInfo",
    "SeriesInfo",
    "alpha_cells",
    "alpha_heatmap",
    "alpha_heatmap_info",
    "alpha_lines",
    "alpha_lines_info",
    "alpha_matrix",
    "alpha_steps",
    "architecture_hover",
    "architectures_table",
    "collapse_flag",
    "curve_data",
    "event_table",
    "experiments_table",
    "format_duration",
    "format_number",
    "missing_proxies",
    "node_top2",
    "node_top2_info",
    "param_free_share",
    "param_free_share_df",
    "param_free_share_info",
    "pareto_2d",
    "pareto_3d",
    "pareto_3d_info",
    "pareto_info",
    "progress_info",
    "proxy_correlations",
    "proxy_scatter",
    "proxy_scatter_info",
    "prune_table",
    "rank_correlations",
    "search_cost_text",
    "selected_ids",
    "series_figure",
    "series_figure_info",
    "series_groups",
    "supernet_dot",
    "training_curves",
    "training_curves_info",
    "trial_points",
]
