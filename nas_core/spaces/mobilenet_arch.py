"""MobileNetV2-style space of inverted-residual blocks (the space AtomNAS and ProxylessNAS search).

Configuration (:class:`MobileNetConfig`, one per preset) is the stage table ``(t, c, n, s)`` with the
stem, head, width multiplier, input size and class count. Presets (:data:`PRESETS`):

- ``imagenet``: MobileNetV2's table (Sandler et al. 2018, Table 2), 224x224, 1000 classes.
- ``imagenet-search``: the table AtomNAS and ProxylessNAS search over (4 blocks per stage, c 24/40/80/96/192/320).
- ``cifar`` / ``cifar-search``: the same two tables for 32x32, with the strides that CIFAR MobileNetV2 ports
  use (kuangliu/pytorch-cifar's ``mobilenetv2.py``): stem stride 1 and the first 24-channel stage at
  stride 1, so the net downsamples 8x (32 -> 4) instead of 32x.
- ``digits``: 8x8 inputs (scikit-learn digits), a 16-channel stem at stride 1 and six small searchable
  blocks; trains in seconds on a CPU.

The first stage (t=1, one block without expansion) is fixed in every preset, as in both papers; the
other blocks are searchable and named ``s<stage>.b<index>`` (1-based, the table's stage numbers).

Genotype (canonical text = compact JSON, :meth:`MobileNetSpace.format`)::

    {"blocks":["mb3_e6","zero",{"3":48,"5":96}, ...],"format":1,"preset":"imagenet","space":"mobilenet","width":1.0}

one entry per searchable block: ``"mb<k>_e<e>"`` (one MBConv, kernel k in 3/5/7, expansion e in 1..12,
ProxylessNAS results), ``"zero"`` (the block is skipped; only where it keeps the shape: stride 1 and equal
in/out channels), or ``{"<k>": hidden, ...}`` (AtomNAS results: the hidden channels kept per kernel size,
built as channel groups with their own depthwise kernel). ``"blocks"`` left out means the table's own
blocks (kernel 3, expansion t); ``"preset"`` may be left out only then, and is chosen from the input
shape when built (:func:`preset_for_shape`). Named genotypes (:data:`GENOTYPE_PRESETS`): ``mobilenetv2``
(MobileNetV2 1.0 at ImageNet size: 3,504,872 parameters, 300.8 M MACs), ``mobilenetv2-cifar``,
``mobilenetv2-digits``.

``build_network``'s ``channels`` and ``cells_per_stage`` arguments exist for the generic interface and
are ignored: the width comes from the genotype (``width``) and the depth from the preset's stage table
and the genotype's ``zero`` blocks.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from nas_core.errors import ConfigError, GenotypeError
from nas_core.spaces.base import check_document, json_document
from nas_core.spaces.mobilenet_blocks import (
    KERNELS,
    InvertedResidual,
    activation,
    block_macs,
    conv_macs,
    conv_out,
    init_weights,
    make_divisible,
)

MAX_EXPANSION = 12
MAX_WIDTH = 4.0
#: ProxylessNAS's candidate set per block, in its order, then zero: the columns of alpha matrices.
OPS: tuple[str, ...] = ("mb3_e3", "mb3_e6", "mb5_e3", "mb5_e6", "mb7_e3", "mb7_e6", "zero")
PARAM_FREE = frozenset({"zero"})
_MB_RE = re.compile(r"^mb(\d+)_e(\d+)$")


# ------------------------------------------------------------------------------------------ configuration


def check_width(width: Any, error: type) -> None:
    ok = isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width)
    if not ok or not 0 < width <= MAX_WIDTH:
        msg = f"width multiplier must be a number in (0, {MAX_WIDTH}], got {width!r}"
        raise error("width", msg) if error is ConfigError else error(msg)


@dataclass(frozen=True)
class Stage:
    """One row of the stage table: expansion t, out channels c, repeats n, first block's stride s."""

    t: int
    c: int
    n: int
    s: int
    searchable: bool = True


