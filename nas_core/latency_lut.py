"""Latency lookup table for ProxylessNAS: per-block latencies measured on this machine, built once, reused.

ProxylessNAS makes latency differentiable with a lookup table: E[LAT] = fixed + sum_blocks sum_ops
p_op * LUT(op), where LUT(op) is the latency of that MBConv at that block's input shape, channels, stride
and shortcut (``zero`` costs 0). Every candidate of every searchable block and the fixed layers (stem, the
fixed first stage, the 1x1 head conv, pool + classifier) are measured on this machine at batch 1, with
warm-up, as the median of the fastest passes (:func:`nas_core.metrics.fast_median`, as the final network's
latency is measured), threads fixed. By default each entry is timed inside a whole network
(:func:`measure_in_network`): one network per candidate op, a timer around every block. Timing each module
alone in a tight loop (``method="isolated"``, the classic table) predicted whole networks 12-30% too low
on a quiet 16-core Xeon (``bench/bench_proxyless.py``), because a module repeated alone runs hotter than
the same module between its neighbours; the in-network table predicted 23 of 24 digits/CIFAR networks
within 10%. The candidate networks are timed in :data:`IN_NETWORK_ROUNDS` interleaved rounds spread over at least
``min_seconds``, so other load on a shared machine, which comes in phases of seconds, cannot cover all of
one candidate's passes. A table also records how far the machine's own speed moved between the first and
the second half of its measurement (``drift_pct``): where it moved more than :data:`UNSTEADY_DRIFT_PCT`,
the machine, not the table, bounds how well it predicts, and the log and the Monitor say so.

A table is keyed by (preset, width, input shape, classes, threads, device name) and stored as JSON in a
folder the caller passes (the engine does not know the runs folder; :func:`default_lut_dir` is
``$NAS_RUNS_DIR/latency_luts``, default ``nas_runs/latency_luts``). :func:`load_or_build_lut` reads it when
it exists and measures it otherwise. The same file also holds the MACs of every entry (exact, from the
layer shapes), so a MACs-aware search uses the same machinery with :func:`macs_table`.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_core.errors import GenotypeError
from nas_core.metrics import (
    LATENCY_STATISTIC,
    device_name,
    fast_median,
    fastest,
    measure_latency,
    steady_allocator,
)
from nas_core.spaces.mobilenet_arch import (
    OPS,
    MBConv,
    MobileNetGenotype,
    Zero,
    block_groups,
    get_preset,
    layout,
    parse_genotype,
    resolve,
)
from nas_core.spaces.mobilenet_blocks import InvertedResidual, activation, block_macs, conv_macs
from nas_core.spaces.mobilenet_proxyless import ZERO_OP, block_ops, make_candidate

LUT_FORMAT = 1
#: How entries are timed: inside whole networks (default) or each module alone (the classic table).
LUT_METHODS = ("network", "isolated")
#: Rounds over the candidate networks in :func:`measure_in_network` (repeats are split between them).
IN_NETWORK_ROUNDS = 10
#: Least time (s) a table's measurement is spread over by default: several phases of another load's.
LUT_MIN_SECONDS = 20.0
#: Measurements of a fresh table, at most, while each one comes out unsteady (the steadiest is kept).
LUT_ATTEMPTS = 3
#: A drift above this (%) means the machine's speed moved too much for a table held to 10%.
UNSTEADY_DRIFT_PCT = 5.0
#: The six MBConv candidates (the table's ops besides zero).
CANDIDATE_OPS = tuple(op for op in OPS if op != "zero")


def default_lut_dir() -> Path:
    """``$NAS_RUNS_DIR/latency_luts`` (default ``nas_runs/latency_luts``): where a strategy stores its tables
    when not told (the engine must not import ``storage``, which owns the runs folder)."""
    return Path(os.environ.get("NAS_RUNS_DIR", "nas_runs")) / "latency_luts"


@dataclass
class LatencyLUT:
    """Per-block, per-op latency (ms) and MACs of one skeleton on one machine, plus the fixed layers."""

    preset: str
    width: float
    input_shape: tuple[int, int, int]
    num_classes: int
    threads: int
    device: str
    #: fixed layers in network order: name -> latency (ms) / MACs
    fixed: dict[str, float]
    fixed_macs: dict[str, int]
    #: searchable block -> op -> latency (ms) / MACs; ``zero`` where allowed, at 0
    blocks: dict[str, dict[str, float]]
    macs: dict[str, dict[str, int]]
    #: searchable block -> {"input": [c, h, w], "c_out", "stride", "residual"}
    shapes: dict[str, dict[str, Any]]
    warmup: int = 10
    repeats: int = 50
    build_seconds: float = 0.0
    method: str = "network"
    #: how malloc was set while measuring (:func:`nas_core.metrics.steady_allocator`); older tables: "default"
    allocator: str = "default"
    #: how timed passes were summarised (:data:`nas_core.metrics.LATENCY_STATISTIC`); older tables: "median"
    statistic: str = "median"
    #: how far the machine's speed moved while the table was measured: the largest change (%) of a candidate
    #: network's latency between the first and second half of the rounds; None for the isolated method, one
    #: round, or tables measured before it was recorded
    drift_pct: float | None = None
    created: float = field(default_factory=time.time)
    path: Path | None = None
    reused: bool = False

    @property
    def key(self) -> dict[str, Any]:
        return lut_key(
            self.preset,
            self.width,
            self.input_shape,
            self.num_classes,
            self.threads,
            self.device,
            self.method,
            self.allocator,
            self.statistic,
        )

    def steadiness(self) -> str:
        """One sentence on how steady the machine was while the table was measured ("" when not known)."""
        if self.drift_pct is None:
            return ""
        text = f"the machine's speed moved {self.drift_pct:.1f}% between the two halves of the measurement"
        if self.unsteady:
            where = f" (delete {self.path} to measure it again)" if self.path else ""
            text += f": too unsteady for predictions within 10%; measure it on a quieter machine{where}"
        return text

    @property
    def unsteady(self) -> bool:
        """The machine moved too much while measuring for this table to be held to 10%."""
        return self.drift_pct is not None and self.drift_pct > UNSTEADY_DRIFT_PCT

    @property
    def fixed_ms(self) -> float:
        return float(sum(self.fixed.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": LUT_FORMAT,
            "key": self.key,
            "fixed": self.fixed,
            "fixed_macs": self.fixed_macs,
            "blocks": self.blocks,
            "macs": self.macs,
            "shapes": self.shapes,
            "warmup": self.warmup,
            "repeats": self.repeats,
            "build_seconds": self.build_seconds,
            "drift_pct": self.drift_pct,
            "created": self.created,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: Path | None = None) -> LatencyLUT:
        if doc.get("format") != LUT_FORMAT:
            raise ValueError(f"latency table format {doc.get('format')!r} is not {LUT_FORMAT}")
        k = doc["key"]
        order = [n for n in get_preset(k["preset"]).block_names() if n in doc["blocks"]]  # network order
        if sorted(order) != sorted(doc["blocks"]):
            raise ValueError("latency table blocks do not match the preset's block names")
        return cls(
            preset=k["preset"],
            width=float(k["width"]),
            input_shape=tuple(int(v) for v in k["input_shape"]),  # type: ignore[arg-type]
            num_classes=int(k["num_classes"]),
            threads=int(k["threads"]),
            device=str(k["device"]),
            method=str(k.get("method", "isolated")),
            allocator=str(k.get("allocator", "default")),
            statistic=str(k.get("statistic", "median")),
            fixed={str(n): float(v) for n, v in doc["fixed"].items()},
            fixed_macs={str(n): int(v) for n, v in doc["fixed_macs"].items()},
            blocks={b: {o: float(v) for o, v in doc["blocks"][b].items()} for b in order},
            macs={b: {o: int(v) for o, v in doc["macs"][b].items()} for b in order},
            shapes=doc["shapes"],
            warmup=int(doc.get("warmup", 0)),
            repeats=int(doc.get("repeats", 0)),
            build_seconds=float(doc.get("build_seconds", 0.0)),
            drift_pct=None if doc.get("drift_pct") is None else float(doc["drift_pct"]),
            created=float(doc.get("created", 0.0)),
            path=path,
            reused=path is not None,
        )


def lut_key(
    preset: str,
    width: float,
    input_shape: Sequence[int],
    num_classes: int,
    threads: int,
    device: str,
    method: str = "network",
    allocator: str = "default",
    statistic: str = "median",
) -> dict[str, Any]:
    """What a measured table depends on: the skeleton, the machine (threads, device name), the method, how
    malloc was set (a table timed with glibc's self-adjusting thresholds is not reused once they are fixed)
    and how passes were summarised (a plain-median table is not reused by a fast-median measurement)."""
    return {
        "method": method,
        "allocator": allocator,
        "statistic": statistic,
        "preset": preset,
        "width": float(width),
        "input_shape": [int(v) for v in input_shape],
        "num_classes": int(num_classes),
        "threads": int(threads),
        "device": device,
    }


def lut_path(lut_dir: str | Path, key: dict[str, Any]) -> Path:
    """A readable file name plus a hash of the whole key (device names are long)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    shape = "x".join(str(v) for v in key["input_shape"])
    name = (
        f"{key['preset']}_w{key['width']:g}_{shape}_c{key['num_classes']}_t{key['threads']}_{key['method']}_"
        f"{digest}.json"
    )
    return Path(lut_dir) / name


# ------------------------------------------------------------------------------------------- measuring


class _Classifier(nn.Module):
    """Pool, flatten, linear: the network's tail after the head conv (dropout is identity at inference)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


def _skeleton(preset: str, width: float, input_shape: Sequence[int], num_classes: int) -> list[dict[str, Any]]:
    """Every entry to measure: fixed layers and (block, op) candidates, with module factory, input, MACs."""
    cfg = get_preset(preset)
    lay = layout(cfg, width, input_shape)
    c0, h0, w0 = (int(v) for v in input_shape)
    out: list[dict[str, Any]] = []

    def stem() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(c0, lay.stem_channels, 3, cfg.stem_stride, 1, bias=False),
            nn.BatchNorm2d(lay.stem_channels),
            activation(cfg.act),
        )

    out.append(
        {
            "fixed": "stem",
            "make": stem,
            "input": (c0, h0, w0),
            "macs": conv_macs(c0, lay.stem_channels, 3, cfg.stem_stride, (h0, w0)),
        }
    )
    for plan in lay.blocks:
        shape = (plan.c_in, *plan.in_hw)
        if not plan.searchable:
            groups, expand = block_groups(MBConv(3, plan.t), plan.c_in)  # type: ignore[misc]

            def fixed_block(p=plan, g=groups, e=expand) -> nn.Module:
                return InvertedResidual(p.c_in, p.c_out, p.stride, g, e, cfg.act)

            macs = block_macs(plan.c_in, plan.c_out, plan.stride, groups, expand, plan.in_hw)
            out.append({"fixed": plan.name, "make": fixed_block, "input": shape, "macs": macs})
            continue
        for op in block_ops(plan.keeps_shape):
            entry = {"block": plan.name, "op": op, "input": shape, "plan": plan}
            if op == ZERO_OP:
                entry.update(make=None, macs=0)
            else:
                groups, expand = block_groups(MBConv(int(op[2]), int(op.split("_e")[1])), plan.c_in)  # type: ignore[misc]

                def cand(p=plan, o=op) -> nn.Module:
                    mod = make_candidate(o, p.c_in, p.c_out, p.stride, cfg.act)
                    mod.use_residual = p.keeps_shape  # measured as the stand-alone network runs it
                    return mod

                entry.update(make=cand, macs=block_macs(plan.c_in, plan.c_out, plan.stride, groups, expand, plan.in_hw))
            out.append(entry)
    last = lay.blocks[-1]
    head_shape = (last.c_out, *last.out_hw)

    def head() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(last.c_out, lay.head_channels, 1, bias=False),
            nn.BatchNorm2d(lay.head_channels),
            activation(cfg.act),
        )

    out.append(
        {
            "fixed": "head",
            "make": head,
            "input": head_shape,
            "macs": conv_macs(last.c_out, lay.head_channels, 1, 1, last.out_hw),
        }
    )
    out.append(
        {
            "fixed": "classifier",
            "make": lambda: _Classifier(lay.head_channels, num_classes),
            "input": (lay.head_channels, *last.out_hw),
            "macs": lay.head_channels * num_classes + num_classes,
        }
    )
    return out


def _signature(entry: dict[str, Any]) -> str:
    """Entries with the same module and input measure once (e.g. the repeated blocks of a stage)."""
    if "plan" in entry:
        p = entry["plan"]
        return f"{entry['op']}|{p.c_in}x{p.in_hw[0]}x{p.in_hw[1]}->{p.c_out}|s{p.stride}|r{int(p.keeps_shape)}"
    return f"{entry['fixed']}|{entry['input']}"


def drift_pct(rounds: Sequence[Sequence[float]]) -> float | None:
    """How far (%) one network's latency (:func:`nas_core.metrics.fast_median`) moved between the passes of
    the first and of the second half of its measurement ``rounds`` (pass times per round); None when a half
    has no passes."""
    half = len(rounds) // 2
    first = [t for r in rounds[:half] for t in r]
    second = [t for r in rounds[half:] for t in r]
    if not first or not second:
        return None
    a, b = fast_median(first), fast_median(second)
    return 100.0 * abs(a - b) / min(a, b)


@dataclass(frozen=True)
class InNetworkTimes:
    """What :func:`measure_in_network` measured: ms per fixed layer name and per (block, op), and how far the
    machine's speed moved meanwhile (largest :func:`drift_pct` of a candidate network; None with one round)."""

    entries: dict[Any, float]
    drift_pct: float | None


def measure_in_network(
    preset: str,
    width: float,
    input_shape: Sequence[int],
    num_classes: int,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
    min_seconds: float = 0.0,
) -> InNetworkTimes:
    """Ms of every fixed layer and every (block, op), each timed inside a whole network.

    For each MBConv candidate one network uses it in every searchable block; its forward pass is run with a
    timer around the stem, every block, the head and the classifier tail (pool, flatten, linear), so each
    block is timed where it runs in a real network: after its predecessor, with caches and the allocator in
    the state a network leaves them. Modules timed alone in a tight loop run hotter than that, so a table
    of isolated timings misses part of the network's latency (``bench/bench_proxyless.py`` shows by how
    much). Each network runs its forward passes back to back, as the final network's latency is measured,
    in :data:`IN_NETWORK_ROUNDS` rounds over the networks (two warm-up passes after each switch), each
    round's share of ``repeats`` and of ``min_seconds`` long, so no phase of other load covers all of one
    candidate's passes. An entry is the median, over the fastest passes of its network
    (:data:`nas_core.metrics.FAST_FRACTION` of them, by whole-pass time), of that layer's time: the
    per-layer reading of the statistic the final network is measured with.
    """
    from nas_core.spaces.mobilenet_arch import MobileNetNetwork

    steady_allocator()
    n_blocks = len(get_preset(preset).block_names())
    nets = {}
    for op in CANDIDATE_OPS:
        k, e = (int(v) for v in op[2:].split("_e"))
        g = MobileNetGenotype((MBConv(k, e),) * n_blocks, preset, float(width))
        nets[op] = MobileNetNetwork(g, num_classes, input_shape).to(device).eval()
    lay = next(iter(nets.values())).layout
    x = torch.randn(1, *input_shape, device=device)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    clock = time.perf_counter

    def timed(net: nn.Module) -> list[float]:
        out = []
        sync()
        t = clock()
        h = net.stem(x)
        sync()
        t1 = clock()
        out.append(t1 - t)
        for blk in net.blocks:
            t = t1
            h = blk(h)
            sync()
            t1 = clock()
            out.append(t1 - t)
        t = t1
        h = net.head(h)
        sync()
        t1 = clock()
        out.append(t1 - t)
        t = t1
        net.classifier(net.dropout(net.pool(h).flatten(1)))
        sync()
        out.append(clock() - t1)
        return out

    rounds = max(1, min(IN_NETWORK_ROUNDS, repeats))
    share = min_seconds / (rounds * len(nets))
    rounds_of: dict[str, list[list[list[float]]]] = {op: [] for op in nets}  # per op, per round, per pass
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for r in range(rounds):
                count = repeats // rounds + (r < repeats % rounds)
                for op, net in nets.items():
                    for _ in range(warmup if r == 0 else min(warmup, 2)):
                        timed(net)
                    passes: list[list[float]] = []
                    start = clock()
                    while len(passes) < count or clock() - start < share:
                        passes.append(timed(net))
                    rounds_of[op].append(passes)
    finally:
        torch.set_num_threads(old_threads)
    # per op, its fastest passes by whole-pass time, and how far its whole-pass latency drifted
    fast = {op: fastest([p for r in per_round for p in r], key=sum) for op, per_round in rounds_of.items()}
    drifts = [drift_pct([[sum(p) for p in r] for r in per_round]) for per_round in rounds_of.values()]
    names = ["stem", *(p.name for p in lay.blocks), "head", "classifier"]
    searchable = {p.name for p in lay.searchable}
    result: dict[Any, float] = {}
    for i, name in enumerate(names):
        if name in searchable:
            for op in nets:
                result[(name, op)] = 1000.0 * statistics.median(s[i] for s in fast[op])
        else:  # the fixed layers are the same in every network: pool all candidates' fastest passes
            result[name] = 1000.0 * statistics.median(s[i] for op in nets for s in fast[op])
    known = [v for v in drifts if v is not None]
    return InNetworkTimes(result, max(known) if known else None)


def build_lut(
    preset: str,
    width: float,
    input_shape: Sequence[int],
    num_classes: int,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
    max_seconds: float = 2.0,
    method: str = "network",
    min_seconds: float = LUT_MIN_SECONDS,
) -> LatencyLUT:
    """Measure every entry; seeded weights, eval mode, batch 1, spread over at least ``min_seconds``.

    ``method="network"`` (default) times each block inside a whole network (:func:`measure_in_network`);
    ``"isolated"`` times each module alone with :func:`measure_latency` (identical module + input once), the
    classic lookup table, kept for comparison (``bench/bench_proxyless.py``).
    """
    if method not in LUT_METHODS:
        raise ValueError(f"unknown latency table method {method!r}; use one of {LUT_METHODS}")
    t0 = time.perf_counter()
    entries = _skeleton(preset, width, input_shape, num_classes)
    in_net = (
        measure_in_network(preset, width, input_shape, num_classes, threads, warmup, repeats, device, min_seconds)
        if method == "network"
        else None
    )
    times = in_net.entries if in_net is not None else None
    cache: dict[str, float] = {}
    fixed: dict[str, float] = {}
    fixed_macs: dict[str, int] = {}
    blocks: dict[str, dict[str, float]] = {}
    macs: dict[str, dict[str, int]] = {}
    shapes: dict[str, dict[str, Any]] = {}
    rng_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(0)
        for entry in entries:
            if entry["make"] is None:
                ms = 0.0
            elif times is not None:
                ms = times[entry["fixed"]] if "fixed" in entry else times[(entry["block"], entry["op"])]
            else:
                sig = _signature(entry)
                if sig not in cache:
                    res = measure_latency(
                        entry["make"](),
                        tuple(entry["input"]),
                        threads=threads,
                        warmup=warmup,
                        repeats=repeats,
                        device=device,
                        max_seconds=max_seconds,
                        min_seconds=min_seconds / len(entries),
                    )
                    cache[sig] = float(res["latency_ms"])
                ms = cache[sig]
            if "fixed" in entry:
                fixed[entry["fixed"]] = ms
                fixed_macs[entry["fixed"]] = int(entry["macs"])
            else:
                name, p = entry["block"], entry["plan"]
                blocks.setdefault(name, {})[entry["op"]] = ms
                macs.setdefault(name, {})[entry["op"]] = int(entry["macs"])
                shapes[name] = {
                    "input": list(entry["input"]),
                    "c_out": p.c_out,
                    "stride": p.stride,
                    "residual": p.keeps_shape,
                }
    finally:
        torch.random.set_rng_state(rng_state)
    return LatencyLUT(
        preset,
        float(width),
        tuple(int(v) for v in input_shape),
        int(num_classes),
        int(threads),  # type: ignore[arg-type]
        device_name(device),
        fixed,
        fixed_macs,
        blocks,
        macs,
        shapes,
        warmup,
        repeats,
        build_seconds=time.perf_counter() - t0,
        method=method,
        allocator=steady_allocator(),
        statistic=LATENCY_STATISTIC,
        drift_pct=in_net.drift_pct if in_net is not None else None,
    )


def load_or_build_lut(
    lut_dir: str | Path,
    preset: str,
    width: float,
    input_shape: Sequence[int],
    num_classes: int,
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    method: str = "network",
    min_seconds: float = LUT_MIN_SECONDS,
    attempts: int = LUT_ATTEMPTS,
) -> LatencyLUT:
    """The stored table for this skeleton and machine, or a freshly measured one saved there for next time.

    A fresh table measured while the machine's speed moved (:attr:`LatencyLUT.unsteady`) is measured again,
    up to ``attempts`` times in all, and the steadiest one is kept: on a shared machine a long phase of other
    load can cover one measurement, rarely three in a row (``bench/bench_proxyless.py``: a table measured
    inside one such phase predicted its networks 43% too high, and said so with a drift of 29%).
    """
    key = lut_key(
        preset, width, input_shape, num_classes, threads, device_name(device), method, steady_allocator(),
        LATENCY_STATISTIC,
    )  # fmt: skip
    path = lut_path(lut_dir, key)
    if path.is_file():
        try:
            lut = LatencyLUT.from_json(json.loads(path.read_text()), path)
            if lut.key == key:
                if log:
                    note = lut.steadiness()
                    note = f"; {note}" if note else ""
                    log(f"latency table reused: {path} (measured in {lut.build_seconds:.1f} s{note})")
                return lut
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            if log:
                log(f"latency table {path} unreadable ({exc}); measuring it again")
    t0 = time.perf_counter()
    lut: LatencyLUT | None = None
    for attempt in range(1, max(1, attempts) + 1):
        got = build_lut(preset, width, input_shape, num_classes, threads, warmup, repeats, device,
                        method=method, min_seconds=min_seconds)  # fmt: skip
        if lut is None or (got.drift_pct or 0.0) < (lut.drift_pct or 0.0):
            lut = got
        if not lut.unsteady or attempt == attempts:
            break
        if log:
            log(
                f"latency table measurement {attempt} of {attempts}: the machine's speed moved {got.drift_pct:.1f}% "
                f"between its two halves (more than {UNSTEADY_DRIFT_PCT:g}%); measuring it again"
            )
    assert lut is not None
    lut.build_seconds = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(lut.to_json(), indent=1, sort_keys=True))
    tmp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one
    lut.path = path
    if log:
        n = sum(len(v) for v in lut.blocks.values())
        note = lut.steadiness()
        note = f"; {note}" if note else ""
        log(
            f"latency table measured: {n} block candidates + {len(lut.fixed)} fixed layers in "
            f"{lut.build_seconds:.1f} s ({method}, {threads} thread(s), {lut.device}), saved to {path}{note}"
        )
    return lut


