"""Partial DARTS cells for progressive search, grown node by node as PNAS grows its cells block by block.

A cell with ``b`` nodes lists ``2b`` (op, input) pairs and concatenates its nodes 2..1+b (the DARTS space
concatenates every intermediate node). As in PNAS (Liu et al., ECCV 2018), the reduction cell is the normal cell
with stride 2 on the cell's inputs, so one structure is grown. Each node takes two distinct earlier states
(as a cell derived from the DARTS supernet does), each through one of the 7 ops (``none`` is not an op a
derived cell can hold).
"""

from __future__ import annotations

import itertools

from nas_core.spaces.darts_genotype import OPS, STEPS, DartsGenotype, Pair

#: the ops a grown node may use
GROWN_OPS: tuple[str, ...] = OPS[1:]
#: the nodes decided one per stage: 2, 3, 4, 5
GROWN_NODES: tuple[int, ...] = tuple(range(2, STEPS + 2))
#: token = op index * INPUTS + input index: the predictor's vocabulary
INPUTS = STEPS + 1
VOCAB = len(GROWN_OPS) * INPUTS


def tied(pairs: list[Pair] | tuple[Pair, ...]) -> DartsGenotype:
    """The genotype whose normal and reduction cells both have ``pairs``, concatenating all their nodes."""
    concat = tuple(range(2, 2 + len(pairs) // 2))
    return DartsGenotype(tuple(pairs), concat, tuple(pairs), concat)


def node_choices(node: int) -> list[tuple[Pair, Pair]]:
    """Every way ``node`` can take two distinct earlier states, each through one op (inputs in ascending order)."""
    return [
        ((op_a, a), (op_b, b))
        for a, b in itertools.combinations(range(node), 2)
        for op_a in GROWN_OPS
        for op_b in GROWN_OPS
    ]


def first_stage() -> list[DartsGenotype]:
    """Every one-node cell: node 2 on the cell's two inputs, 7 x 7 op choices."""
    return [tied(choice) for choice in node_choices(2)]


def expand(g: DartsGenotype, node: int) -> list[DartsGenotype]:
    """Every cell that adds ``node`` to ``g`` (whose cells are tied and have nodes 2..node-1)."""
    if node not in GROWN_NODES[1:]:
        raise ValueError(f"node {node} is not one a stage grows (3..{STEPS + 1})")
    if len(g.normal) != 2 * (node - 2) or g.normal != g.reduce:
        raise ValueError(f"node {node} grows a tied cell with nodes 2..{node - 1}")
    return [tied(g.normal + choice) for choice in node_choices(node)]


def tokens(g: DartsGenotype) -> list[int]:
    """One token per (op, input) pair of the (tied) cell: the predictor's input."""
    return [GROWN_OPS.index(op) * INPUTS + idx for op, idx in g.normal]
