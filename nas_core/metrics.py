"""Parameters, MACs in the NAS papers' convention, and measured latency of a stand-alone network.

MACs ("FLOPs" in the NAS papers): multiply-accumulates of Conv2d and Linear layers only, the linear
bias included; BN, pooling and activations count 0. thop counts more than that by default, so it
gets custom rules here, and every other module type it knows is counted as 0.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    """All learnable parameters except an auxiliary head's, as the DARTS reference counts them.

    Parameters under a module whose name starts with ``auxiliary`` (the DARTS ``auxiliary_head``) are
    training-only and excluded; networks without one (NB201) count every learnable parameter.
    """
    return int(
        sum(
            p.numel()
            for name, p in model.named_parameters()
            if p.requires_grad and not any(part.startswith("auxiliary") for part in name.split(".")[:-1])
        )
    )


def _conv_macs(m: nn.Conv2d, x: tuple[torch.Tensor], y: torch.Tensor) -> None:
    kh, kw = m.kernel_size
    per_out = (m.in_channels // m.groups) * kh * kw
    m.total_ops += torch.tensor([float(y.numel() * per_out)], dtype=torch.float64)


def _linear_macs(m: nn.Linear, x: tuple[torch.Tensor], y: torch.Tensor) -> None:
    rows = y.numel() // m.out_features
    bias = m.out_features if m.bias is not None else 0
    m.total_ops += torch.tensor([float(rows * (m.in_features * m.out_features + bias))], dtype=torch.float64)


def _zero(m: nn.Module, x: Any, y: Any) -> None:
    return None


def _custom_rules() -> dict[type, Any]:
    from thop.profile import register_hooks

    rules: dict[type, Any] = {t: _zero for t in register_hooks}
    rules[nn.Conv2d] = _conv_macs
    rules[nn.Linear] = _linear_macs
    return rules


def count_macs(model: nn.Module, input_shape: tuple[int, int, int], *, keep_model: bool = True) -> int:
    """MACs of one image (batch 1) through ``model`` in eval mode, paper convention, via thop.

    thop leaves counters on the modules it profiles, so it profiles a copy; ``keep_model=False`` profiles
    ``model`` itself (a network built only to be counted, then dropped), skipping the copy.
    """
    from thop import profile

    m = (copy.deepcopy(model) if keep_model else model).cpu().float().eval()
    x = torch.zeros(1, *input_shape)
    macs, _params = profile(m, inputs=(x,), custom_ops=_custom_rules(), verbose=False)
    return int(round(float(macs)))


def device_name(device: torch.device | str = "cpu") -> str:
    """A short human-readable name of the device latency was measured on."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    proc = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    proc = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU ({proc})"


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Once latency has been measured, blocks up to this size come from the heap (glibc's ceiling for the setting) ...
STEADY_MMAP_THRESHOLD = 32 << 20
#: ... and up to this much free memory at the heap's top is kept rather than handed back to the system.
STEADY_TRIM_THRESHOLD = 256 << 20
_allocator_mode: str | None = None


def steady_allocator() -> str:
    """Fix glibc malloc's thresholds for the rest of the process, so timed forward passes do not page-fault.

    With glibc's default, self-adjusting thresholds, the activation buffers of a large network (megabytes at
    224x224) are sometimes mmap'ed or trimmed off the heap and handed back to the system after each forward
    pass, and the next pass faults every page in again: measured here on the ImageNet-size MobileNet preset,
    0 to 2,700 page faults per forward (7-12 ms of a 50 ms pass), depending on what the process allocated
    before. A latency table built in one allocation history and a network timed in another then disagree
    by more than the 10% the table is held to. Fixed thresholds keep those buffers on the heap: no faults,
    and the same timing whatever ran before. It is applied once, on the first latency measurement; returns
    ``"glibc-steady"``, or ``"default"`` where the C library is not glibc (nothing changed).
    """
    global _allocator_mode
    if _allocator_mode is None:
        _allocator_mode = "default"
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            import ctypes

            try:
                libc = ctypes.CDLL(None)
                ok = libc.mallopt(_M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD) == 1
                ok = libc.mallopt(_M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD) == 1 and ok
            except (OSError, AttributeError):
                ok = False
            if ok:
                _allocator_mode = "glibc-steady"
    return _allocator_mode


#: Latency is the median of this fastest fraction of the timed passes (see :func:`fast_median`).
FAST_FRACTION = 0.1
#: How :func:`measure_latency` and the latency tables summarise timed passes (stored in a table's key).
LATENCY_STATISTIC = f"fast{round(100 * FAST_FRACTION)}-median"


def fast_median(times: Sequence[float], fraction: float = FAST_FRACTION) -> float:
    """Median of the fastest ``fraction`` of ``times``: the machine's own speed, without other load's.

    On a shared machine other load (another tenant's job on the same cores, caches or memory bus) slows
    passes down in phases of seconds: measured here, the same ImageNet-size network ran at 36-40 ms for a few
    seconds, then at 50-54 ms for a few, then fast again. A plain median is whichever phase held most of its
    passes, so a latency table built in one phase and a network timed in another disagreed by 30-40%. The
    fastest passes are the ones no other load landed on; their median (not their minimum, which one lucky
    pass sets) is what the network costs on this machine, reproducible as long as the measurement spans some
    unloaded time. On a quiet machine it is within a few percent of the plain median.
    """
    if not times:
        raise ValueError("no timed passes")
    return statistics.median(fastest(times, fraction))


def fastest(items: Sequence[Any], fraction: float = FAST_FRACTION, key: Any = None) -> list[Any]:
    """The fastest ``fraction`` of ``items`` (at least one), fastest first: the passes :func:`fast_median`
    takes; ``key`` gives an item's time (e.g. ``sum`` of a pass's per-layer times)."""
    return sorted(items, key=key)[: max(1, round(fraction * len(items)))]


def time_forward(
    model: nn.Module,
    x: torch.Tensor,
    warmup: int = 10,
    repeats: int = 50,
    min_seconds: float = 0.0,
    max_seconds: float = 10.0,
) -> list[float]:
    """Seconds of each timed forward pass of ``model`` (as it is: mode, device, threads) on ``x``.

    At least ``repeats`` passes and at least ``min_seconds`` of them, so a short measurement can be spread
    over enough time to meet some unloaded time; at most ``max_seconds`` once 5 passes are in (large
    networks). Runs under ``inference_mode``; CUDA is synchronised around every pass.
    """
    cuda = x.device.type == "cuda"
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        start = time.perf_counter()
        deadline = start + max_seconds
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            times.append(t1 - t0)
            if t1 > deadline and len(times) >= 5:
                break
    return times


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    threads: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    device: str = "cpu",
    max_seconds: float = 10.0,
    min_seconds: float = 0.0,
) -> dict[str, Any]:
    """Latency of one batch-1 forward pass after warm-up, with the thread count fixed: the median of the
    fastest passes (:func:`fast_median`), with the plain median beside it as ``latency_median_ms``.

    A copy of the model is timed in eval mode. Threads are set for the measurement and restored after, so
    latencies taken in one process with the same setting are comparable; ``max_seconds`` bounds the repeats
    for large networks, ``min_seconds`` spreads small ones over time. The allocator is made steady first
    (:func:`steady_allocator`).
    """
    steady_allocator()
    m = copy.deepcopy(model).to(device).eval()
    x = torch.randn(1, *input_shape, device=device)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = time_forward(m, x, warmup, repeats, min_seconds=min_seconds, max_seconds=max_seconds)
    finally:
        torch.set_num_threads(old_threads)
    return {
        "latency_ms": fast_median(times) * 1000.0,
        "latency_median_ms": statistics.median(times) * 1000.0,
        "latency_threads": threads,
        "latency_device": device_name(device),
        "latency_repeats": len(times),
    }