# ------------------------------------------------------------------------------ expectations, predictions


@dataclass(frozen=True)
class CostTable:
    """One resource as (blocks x OPS) costs plus the fixed part: what the search's loss differentiates."""

    metric: str  # "latency_ms" | "macs"
    blocks: tuple[str, ...]
    fixed: float
    table: torch.Tensor  # (blocks x OPS); ops a block does not allow cost 0 (their probability is 0)

    def expected(self, probs: torch.Tensor) -> torch.Tensor:
        """fixed + sum_blocks sum_ops p_op * cost(op); ``probs`` is (blocks x OPS), differentiable."""
        return self.fixed + (probs.double() * self.table.to(probs.device)).sum()  # float64: ms and MACs add up

    def predict(self, ops: Sequence[str]) -> float:
        """The cost of one network: fixed + the chosen op's cost in every block."""
        if len(ops) != len(self.blocks):
            raise GenotypeError(f"{len(ops)} block choices for {len(self.blocks)} searchable blocks")
        return float(self.fixed + sum(float(self.table[i, OPS.index(op)]) for i, op in enumerate(ops)))


def _table(blocks: dict[str, dict[str, float]], fixed: float, metric: str) -> CostTable:
    names = tuple(blocks)
    t = torch.zeros(len(names), len(OPS), dtype=torch.float64)
    for i, name in enumerate(names):
        for op, v in blocks[name].items():
            t[i, OPS.index(op)] = float(v)
    return CostTable(metric, names, float(fixed), t)


