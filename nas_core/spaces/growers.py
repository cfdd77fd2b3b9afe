"""How progressive search grows cells on each space, and what each grown cell costs, counted exactly and fast.

A grower gives the first stage's cells, the expansions of a cell at the next stage, the predictor's tokens of a
cell, and its MACs or params. Costs are sums: ops on different edges share no module and thop counts module by
module (a node's sum is not counted), so a network's cost is a base plus one term per (edge or pair, op), each
counted once on a whole network. Stages then cost thousands of candidates without building any; tests check the
sums against counting whole networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from nas_core.metrics import count_macs, count_params
from nas_core.spaces import darts_partial, nb201_partial  # the family modules, not the registry
from nas_core.spaces.darts_genotype import DartsGenotype
from nas_core.spaces.nb201_arch import EDGE_PAIRS, OPS, NB201Genotype

COSTS: tuple[str, ...] = ("macs", "params")
Size = tuple[int, tuple[int, int, int], int, int]  # num_classes, input shape, channels, cells per stage


def _measure(space: Any, genotype: Any, size: Size) -> dict[str, int]:
    num_classes, shape, channels, cells = size
    net = space.build_network(space.format(genotype), num_classes, shape, channels, cells)
    params = count_params(net)  # before thop adds its counters
    return {"macs": count_macs(net, shape, keep_model=False), "params": params}


@dataclass(frozen=True)
class EdgeCosts:
    """NB201 MACs and params as sums: the all-``none`` network plus one term per (edge, op)."""

    base: dict[str, int]
    per_edge: list[dict[str, dict[str, int]]]  # [edge][op][cost]

    @classmethod
    def count(
        cls, space: Any, num_classes: int, input_shape: tuple[int, int, int], channels: int, cells: int
    ) -> EdgeCosts:
        """Count the all-``none`` network and one network per (edge, op) at this size."""
        size = (num_classes, input_shape, channels, cells)
        empty = ["none"] * len(EDGE_PAIRS)
        base = _measure(space, NB201Genotype(tuple(empty)), size)
        per_edge: list[dict[str, dict[str, int]]] = []
        for k in range(len(EDGE_PAIRS)):
            row = {"none": {"macs": 0, "params": 0}}
            for op in OPS[1:]:
                m = _measure(space, NB201Genotype(tuple(empty[:k] + [op] + empty[k + 1 :])), size)
                row[op] = {c: m[c] - base[c] for c in COSTS}
            per_edge.append(row)
        return cls(base, per_edge)

    def of(self, g: NB201Genotype, cost: str) -> int:
        return self.base[cost] + sum(self.per_edge[k][op][cost] for k, op in enumerate(g.ops))


@dataclass
class NB201Grower:
    """NB201: stage b decides node b (1..3); partial cells copy node b forward through skip edges."""

    space: Any
    size: Size
    stages: ClassVar[int] = len(nb201_partial.GROWN_NODES)
    vocab: ClassVar[int] = len(OPS)
    _costs: EdgeCosts | None = field(default=None, init=False, repr=False)

    @staticmethod
    def first_stage() -> list[NB201Genotype]:
        return nb201_partial.first_stage()

    def expand(self, g: NB201Genotype, stage: int) -> list[NB201Genotype]:
        return nb201_partial.expand(g, nb201_partial.GROWN_NODES[stage - 1])

    def tokens(self, g: NB201Genotype, stage: int) -> list[int]:
        return nb201_partial.tokens(g, nb201_partial.GROWN_NODES[stage - 1])

    def cost(self, g: NB201Genotype, stage: int, cost: str) -> int:
        if self._costs is None:
            self._costs = EdgeCosts.count(self.space, *self.size)
        return self._costs.of(g, cost)


@dataclass(frozen=True)
class PairCosts:
    """A DARTS stage's costs as sums: a constant plus one term per (op, input kind) of the cell's pairs.

    An op's cost depends on whether it reads one of the cell's inputs (0 or 1: stride 2 in a reduction cell)
    or a node (stride 1). The terms are counted on a reference cell whose node n takes ``skip_connect`` from
    states n-2 and n-1, by swapping each op into its first pair (input 0) or node 3's second pair (input 2);
    moving that second skip to input 0 prices a skip's change of input kind. Terms are relative to a skip that
    reads a node, which makes the constant the reference's cost less its skips. Cells are tied, so each term
    holds the op in both cell types.
    """

    base: dict[str, int]
    term: dict[tuple[str, bool], dict[str, int]]  # (op, reads a node) -> cost

    @classmethod
    def count(cls, space: Any, nodes: int, size: Size) -> PairCosts:
        ref = [("skip_connect", n - 2 + k) for n in range(2, 2 + nodes) for k in (0, 1)]
        ref_cost = _measure(space, darts_partial.tied(ref), size)

        def swapped(slot: int, pair: tuple[str, int]) -> dict[str, int]:
            pairs = list(ref)
            pairs[slot] = pair
            m = _measure(space, darts_partial.tied(pairs), size)
            return {c: m[c] - ref_cost[c] for c in COSTS}

        # a skip reading an input instead of a node (a reduction cell's FactorizedReduce); 0 with one node only
        to_input = swapped(3, ("skip_connect", 0)) if nodes >= 2 else {c: 0 for c in COSTS}
        reads_input = sum(idx < 2 for _, idx in ref)
        base = {c: ref_cost[c] - reads_input * to_input[c] for c in COSTS}
        term: dict[tuple[str, bool], dict[str, int]] = {
            ("skip_connect", False): dict(to_input),
            ("skip_connect", True): {c: 0 for c in COSTS},
        }
        for op in darts_partial.GROWN_OPS:
            if op == "skip_connect":
                continue
            d = swapped(0, (op, 0))
            term[(op, False)] = {c: d[c] + to_input[c] for c in COSTS}
            if nodes >= 2:
                term[(op, True)] = swapped(3, (op, 2))
        return cls(base, term)

    def of(self, g: DartsGenotype, cost: str) -> int:
        return self.base[cost] + sum(self.term[(op, idx >= 2)][cost] for op, idx in g.normal)


@dataclass
class DartsGrower:
    """DARTS: stage b decides node b+1 (2..5) of a cell whose reduction twin is tied to it (PNAS)."""

    space: Any
    size: Size
    stages: ClassVar[int] = len(darts_partial.GROWN_NODES)
    vocab: ClassVar[int] = darts_partial.VOCAB
    _costs: dict[int, PairCosts] = field(default_factory=dict, init=False, repr=False)

    @staticmethod
    def first_stage() -> list[DartsGenotype]:
        return darts_partial.first_stage()

    def expand(self, g: DartsGenotype, stage: int) -> list[DartsGenotype]:
        return darts_partial.expand(g, darts_partial.GROWN_NODES[stage - 1])

    def tokens(self, g: DartsGenotype, stage: int) -> list[int]:
        return darts_partial.tokens(g)

    def cost(self, g: DartsGenotype, stage: int, cost: str) -> int:
        if stage not in self._costs:
            self._costs[stage] = PairCosts.count(self.space, stage, self.size)
        return self._costs[stage].of(g, cost)