#: Least time (s) a network's latency is measured over when ``NAS_LATENCY_SECONDS`` is not set.
LATENCY_SECONDS = 3.0


def latency_seconds() -> float:
    """``NAS_LATENCY_SECONDS`` (default :data:`LATENCY_SECONDS`): the least time a result's latency is measured
    over, so its fastest passes can come from some unloaded time on a shared machine (0: just the repeats)."""
    raw = os.environ.get("NAS_LATENCY_SECONDS", "").strip()
    if not raw:
        return LATENCY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 600.0:
        raise ValueError(f"NAS_LATENCY_SECONDS={raw!r} is not a number of seconds between 0 and 600")
    return value


def profile_network(
    model: nn.Module, input_shape: tuple[int, int, int], threads: int = 1, min_seconds: float | None = None
) -> dict[str, Any]:
    """Params, MACs and latency of a stand-alone network, the three numbers on every Pareto chart; the latency
    is measured over at least ``min_seconds`` (default :func:`latency_seconds`)."""
    out: dict[str, Any] = {"params": count_params(model), "macs": count_macs(model, input_shape)}
    seconds = latency_seconds() if min_seconds is None else min_seconds
    out.update(measure_latency(model, input_shape, threads=threads, min_seconds=seconds))
    return out


def default_threads() -> int:
    """Threads a job uses when not told: what the machine offers, at most 2 (latency stays comparable)."""
    return max(1, min(2, os.cpu_count() or 1))