def latency_table(lut: LatencyLUT) -> CostTable:
    return _table(lut.blocks, lut.fixed_ms, "latency_ms")


def macs_table(preset: str, width: float, input_shape: Sequence[int], num_classes: int) -> CostTable:
    """Exact MACs per block and op from the layer shapes (nothing measured)."""
    entries = _skeleton(preset, width, input_shape, num_classes)
    blocks: dict[str, dict[str, float]] = {}
    fixed = 0
    for e in entries:
        if "fixed" in e:
            fixed += int(e["macs"])
        else:
            blocks.setdefault(e["block"], {})[e["op"]] = float(e["macs"])
    return _table(blocks, fixed, "macs")


def _genotype_ops(lut_preset: str, lut_width: float, lut_shape: Sequence[int], genotype: Any) -> list[str]:
    g = parse_genotype(genotype) if isinstance(genotype, str) else genotype
    if not isinstance(g, MobileNetGenotype):
        raise GenotypeError(f"expected a mobilenet genotype, got {type(genotype).__name__}")
    g = resolve(g, lut_shape)
    if g.preset != lut_preset or abs(g.width - lut_width) > 1e-9:
        raise GenotypeError(
            f"genotype is preset {g.preset!r} width {g.width:g}; the latency table is for "
            f"{lut_preset!r} width {lut_width:g}"
        )
    ops = []
    for i, b in enumerate(g.blocks or ()):
        if isinstance(b, Zero):
            ops.append(ZERO_OP)
        elif isinstance(b, MBConv) and b.name in OPS:
            ops.append(b.name)
        else:
            raise GenotypeError(f"block {i + 1}: {b.name} is not one of ProxylessNAS's candidates {OPS}")
    return ops


