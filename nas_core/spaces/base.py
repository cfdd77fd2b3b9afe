"""What every search space provides, so strategies, the CLI and the pages treat spaces alike."""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nas_core.errors import GenotypeError


def json_document(text: str) -> Any:
    """The JSON document of a genotype given as text; GenotypeError naming the JSON error otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GenotypeError(f"genotype JSON is not valid JSON: {exc}") from None


def check_document(doc: Any, space: str, what: str = "genotype JSON") -> dict[str, Any]:
    """``doc`` as a dict whose ``space`` (default: this one) is ``space``; else a GenotypeError saying why."""
    if not isinstance(doc, dict):
        raise GenotypeError(f"{what} must be an object")
    found = doc.get("space", space)
    if found != space:
        raise GenotypeError(f"genotype JSON is for space {found!r}, not {space}")
    return doc


#: What runs on a cell space whose supernet mixes ops on edges (NB201, DARTS): the DARTS family, GDAS, TE-NAS,
#: the multi-trial searches, progressive search and a given architecture.
CELL_SPACE_STRATEGIES: tuple[str, ...] = (
    "darts", "darts-2nd", "single-darts", "pc-darts", "gdas", "tenas", "random", "evolution", "progressive", "fixed",
)  # fmt: skip


class SearchSpace(ABC):
    """A family of architectures: supernet for one-shot search, stand-alone nets, genotype I/O, drawing."""

    name: str
    label: str
    ops: tuple[str, ...]
    edges: tuple[str, ...]
    cell_types: tuple[str, ...]
    param_free_ops: frozenset[str]

    # What strategies and tools ask of a space. Each space declares its own here, so a new space is one module
    # plus a registry line, and no strategy asks ``space.name``.

    #: The strategies (registry names) that run on this space; a config naming another is refused.
    strategies: tuple[str, ...] = ()
    #: (channels, cells_per_stage) the stand-alone network is profiled at when not told (CLI ``profile``).
    profile_defaults: tuple[int, int] = (16, 5)
    #: TE-NAS: the reference's NTK batch for this space (None: the space has no TE-NAS proxy networks).
    tenas_ntk_batch: int | None = None
    #: TE-NAS: ops pruned per edge per round when the ``prune_per_round`` parameter is 0 (the reference's).
    tenas_prune_per_round: int = 1
    #: TE-NAS: groups (start, stop) of edge indices, each group the incoming edges of one node, that the edge
    #: stage prunes to two edges each; empty: every edge stays (NB201's cells keep all edges).
    tenas_edge_groups: tuple[tuple[int, int], ...] = ()
    #: Trained as a benchmark defines it (NAS-Bench-201): the CLI's ``train`` refuses cutout and drop path.
    benchmark_recipe_only: bool = False
    #: The architecture is read off per-node top-2 incoming edges (DARTS's derivation rule): the Monitor
    #: draws each node's strongest inputs.
    derives_top2_inputs: bool = False

    @abstractmethod
    def parse(self, text: str) -> Any:
        """Parse the space's textual genotype (or a JSON document of it); raise GenotypeError."""

    @abstractmethod
    def format(self, genotype: Any) -> str:
        """The canonical text form (round-trips through :meth:`parse`)."""

    @abstractmethod
    def to_json(self, genotype: Any) -> dict[str, Any]:
        """A JSON-ready document that rebuilds the architecture with :meth:`from_json`."""

    @abstractmethod
    def from_json(self, doc: dict[str, Any]) -> Any:
        """Validate and read back a document written by :meth:`to_json`."""

    @abstractmethod
    def to_dot(self, genotype: Any) -> str:
        """Graphviz DOT source of the cell(s)."""

    @abstractmethod
    def build_network(
        self,
        genotype: Any,
        num_classes: int,
        input_shape: tuple[int, int, int],
        channels: int,
        cells_per_stage: int,
    ) -> nn.Module:
        """The stand-alone network of one genotype, with affine BN, for training from scratch."""

    @abstractmethod
    def build_supernet(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        channels: int,
        cells_per_stage: int,
        **options: Any,
    ) -> nn.Module:
        """The weight-sharing network over all ops, for one-shot search."""

    def supernet_device_options(self, device: torch.device) -> dict[str, Any]:
        """Options of :meth:`build_supernet` that suit the device the search runs on (none by default)."""
        return {}

    def alpha_rows(self, weights: dict[str, Any]) -> list[tuple[str, str, str, float]]:
        """Long-format (cell, edge, op, weight) rows of per-cell-type (edges x ops) weight matrices."""
        rows = []
        for cell, w in weights.items():
            w = w.detach().cpu().tolist()
            for e, edge in enumerate(self.edges):
                for o, op in enumerate(self.ops):
                    rows.append((cell, edge, op, float(w[e][o])))
        return rows

    def sample(self, rng: random.Random, input_shape: Sequence[int] | None = None) -> Any:
        """A uniformly random architecture (multi-trial search); spaces without a sampler refuse.

        ``input_shape`` (C, H, W) is for spaces whose skeleton depends on the input size (mobilenet)."""
        raise GenotypeError(f"the {self.name} space has no random sampler")

    def mutate(self, genotype: Any, rng: random.Random) -> Any:
        """A neighbour of ``genotype`` differing in one choice (regularized evolution's mutation)."""
        raise GenotypeError(f"the {self.name} space has no mutation")

    def trial_size(self, channels: int, cells_per_stage: int, input_shape: Sequence[int]) -> str:
        """How big a multi-trial search's trials are built, in words, for the search log."""
        return f"at C={channels}, N={cells_per_stage}"

    def grower(self, size: Any) -> Any:
        """Progressive search's grower of this space's cells for networks of ``size`` (spaces without refuse)."""
        raise GenotypeError(f"progressive search does not grow {self.name} architectures")

    def coerce(self, genotype: Any) -> Any:
        """Accept a genotype object, its text, or its JSON document."""
        if isinstance(genotype, str):
            return self.parse(genotype)
        if isinstance(genotype, dict):
            return self.from_json(genotype)
        return genotype