@dataclass(frozen=True)
class MobileNetConfig:
    """The fixed skeleton a genotype fills in; channel counts are before the width multiplier."""

    name: str
    stages: tuple[Stage, ...]
    input_size: int
    num_classes: int
    stem_channels: int = 32
    stem_stride: int = 2
    head_channels: int = 1280
    width: float = 1.0
    dropout: float = 0.2
    act: str = "relu6"
    description: str = ""

    def validated(self) -> MobileNetConfig:
        """Refuse a malformed table with a ConfigError naming the field."""
        if not self.stages:
            raise ConfigError("stages", "the stage table is empty")
        for i, st in enumerate(self.stages, start=1):
            for field_name in ("t", "c", "n", "s"):
                v = getattr(st, field_name)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ConfigError("stages", f"stage {i}: {field_name} must be a positive integer, got {v!r}")
            if st.t > MAX_EXPANSION:
                raise ConfigError("stages", f"stage {i}: expansion t={st.t} exceeds {MAX_EXPANSION}")
            if st.s not in (1, 2):
                raise ConfigError("stages", f"stage {i}: stride must be 1 or 2, got {st.s}")
            if st.t == 1 and st.searchable:
                raise ConfigError("stages", f"stage {i}: a t=1 stage has no expansion to search; mark it fixed")
        for field_name in ("input_size", "num_classes", "stem_channels", "head_channels"):
            v = getattr(self, field_name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(field_name, f"must be a positive integer, got {v!r}")
        if self.stem_stride not in (1, 2):
            raise ConfigError("stem_stride", f"must be 1 or 2, got {self.stem_stride}")
        check_width(self.width, ConfigError)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
        if self.act not in ("relu6", "relu"):
            raise ConfigError("act", f"must be 'relu6' or 'relu', got {self.act!r}")
        return self

    def block_names(self) -> tuple[str, ...]:
        """Names of the searchable blocks, in order (the genotype's entries)."""
        return tuple(
            f"s{si}.b{bi}" for si, st in enumerate(self.stages, start=1) if st.searchable for bi in range(1, st.n + 1)
        )

    def table_genotype(self, width: float | None = None) -> MobileNetGenotype:
        """The plain network of the table: every searchable block kernel 3 with its stage's expansion."""
        blocks = tuple(MBConv(3, st.t) for st in self.stages if st.searchable for _ in range(st.n))
        return MobileNetGenotype(blocks, self.name, self.width if width is None else width)


def _stages(rows: Sequence[tuple[int, int, int, int]]) -> tuple[Stage, ...]:
    return tuple(Stage(t, c, n, s, searchable=t != 1) for t, c, n, s in rows)


_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_SEARCH = ((1, 16, 1, 1), (6, 24, 4, 2), (6, 40, 4, 2), (6, 80, 4, 2), (6, 96, 4, 1), (6, 192, 4, 2), (6, 320, 1, 1))


def _cifar(rows: Sequence[tuple[int, int, int, int]]) -> tuple[Stage, ...]:
    # kuangliu/pytorch-cifar: "change stride 2 -> 1 for CIFAR10" on the 24-channel stage (and stem stride 1).
    return _stages([(t, c, n, 1 if i == 1 else s) for i, (t, c, n, s) in enumerate(rows)])


PRESETS: dict[str, MobileNetConfig] = {
    cfg.name: cfg.validated()
    for cfg in (
        MobileNetConfig(
            "imagenet", _stages(_MBV2), 224, 1000, description="MobileNetV2's table (paper Table 2), 224x224"
        ),
        MobileNetConfig(
            "imagenet-search",
            _stages(_SEARCH),
            224,
            1000,
            description="AtomNAS/ProxylessNAS search table (4 blocks per stage), 224x224",
        ),
        MobileNetConfig(
            "cifar",
            _cifar(_MBV2),
            32,
            10,
            stem_stride=1,
            description="MobileNetV2's table for 32x32 (stem and 24-channel stage at stride 1, as CIFAR ports do)",
        ),
        MobileNetConfig(
            "cifar-search",
            _cifar(_SEARCH),
            32,
            10,
            stem_stride=1,
            description="the search table for 32x32 (same stride changes as 'cifar')",
        ),
        MobileNetConfig(
            "digits",
            _stages(((1, 8, 1, 1), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 2, 1))),
            8,
            10,
            stem_channels=16,
            stem_stride=1,
            head_channels=128,
            description="8x8 inputs: 16-channel stem, six small searchable blocks (2 per stage), CPU-fast",
        ),
    )
}