def predict_latency(lut: LatencyLUT, genotype: Any) -> float:
    """Predicted latency (ms) of a stand-alone genotype: the fixed layers plus its chosen op in every block."""
    ops = _genotype_ops(lut.preset, lut.width, lut.input_shape, genotype)
    return latency_table(lut).predict(ops)


def predict_macs(lut: LatencyLUT, genotype: Any) -> int:
    """MACs of a stand-alone genotype from the table (equals ``estimate_macs``)."""
    ops = _genotype_ops(lut.preset, lut.width, lut.input_shape, genotype)
    return int(sum(lut.fixed_macs.values()) + sum(lut.macs[name][op] for name, op in zip(lut.blocks, ops)))


def lut_frame(lut: LatencyLUT) -> Any:
    """The table as rows for the UI: block, op, input shape, latency_ms (and MACs, stride, c_out)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    fixed_shapes = {
        e["fixed"]: e["input"]
        for e in _skeleton(lut.preset, lut.width, lut.input_shape, lut.num_classes)
        if "fixed" in e
    }
    for name, ms in lut.fixed.items():
        shape = "x".join(str(v) for v in fixed_shapes.get(name, ()))
        rows.append(
            {
                "block": name,
                "op": "fixed",
                "input_shape": shape,
                "latency_ms": ms,
                "macs": lut.fixed_macs.get(name, 0),
                "stride": None,
                "c_out": None,
            }
        )
    for name, ops in lut.blocks.items():
        sh = lut.shapes[name]
        shape = "x".join(str(v) for v in sh["input"])
        for op in OPS:
            if op in ops:
                rows.append(
                    {
                        "block": name,
                        "op": op,
                        "input_shape": shape,
                        "latency_ms": ops[op],
                        "macs": lut.macs[name][op],
                        "stride": sh["stride"],
                        "c_out": sh["c_out"],
                    }
                )
    return pd.DataFrame(rows, columns=["block", "op", "input_shape", "latency_ms", "macs", "stride", "c_out"])
