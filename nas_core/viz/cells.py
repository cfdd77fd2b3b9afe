"""The cell a search derives: the per-node top-2 rule, the supernet as it shrinks, the collapse warning.

Edges are named ``"node<-input"`` (``target<-source``), as in the alpha log of ``storage.repo.alphas_df``.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nas_core.spaces import get_space
from nas_core.viz._utils import empty_figure, natural_key
from nas_core.viz.alphas import alpha_matrix, latest_step

NODE_TOP2_TITLE = "Per-node incoming edges (top 2 kept)"


class NodeTop2Info(NamedTuple):
    """What :func:`node_top2` draws: per intermediate node, its incoming edges and which two it keeps."""

    step: int | None  # the recorded step shown; None when no weights were recorded
    cell: str | None  # as asked (None = the first cell)
    nodes: dict[str, list[tuple[str, str, float]]]  # node -> (edge, best non-none op, its weight), natural order
    kept: dict[str, frozenset[int]]  # node -> positions in ``nodes[node]`` of the two edges kept


def node_top2_info(alphas_df: pd.DataFrame, step: int | None, cell: str | None, space: Any) -> NodeTop2Info:
    """Apply the DARTS derivation rule at the latest recorded step at or before ``step`` (None = the last)."""
    wide = alpha_matrix(alphas_df, cell, getattr(space, "ops", None))
    if wide.empty:
        return NodeTop2Info(None, cell, {}, {})
    at = latest_step(wide, step)
    row = wide.loc[at]
    ops = [o for o in dict.fromkeys(o for _, o in wide.columns) if o != "none"]
    found: dict[str, list[tuple[str, str, float]]] = {}
    for edge in dict.fromkeys(e for e, _ in wide.columns):
        vals = [(o, float(row.get((edge, o), np.nan))) for o in ops]
        vals = [(o, v) for o, v in vals if not math.isnan(v)]
        if not vals:
            continue
        best_op, best = max(vals, key=lambda t: t[1])
        found.setdefault(str(edge).split("<-")[0], []).append((str(edge), best_op, best))
    nodes = {n: found[n] for n in sorted(found, key=natural_key)}
    kept = {}
    for node, edges in nodes.items():
        ranked = sorted(range(len(edges)), key=lambda i, e=edges: -e[i][2])  # stable: ties keep edge order
        kept[node] = frozenset(ranked[:2])
    return NodeTop2Info(int(at), cell, nodes, kept)


def node_top2(alphas_df: pd.DataFrame, step: int | None, cell: str | None, space: Any) -> go.Figure:
    """Per intermediate node, each incoming edge's best non-``none`` weight; the top-2 kept edges highlighted.

    The DARTS derivation rule made visible: a node keeps the 2 incoming edges whose strongest non-``none``
    op weighs most (bar text names that op). ``step`` picks the latest recorded step at or before it
    (None = the last); ``cell`` the cell type (None = the first). Edges are named ``"node<-input"``.
    """
    info = node_top2_info(alphas_df, step, cell, space)
    if info.step is None:
        return empty_figure("No architecture weights recorded yet", NODE_TOP2_TITLE)
    if not info.nodes:
        return empty_figure("No non-none op weights recorded", NODE_TOP2_TITLE)
    return _draw_node_top2(info)


def _draw_node_top2(info: NodeTop2Info) -> go.Figure:
    names = list(info.nodes)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[f"node {n}" for n in names], shared_yaxes=True)
    for col, node in enumerate(names, start=1):
        edges, kept = info.nodes[node], info.kept[node]
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
    label = f" ({info.cell})" if info.cell else ""
    fig.update_layout(title=f"{NODE_TOP2_TITLE}{label}, step {info.step}", height=320,
                      margin={"t": 70, "l": 10, "r": 10, "b": 10})  # fmt: skip
    fig.update_yaxes(title_text="best non-none weight", row=1, col=1)
    return fig


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
    for n in sorted(nodes, key=natural_key):
        lines.append(f'  "{n}" [label="{labels.get(n, n)}"];')
    lines += edges
    lines.append("}")
    return "\n".join(lines)


def collapse_flag(genotype_str: str, space: Any, threshold: float = 0.5) -> str | None:
    """A warning when parameter-free ops take more than ``threshold`` of the derived cell's edges, else None.

    ``space`` is a SearchSpace (or its registered name); ops are read from the genotype text, so any
    space's format works as long as op names appear in it.
    """
    if not genotype_str:
        return None
    if isinstance(space, str):
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
