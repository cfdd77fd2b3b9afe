"""The NAS-Bench-201 space (Dong & Yang, ICLR 2020): the space object the registry holds.

Genotypes, ops, the benchmark's stand-alone network and the supernet are in :mod:`nas_core.spaces.nb201_arch`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from nas_core.spaces.base import CELL_SPACE_STRATEGIES, SearchSpace
from nas_core.spaces.growers import NB201Grower
from nas_core.spaces.nb201_arch import (
    EDGE_PAIRS,
    EDGES,
    OPS,
    PARAM_FREE,
    NB201Genotype,
    NB201Network,
    NB201SuperNet,
    format_genotype,
    genotype_from_json,
    genotype_to_json,
    mutate_genotype,
    parse_genotype,
    random_genotype,
)

# --------------------------------------------------------------------------- the space


class NB201Space(SearchSpace):
    name = "nb201"
    label = "NAS-Bench-201 cell"
    ops = OPS
    edges = EDGES
    cell_types = ("normal",)
    param_free_ops = PARAM_FREE
    strategies = CELL_SPACE_STRATEGIES
    #: the benchmark's own network: C=16, N=5
    profile_defaults = (16, 5)
    #: TE-NAS on NB201 (the reference's settings): NTK batch 72, one op pruned per edge per round, every edge kept
    tenas_ntk_batch = 72
    tenas_prune_per_round = 1
    #: trained with the benchmark's recipe: no cutout, no drop path
    benchmark_recipe_only = True

    def grower(self, size: Any) -> NB201Grower:
        return NB201Grower(self, size)

    def parse(self, text: str) -> NB201Genotype:
        return parse_genotype(text)

    def format(self, genotype: Any) -> str:
        return format_genotype(self.coerce(genotype))

    def to_json(self, genotype: Any) -> dict[str, Any]:
        return genotype_to_json(self.coerce(genotype))

    def from_json(self, doc: dict[str, Any]) -> NB201Genotype:
        return genotype_from_json(doc)

    def sample(self, rng: random.Random, input_shape: Sequence[int] | None = None) -> NB201Genotype:
        return random_genotype(rng)

    def mutate(self, genotype: Any, rng: random.Random) -> NB201Genotype:
        return mutate_genotype(self.coerce(genotype), rng)

    def to_dot(self, genotype: Any) -> str:
        g = self.coerce(genotype)
        lines = [
            "digraph cell {",
            '  rankdir=LR; bgcolor="transparent";',
            '  node [shape=circle, style=filled, fillcolor="#dbe9f6", fontname="Helvetica"];',
            '  edge [fontname="Helvetica", fontsize=10];',
            '  n0 [label="in"]; n3 [label="out", fillcolor="#f6e3c8"];',
            '  n1 [label="1"]; n2 [label="2"];',
        ]
        colors = {
            "nor_conv_3x3": "#1f77b4",
            "nor_conv_1x1": "#2ca02c",
            "skip_connect": "#7f7f7f",
            "avg_pool_3x3": "#ff7f0e",
        }
        for (i, j), op in zip(EDGE_PAIRS, g.ops):
            if op == "none":
                continue
            lines.append(f'  n{j} -> n{i} [label="{op}", color="{colors[op]}", fontcolor="{colors[op]}"];')
        lines.append("}")
        return "\n".join(lines)

    def build_network(
        self,
        genotype: Any,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        channels: int = 16,
        cells_per_stage: int = 5,
    ) -> NB201Network:
        return NB201Network(self.coerce(genotype), channels, cells_per_stage, num_classes, input_shape[0])

    def build_supernet(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        channels: int = 16,
        cells_per_stage: int = 5,
        *,
        mode: str = "darts",
        partial_k: int = 4,
        fused: bool = True,
        **options: Any,
    ) -> NB201SuperNet:
        """Supernet in one of :data:`SUPERNET_MODES`; ``partial_k`` is used by ``pcdarts`` only."""
        if options:
            raise ValueError(f"unknown NB201 supernet option(s): {', '.join(sorted(options))}")
        return NB201SuperNet(
            channels, cells_per_stage, num_classes, input_shape[0], fused=fused, mode=mode, partial_k=partial_k
        )
