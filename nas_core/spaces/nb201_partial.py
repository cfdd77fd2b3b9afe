"""Partial NB201 cells, grown node by node, for progressive search (PNAS and DPP-Net grow cells block by block).

A cell whose first ``b`` nodes are decided is written as a whole NB201 genotype: every later node copies the one
before it (a skip edge from node i-1, ``none`` from the others), so the cell's output is node ``b``. Identity
and zero edges cost no parameters and no MACs, so the network it builds is the b-node cell exactly, and a partial
cell is an architecture in its own right: it can be trained, counted, compared and exported like any other.
"""

from __future__ import annotations

import itertools

from nas_core.spaces.nb201_arch import EDGE_PAIRS, NUM_NODES, OPS, NB201Genotype

#: the nodes decided one per stage: 1, 2, 3 (node 0 is the cell's input)
GROWN_NODES: tuple[int, ...] = tuple(range(1, NUM_NODES))


def node_edges(node: int) -> list[int]:
    """Positions (in genotype order) of the edges into ``node``."""
    return [k for k, (target, _) in enumerate(EDGE_PAIRS) if target == node]


def padded(ops: list[str] | tuple[str, ...], decided: int) -> NB201Genotype:
    """The genotype with nodes after ``decided`` copying the node before them (its output is node ``decided``)."""
    out = list(ops)
    for k, (target, source) in enumerate(EDGE_PAIRS):
        if target > decided:
            out[k] = "skip_connect" if source == target - 1 else "none"
    return NB201Genotype(tuple(out))


def output_connected(g: NB201Genotype) -> bool:
    """Whether the cell's output depends on its input (some path of non-``none`` edges joins node 0 to the last)."""
    live = {0}
    for k, (target, source) in enumerate(EDGE_PAIRS):  # node-major order: a source is settled before its targets
        if source in live and g.ops[k] != "none":
            live.add(target)
    return NUM_NODES - 1 in live


def first_stage() -> list[NB201Genotype]:
    """Every one-node cell whose output is not constant: node 1 takes each op but ``none``."""
    return [padded([op] + ["none"] * (len(EDGE_PAIRS) - 1), 1) for op in OPS if op != "none"]


def expand(g: NB201Genotype, node: int) -> list[NB201Genotype]:
    """Every cell that decides ``node`` on top of ``g`` (whose nodes before it are decided): each combination of
    ops on the edges into ``node``, keeping those whose output still depends on the input."""
    if node not in GROWN_NODES[1:]:
        raise ValueError(f"node {node} is not one a stage grows (2..{NUM_NODES - 1})")
    edges = node_edges(node)
    out = []
    for combo in itertools.product(OPS, repeat=len(edges)):
        ops = list(g.ops)
        for k, op in zip(edges, combo):
            ops[k] = op
        cand = padded(ops, node)
        if output_connected(cand):
            out.append(cand)
    return out


def tokens(g: NB201Genotype, decided: int) -> list[int]:
    """The op indices of the decided edges in genotype order (node 1's, then node 2's, ...): the predictor's input."""
    return [OPS.index(g.ops[k]) for k, (target, _) in enumerate(EDGE_PAIRS) if target <= decided]
