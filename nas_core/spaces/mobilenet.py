"""The MobileNetV2-style space (what AtomNAS and ProxylessNAS search): the space object the registry holds.

The configurations, presets, genotypes and the stand-alone network are in :mod:`nas_core.spaces.mobilenet_arch`;
the two supernets in :mod:`nas_core.spaces.mobilenet_proxyless` (ProxylessNAS) and here (AtomNAS's atomic blocks).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from torch import nn

from nas_core.errors import ConfigError
from nas_core.spaces.base import SearchSpace
from nas_core.spaces.mobilenet_arch import (
    KERNELS,
    MAX_EXPANSION,
    OPS,
    PARAM_FREE,
    PRESETS,
    SEARCH_PRESET,
    Mixed,
    MobileNetGenotype,
    MobileNetNetwork,
    check_width,
    format_genotype,
    genotype_dot,
    genotype_from_json,
    genotype_to_json,
    get_preset,
    layout,
    mutate_genotype,
    parse_genotype,
    preset_for_shape,
    random_genotype,
    search_preset,
)
from nas_core.spaces.mobilenet_proxyless import build_proxyless_supernet

# -------------------------------------------------------------------------------------------------- space


class MobileNetSpace(SearchSpace):
    """MobileNetV2-style blocks, searched by AtomNAS (atomic channels) and ProxylessNAS (one MBConv per block)."""

    name = "mobilenet"
    label = "MobileNetV2-style blocks"
    ops = OPS
    #: every searchable block name of the largest table ('imagenet-search'); other presets use a subset.
    edges = PRESETS["imagenet-search"].block_names()
    cell_types = ("blocks",)
    param_free_ops = PARAM_FREE
    supernet_styles = ("atomnas", "proxylessnas")
    strategies = ("proxylessnas", "atomnas", "random", "evolution", "fixed")

    def trial_size(self, channels: int, cells_per_stage: int, input_shape: Sequence[int]) -> str:
        """Trials are built on the search table for the input size (C and N do not apply)."""
        return f"on the {search_preset(input_shape)!r} table"

    def parse(self, text: str) -> MobileNetGenotype:
        return parse_genotype(text)

    def format(self, genotype: Any) -> str:
        return format_genotype(self.coerce(genotype))

    def to_json(self, genotype: Any) -> dict[str, Any]:
        return genotype_to_json(self.coerce(genotype))

    def from_json(self, doc: dict[str, Any]) -> MobileNetGenotype:
        return genotype_from_json(doc)

    def to_dot(self, genotype: Any, input_shape: Sequence[int] | None = None) -> str:
        """Block by block, at ``input_shape`` or else the preset's own input size."""
        return genotype_dot(self.coerce(genotype), input_shape)

    def alpha_rows(
        self, weights: dict[str, Any], blocks: Sequence[str] | None = None
    ) -> list[tuple[str, str, str, float]]:
        """Rows of (blocks x ops) weight matrices; block names from ``blocks``, else the preset of that many blocks."""
        rows = []
        for cell, w in weights.items():
            w = w.detach().cpu().tolist()
            names = list(blocks) if blocks is not None else self.block_names_for(len(w))
            if len(names) != len(w):
                raise ValueError(f"{cell}: {len(w)} rows of weights for {len(names)} block names")
            for name, row in zip(names, w):
                if len(row) != len(self.ops):
                    raise ValueError(f"{cell}/{name}: {len(row)} weights for {len(self.ops)} ops {self.ops}")
                rows.extend((cell, name, op, float(v)) for op, v in zip(self.ops, row))
        return rows

    def sample(self, rng: random.Random, input_shape: Sequence[int] | None = None) -> MobileNetGenotype:
        """A uniformly random network of ProxylessNAS's space on the search table for ``input_shape``."""
        return random_genotype(rng, search_preset(input_shape))

    def mutate(self, genotype: Any, rng: random.Random) -> MobileNetGenotype:
        return mutate_genotype(self.coerce(genotype), rng)

    def block_names_for(self, count: int) -> tuple[str, ...]:
        """Searchable block names of the first preset (in :data:`PRESETS` order) with ``count`` of them."""
        for cfg in PRESETS.values():
            names = cfg.block_names()
            if len(names) == count:
                return names
        raise ValueError(f"no mobilenet preset has {count} searchable blocks; pass the block names")

    def build_network(
        self,
        genotype: Any,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        channels: int = 16,
        cells_per_stage: int = 5,
    ) -> MobileNetNetwork:
        """``channels`` and ``cells_per_stage`` are ignored: width and depth come from the genotype/preset."""
        return MobileNetNetwork(self.coerce(genotype), num_classes, input_shape)

    def build_supernet(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        channels: int = 16,
        cells_per_stage: int = 5,
        **options: Any,
    ) -> nn.Module:
        """``style="atomnas"``: every searchable block with all kernel sizes at full expansion, one atom per
        hidden channel (``preset``, ``width``, ``kernels``=(3, 5, 7), ``expansion``=6 as options; the preset
        defaults to the search table for the input shape). ``style="proxylessnas"``: ProxylessNAS's binarised
        mixed edges, {3,5,7}x{e3,e6} (+ zero where the block keeps its shape) per searchable block (``preset``,
        ``width``, ``dropout``=0 as options; see :mod:`nas_core.spaces.mobilenet_proxyless`).
        ``channels``/``cells_per_stage`` are ignored as in :meth:`build_network`."""
        style = options.get("style")
        if style == "proxylessnas":
            preset = options.get("preset") or SEARCH_PRESET[preset_for_shape(input_shape)]
            return build_proxyless_supernet(
                num_classes, input_shape, preset, options.get("width"), float(options.get("dropout", 0.0))
            )
        if style != "atomnas":
            raise NotImplementedError(
                f"mobilenet supernet style {style!r}: pass style='atomnas' (AtomNAS's atomic blocks) or "
                "style='proxylessnas' (ProxylessNAS's binarised mixed edges)."
            )
        preset = options.get("preset") or SEARCH_PRESET[preset_for_shape(input_shape)]
        cfg = get_preset(preset)
        width = float(options.get("width", cfg.width))
        kernels = tuple(sorted(int(k) for k in options.get("kernels", KERNELS)))
        expansion = int(options.get("expansion", 6))
        if not kernels or any(k not in KERNELS for k in kernels):
            raise ConfigError("kernels", f"kernel sizes must be a non-empty subset of {KERNELS}, got {kernels}")
        if not 1 <= expansion <= MAX_EXPANSION:
            raise ConfigError("expansion", f"must be between 1 and {MAX_EXPANSION}, got {expansion}")
        check_width(width, ConfigError)
        plans = layout(cfg, width, input_shape).searchable
        blocks = tuple(Mixed(tuple((k, int(round(p.c_in * expansion))) for k in kernels)) for p in plans)
        return MobileNetNetwork(MobileNetGenotype(blocks, preset, width), num_classes, input_shape)
