"""What every search space provides, so strategies, the CLI and the pages treat spaces alike."""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class GenotypeError(ValueError):
    """A genotype string or JSON document was malformed; the message says where."""


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


class SearchSpace(ABC):
    """A family of architectures: supernet for one-shot search, stand-alone nets, genotype I/O, drawing."""

    name: str
    label: str
    ops: tuple[str, ...]
    edges: tuple[str, ...]
    cell_types: tuple[str, ...]
    param_free_ops: frozenset[str]

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

    def coerce(self, genotype: Any) -> Any:
        """Accept a genotype object, its text, or its JSON document."""
        if isinstance(genotype, str):
            return self.parse(genotype)
        if isinstance(genotype, dict):
            return self.from_json(genotype)
        return genotype