def preset_for_shape(input_shape: Sequence[int]) -> str:
    """The preset whose input size suits ``input_shape`` (C, H, W): >=128 imagenet, >=24 cifar, else digits."""
    side = min(int(input_shape[1]), int(input_shape[2]))
    if side >= 128:
        return "imagenet"
    if side >= 24:
        return "cifar"
    return "digits"


#: The preset a supernet uses when none is given: the search table where there is one (digits has one table).
SEARCH_PRESET = {"imagenet": "imagenet-search", "cifar": "cifar-search", "digits": "digits"}


def get_preset(name: str) -> MobileNetConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise GenotypeError(f"unknown mobilenet preset {name!r}; known: {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------------------------- genotype


@dataclass(frozen=True)
class MBConv:
    """One MBConv: a single depthwise kernel size and an expansion ratio (ProxylessNAS's choice)."""

    kernel: int
    expansion: int

    @property
    def name(self) -> str:
        return f"mb{self.kernel}_e{self.expansion}"


@dataclass(frozen=True)
class Mixed:
    """Hidden channels kept per kernel size, ``((kernel, channels), ...)`` by kernel (AtomNAS's result)."""

    groups: tuple[tuple[int, int], ...]

    @property
    def name(self) -> str:
        return "+".join(f"k{k}:{h}" for k, h in self.groups)


@dataclass(frozen=True)
class Zero:
    """The block is skipped (identity); only where the block keeps the tensor's shape."""

    @property
    def name(self) -> str:
        return "zero"


ZERO = Zero()
BlockChoice = MBConv | Mixed | Zero


@dataclass(frozen=True)
class MobileNetGenotype:
    """Per searchable block one choice, plus the preset and width multiplier they are built with.

    ``blocks=None`` (only with ``preset=None``) means the table's own blocks of whichever preset the input
    shape selects; ``preset=None`` means that preset is chosen from the input shape at build time.
    """

    blocks: tuple[BlockChoice, ...] | None
    preset: str | None = "imagenet"
    width: float = 1.0

    def __str__(self) -> str:
        return format_genotype(self)


def _where(i: int, names: Sequence[str] | None) -> str:
    return f"block {i + 1} ({names[i]})" if names is not None and i < len(names) else f"block {i + 1}"


def parse_block(item: Any, i: int = 0, names: Sequence[str] | None = None) -> BlockChoice:
    """One genotype entry: "mb<k>_e<e>", "zero", or {"<k>": channels, ...}; errors name the block."""
    where = _where(i, names)
    if isinstance(item, str):
        text = item.strip().lower()
        if text == "zero":
            return ZERO
        m = _MB_RE.match(text)
        if not m:
            raise GenotypeError(f"{where}: unknown choice {item!r}; use 'mb<k>_e<e>' (e.g. mb3_e6), 'zero' or "
                                '{"<kernel>": channels}')  # fmt: skip
        k, e = int(m.group(1)), int(m.group(2))
        if k not in KERNELS:
            raise GenotypeError(f"{where}: kernel size {k} in {item!r}; kernel sizes are {KERNELS}")
        if not 1 <= e <= MAX_EXPANSION:
            raise GenotypeError(f"{where}: expansion {e} in {item!r} must be between 1 and {MAX_EXPANSION}")
        return MBConv(k, e)
    if isinstance(item, dict):
        if not item:
            raise GenotypeError(f"{where}: a mixed-kernel block needs at least one kernel size with channels; "
                                "write 'zero' to skip the block")  # fmt: skip
        groups = []
        for key, value in item.items():
            try:
                k = int(str(key).strip())
            except ValueError:
                k = -1
            if k not in KERNELS:
                raise GenotypeError(f"{where}: kernel size {key!r}; kernel sizes are {KERNELS}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GenotypeError(f"{where}: kernel {k} needs a positive integer channel count, got {value!r}")
            groups.append((k, value))
        if len({k for k, _ in groups}) != len(groups):
            raise GenotypeError(f"{where}: kernel size given twice")
        return Mixed(tuple(sorted(groups)))
    raise GenotypeError(f"{where}: expected a string or an object, got {type(item).__name__}")


def block_to_json(choice: BlockChoice) -> str | dict[str, int]:
    if isinstance(choice, Mixed):
        return {str(k): h for k, h in choice.groups}
    return choice.name


@dataclass(frozen=True)
class BlockPlan:
    """Where one block sits: shapes, stride, whether it is searched, and the spatial sizes at this input."""

    name: str
    stage: int
    c_in: int
    c_out: int
    stride: int
    t: int
    searchable: bool
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def keeps_shape(self) -> bool:
        """True where the block has a residual and may be skipped ('zero')."""
        return self.stride == 1 and self.c_in == self.c_out


@dataclass(frozen=True)
class Layout:
    """The whole skeleton at one width and input size: stem, blocks (fixed ones included), head."""

    config: MobileNetConfig
    width: float
    in_channels: int
    stem_channels: int
    stem_hw: tuple[int, int]
    blocks: tuple[BlockPlan, ...]
    head_channels: int

    @property
    def searchable(self) -> tuple[BlockPlan, ...]:
        return tuple(b for b in self.blocks if b.searchable)


def layout(config: MobileNetConfig, width: float, input_shape: Sequence[int]) -> Layout:
    """Channels (rounded to multiples of 8 as MobileNetV2 does) and spatial sizes of every block."""
    c_in, h, w = (int(v) for v in input_shape)
    stem = make_divisible(config.stem_channels * width)
    head = make_divisible(config.head_channels * max(1.0, width))  # the paper keeps the last conv at >= 1280
    hw = (conv_out(h, config.stem_stride), conv_out(w, config.stem_stride))
    plans, prev = [], stem
    for si, st in enumerate(config.stages, start=1):
        out = make_divisible(st.c * width)
        for bi in range(1, st.n + 1):
            stride = st.s if bi == 1 else 1
            out_hw = (conv_out(hw[0], stride), conv_out(hw[1], stride))
            plans.append(BlockPlan(f"s{si}.b{bi}", si, prev, out, stride, st.t, st.searchable, hw, out_hw))
            prev, hw = out, out_hw
    return Layout(config, width, c_in, stem, plans[0].in_hw if plans else hw, tuple(plans), head)


def block_groups(choice: BlockChoice, c_in: int) -> tuple[tuple[tuple[int, int], ...], bool] | None:
    """(kernel groups, has expansion conv) of a choice at ``c_in`` input channels; None for zero."""
    if isinstance(choice, Zero):
        return None
    if isinstance(choice, Mixed):
        return choice.groups, True
    hidden = c_in if choice.expansion == 1 else int(round(c_in * choice.expansion))
    return ((choice.kernel, hidden),), choice.expansion != 1


def resolve(genotype: MobileNetGenotype, input_shape: Sequence[int] | None = None) -> MobileNetGenotype:
    """Fill in the preset (from the input shape) and the table's blocks, then check the blocks fit it."""
    g = genotype
    if g.preset is None:
        if input_shape is not None:
            name = preset_for_shape(input_shape)
        elif g.blocks is not None:
            matches = [n for n, c in PRESETS.items() if len(c.block_names()) == len(g.blocks)]
            name = matches[0] if matches else "imagenet"
        else:
            name = "imagenet"
        g = replace(g, preset=name)
    cfg = get_preset(g.preset)
    if g.blocks is None:
        g = replace(g, blocks=cfg.table_genotype().blocks)
    check_fits(g)
    return g


def check_fits(g: MobileNetGenotype) -> None:
    """Block count matches the preset, and 'zero' only where the block keeps its input's shape."""
    cfg = get_preset(g.preset)
    names = cfg.block_names()
    if g.blocks is None:
        return
    if len(g.blocks) != len(names):
        raise GenotypeError(
            f"preset {cfg.name!r} has {len(names)} searchable blocks ({names[0]} .. {names[-1]}), "
            f"the genotype gives {len(g.blocks)}"
        )
    plans = layout(cfg, g.width, (3, cfg.input_size, cfg.input_size)).searchable
    for i, (plan, choice) in enumerate(zip(plans, g.blocks)):
        if isinstance(choice, Zero) and not plan.keeps_shape:
            why = f"stride {plan.stride}" if plan.stride != 1 else f"{plan.c_in} -> {plan.c_out} channels"
            raise GenotypeError(f"{_where(i, names)}: 'zero' is only allowed where the block keeps the shape "
                                f"(stride 1, same channels); this one has {why}")  # fmt: skip


def search_preset(input_shape: Sequence[int] | None) -> str:
    """The search table for ``input_shape`` (ProxylessNAS's and multi-trial's); 'imagenet-search' without one."""
    return SEARCH_PRESET[preset_for_shape(input_shape)] if input_shape is not None else "imagenet-search"


def block_options(preset: str, width: float | None = None) -> list[tuple[str, ...]]:
    """Per searchable block, the ProxylessNAS choices it may take: the six MBConvs, 'zero' where it keeps its shape."""
    cfg = get_preset(preset)
    plans = layout(cfg, cfg.width if width is None else width, (3, cfg.input_size, cfg.input_size)).searchable
    mb = tuple(op for op in OPS if op != "zero")
    return [mb + ("zero",) if plan.keeps_shape else mb for plan in plans]


def random_genotype(rng: random.Random, preset: str) -> MobileNetGenotype:
    """Every searchable block's choice drawn uniformly from its :func:`block_options` (ProxylessNAS's space)."""
    blocks = tuple(parse_block(rng.choice(opts)) for opts in block_options(preset))
    return MobileNetGenotype(blocks, preset, get_preset(preset).width)


def mutate_genotype(g: MobileNetGenotype, rng: random.Random) -> MobileNetGenotype:
    """One searchable block, drawn uniformly, takes a different one of its choices (as REA mutates one op).

    A genotype without blocks (the preset's table) is mutated from the table's own blocks."""
    g = resolve(g)
    opts = block_options(g.preset, g.width)  # type: ignore[arg-type]
    blocks = list(g.blocks)  # type: ignore[arg-type]
    i = rng.randrange(len(blocks))
    current = blocks[i].name if not isinstance(blocks[i], Mixed) else None
    blocks[i] = parse_block(rng.choice([o for o in opts[i] if o != current]))
    return replace(g, blocks=tuple(blocks))


def genotype_to_json(g: MobileNetGenotype) -> dict[str, Any]:
    doc: dict[str, Any] = {"space": "mobilenet", "format": 1, "width": float(g.width)}
    if g.preset is not None:
        doc["preset"] = g.preset
    if g.blocks is not None:
        doc["blocks"] = [block_to_json(b) for b in g.blocks]
    return doc


def format_genotype(g: MobileNetGenotype) -> str:
    """Compact canonical JSON (sorted keys, no spaces)."""
    return json.dumps(genotype_to_json(g), sort_keys=True, separators=(",", ":"))


_KNOWN_KEYS = {"space", "format", "preset", "width", "blocks"}
_TOLERATED_KEYS = {"network", "config", "name", "origin", "note"}  # written around the genotype by export etc.


def genotype_from_json(doc: Any) -> MobileNetGenotype:
    """Validate a genotype document; every error names the key or block that is wrong."""
    doc = check_document(doc, "mobilenet", "mobilenet genotype JSON")
    if doc.get("format", 1) != 1:
        raise GenotypeError(f"genotype JSON format {doc.get('format')!r} is not supported (expected 1)")
    unknown = sorted(set(doc) - _KNOWN_KEYS - _TOLERATED_KEYS)
    if unknown:
        raise GenotypeError(f"genotype JSON: unknown key(s) {', '.join(map(repr, unknown))}; "
                            f"expected {', '.join(sorted(_KNOWN_KEYS))}")  # fmt: skip
    preset = doc.get("preset")
    if preset is not None:
        if not isinstance(preset, str):
            raise GenotypeError(f"preset must be a string, got {preset!r}")
        get_preset(preset)
    width = doc.get("width", PRESETS[preset].width if preset else 1.0)
    check_width(width, GenotypeError)
    blocks_doc = doc.get("blocks")
    if blocks_doc is not None and preset is None:
        # Blocks are checked against a table at parse time, so a parsed genotype always builds.
        raise GenotypeError(f"'blocks' needs 'preset' (the stage table they fill; one of {', '.join(PRESETS)})")
    names = PRESETS[preset].block_names() if preset else None
    if blocks_doc is None:
        blocks = None if preset is None else PRESETS[preset].table_genotype().blocks
    elif not isinstance(blocks_doc, list):
        raise GenotypeError(
            f"'blocks' must be a list with one entry per searchable block, got {type(blocks_doc).__name__}"
        )
    else:
        blocks = tuple(parse_block(item, i, names) for i, item in enumerate(blocks_doc))
    g = MobileNetGenotype(blocks, preset, float(width))
    if preset is not None:
        check_fits(g)
    return g


def _named_genotypes() -> dict[str, MobileNetGenotype]:
    return {
        "mobilenetv2": PRESETS["imagenet"].table_genotype(1.0),
        "mobilenetv2-cifar": PRESETS["cifar"].table_genotype(1.0),
        "mobilenetv2-digits": PRESETS["digits"].table_genotype(1.0),
    }


#: Named genotypes ``parse`` accepts besides JSON.
GENOTYPE_PRESETS: dict[str, MobileNetGenotype] = _named_genotypes()


def parse_genotype(text: str) -> MobileNetGenotype:
    """A genotype name from :data:`GENOTYPE_PRESETS` or a JSON document."""
    text = (text or "").strip()
    if not text:
        raise GenotypeError(f"empty mobilenet genotype; give a name ({', '.join(GENOTYPE_PRESETS)}) or JSON")
    if text.startswith("{"):
        return genotype_from_json(json_document(text))
    try:
        return GENOTYPE_PRESETS[text.lower()]
    except KeyError:
        raise GenotypeError(
            f"unknown mobilenet genotype {text!r}; use JSON or one of {', '.join(GENOTYPE_PRESETS)}"
        ) from None


# ---------------------------------------------------------------------------------------------- network


class MobileNetNetwork(nn.Module):
    """Stand-alone network: stem conv 3x3 + BN + act, inverted residual blocks, 1x1 head conv, pool, dropout, FC.

    ``blocks`` holds every block of the table (fixed ones and skipped ones included, the latter as
    ``nn.Identity``), so ``blocks[i]`` is ``layout.blocks[i]``.
    """

    def __init__(self, genotype: MobileNetGenotype, num_classes: int, input_shape: Sequence[int]) -> None:
        super().__init__()
        g = resolve(genotype, input_shape)
        cfg = get_preset(g.preset)
        self.genotype = g
        self.config = cfg
        self.layout = layout(cfg, g.width, input_shape)
        lay = self.layout
        self.stem = nn.Sequential(
            nn.Conv2d(lay.in_channels, lay.stem_channels, 3, cfg.stem_stride, 1, bias=False),
            nn.BatchNorm2d(lay.stem_channels),
            activation(cfg.act),
        )
        choices = iter(g.blocks)
        mods: list[nn.Module] = []
        for plan in lay.blocks:
            choice = next(choices) if plan.searchable else MBConv(3, plan.t)
            spec = block_groups(choice, plan.c_in)
            if spec is None:
                mods.append(nn.Identity())
            else:
                mods.append(InvertedResidual(plan.c_in, plan.c_out, plan.stride, spec[0], spec[1], cfg.act))
        self.blocks = nn.ModuleList(mods)
        last = lay.blocks[-1].c_out
        self.head = nn.Sequential(
            nn.Conv2d(last, lay.head_channels, 1, bias=False), nn.BatchNorm2d(lay.head_channels), activation(cfg.act)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(lay.head_channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.pool(self.head(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def current_genotype(self) -> MobileNetGenotype:
        """The genotype of the modules as they are now (after channels were removed, e.g. by AtomNAS).

        A block keeps its MBConv name while its modules still match it; otherwise it is written in the
        mixed-kernel form with its live channel counts.
        """
        out: list[BlockChoice] = []
        choices = iter(self.genotype.blocks)
        for plan, mod in zip(self.layout.blocks, self.blocks):
            if not plan.searchable:
                continue
            choice = next(choices)
            if isinstance(mod, nn.Identity):
                out.append(ZERO)
                continue
            live = tuple(zip(mod.kernels, mod.hidden))
            spec = block_groups(choice, plan.c_in)
            if spec is not None and spec[0] == live and spec[1] == (mod.conv_expand is not None):
                out.append(choice)
            else:
                out.append(Mixed(live))
        return replace(self.genotype, blocks=tuple(out))


def estimate_macs(genotype: MobileNetGenotype, num_classes: int, input_shape: Sequence[int]) -> int:
    """MACs from the layer shapes alone (convs + linear with bias), the same number thop's rules give."""
    g = resolve(genotype, input_shape)
    lay = layout(get_preset(g.preset), g.width, input_shape)
    cfg = lay.config
    macs = conv_macs(lay.in_channels, lay.stem_channels, 3, cfg.stem_stride, tuple(input_shape[1:]))
    choices = iter(g.blocks)
    for plan in lay.blocks:
        choice = next(choices) if plan.searchable else MBConv(3, plan.t)
        spec = block_groups(choice, plan.c_in)
        if spec is not None:
            macs += block_macs(plan.c_in, plan.c_out, plan.stride, spec[0], spec[1], plan.in_hw)
    last = lay.blocks[-1]
    macs += conv_macs(last.c_out, lay.head_channels, 1, 1, last.out_hw)
    macs += lay.head_channels * num_classes + num_classes
    return int(macs)


# ------------------------------------------------------------------------------------------------ drawing

_COLORS = {3: "#dbe9f6", 5: "#d9f0d3", 7: "#fde0c5"}
_MIXED_COLOR = "#e8dcf3"


def _block_label(plan: BlockPlan, choice: BlockChoice, spec: Any, fixed: bool) -> str:
    shape = f"{plan.c_in}→{plan.c_out}, s{plan.stride}, {plan.out_hw[0]}x{plan.out_hw[1]}"
    if spec is None:
        return f"{plan.name}  zero (skipped)\\n{shape}"
    groups, expand = spec
    if isinstance(choice, Mixed):
        kind = "mixed " + " + ".join(f"k{k}×{h}" for k, h in groups)
    else:
        kind = f"MBConv k{choice.kernel} e{choice.expansion}  (hidden {groups[0][1]})"
    tags = [t for t, on in (("fixed", fixed), ("residual", plan.keeps_shape), ("no expand", not expand)) if on]
    return f"{plan.name}  {kind}\\n{shape}" + (f"\\n{', '.join(tags)}" if tags else "")


def genotype_dot(genotype: MobileNetGenotype, input_shape: Sequence[int] | None = None) -> str:
    """Top-to-bottom chain: input, stem, one box per block (kernel mix, channels, stride, residual), head."""
    if input_shape is None:
        g0 = genotype if genotype.preset is not None else resolve(genotype)
        side = get_preset(g0.preset).input_size
        input_shape = (3, side, side)
    g = resolve(genotype, input_shape)
    lay = layout(get_preset(g.preset), g.width, input_shape)
    cfg = lay.config
    lines = [
        "digraph mobilenet {",
        '  rankdir=TB; bgcolor="transparent"; nodesep=0.2; ranksep=0.18;',
        '  node [shape=box, style="rounded,filled", fillcolor="#eeeeee", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.6];',
        f'  input [label="input {lay.in_channels}x{input_shape[1]}x{input_shape[2]}  ({cfg.name}, width {g.width:g})",'
        ' shape=plaintext, style=""];',
        f'  stem [label="stem conv 3x3 s{cfg.stem_stride} → {lay.stem_channels}\\n{lay.stem_hw[0]}x{lay.stem_hw[1]}"];',
        "  input -> stem;",
    ]
    prev = "stem"
    choices = iter(g.blocks)
    for i, plan in enumerate(lay.blocks):
        fixed = not plan.searchable
        choice = MBConv(3, plan.t) if fixed else next(choices)
        spec = block_groups(choice, plan.c_in)
        if spec is None:
            color, style = "#ffffff", '"rounded,dashed"'
        else:
            color = _COLORS[spec[0][0][0]] if len(spec[0]) == 1 else _MIXED_COLOR
            style = '"rounded,filled,bold"' if plan.keeps_shape else '"rounded,filled"'
        node = f"b{i}"
        lines.append(
            f'  {node} [label="{_block_label(plan, choice, spec, fixed)}", fillcolor="{color}", style={style}];'
        )
        lines.append(f"  {prev} -> {node};")
        prev = node
    last = lay.blocks[-1]
    lines += [
        f'  head [label="conv 1x1 → {lay.head_channels}\\n{last.out_hw[0]}x{last.out_hw[1]}"];',
        f'  fc [label="avg pool, dropout {cfg.dropout:g}, linear"];',
        f"  {prev} -> head; head -> fc;",
        "}",
    ]
    return "\n".join(lines)
