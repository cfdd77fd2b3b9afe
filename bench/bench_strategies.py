"""One-shot strategies side by side on the DARTS space: supernet search-step throughput and peak memory.

Equal settings for every row: C=16, 8 layers (N=2), 32x32 random inputs, batch 64, 10 classes,
``--threads`` threads (default 2). Each row runs the strategy's own search step (``train_step`` of
``nas_core/strategies``, built by the strategy's ``setup`` exactly as a search builds it): DARTS and
PC-DARTS an alpha step on a validation batch then the weight step, GDAS the weight step then the
alpha step (one Gumbel sample each), Single-DARTS one joint step. PC-DARTS runs past its warm-up
(``warmup_epochs=0``), so its alpha/beta step is included. images/s counts the training batch per
search step. Each row runs in its own process; memory is the process's peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, includes the ~0.3 GB Python/torch runtime) and that
peak minus the RSS just before the supernet was built ("net"). A warm-up step, then ``--steps``
timed steps: indicative figures on a shared machine.

    python bench/bench_strategies.py [--strategies darts pc-darts gdas single-darts] [--steps 3]
        [--threads 2] [--no-channels-last]

Peers (xautodl, ``pip install --no-deps xautodl``; skipped when missing): ``xautodl-darts`` and
``xautodl-gdas`` are xautodl's NASNet-skeleton search networks of the DARTS space
(``get_cell_based_tiny_net`` with ``super_type="nasnet-super"``, names ``DARTS`` and ``GDAS``, ops
``get_search_spaces("cell", "darts")``, non-affine BN without running stats), timed with the same
first-order search step (``bench/search_step.py``: Adam alpha step on a second batch, SGD weight step,
clip 5; GDAS at xautodl's default tau 10) in their own process, NCHW (their native layout). Their
skeleton with N=2 has 6 cells (2+1+1 normal, 2 reduction) where ours has 8 (2+2+2, 2): the peers
do less work per image, so ours-vs-peer ratios are conservative. xautodl has no PC-DARTS (nor
Single-DARTS) network: those rows say so. ``--repeat R`` runs every row R times, interleaved
(A/B/A/B), and reports medians.

    python bench/bench_strategies.py [--strategies darts pc-darts gdas single-darts] [--steps 3]
        [--threads 2] [--no-channels-last] [--no-peers] [--repeat 1]

Targets (issue 3): DARTS-space supernet >= 1.5x the peer's images/s and <= 0.7x its peak memory;
PC-DARTS >= 2.5x our DARTS images/s and <= 0.5x its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, C, N, SIZE, CLASSES = 64, 16, 2, 32, 10


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


#: our strategy -> xautodl's NASNet search network of the same method (name in ``nasnet_super_nets``)
PEERS = {"darts": "DARTS", "gdas": "GDAS"}


def peer_child(strategy: str, steps: int, threads: int) -> dict:
    """xautodl's search network for ``strategy``, one first-order search step per timed step, NCHW."""
    import torch

    sys.path.insert(0, os.path.join(ROOT, "bench"))
    from search_step import time_search_steps
    from xautodl.models import get_cell_based_tiny_net, get_search_spaces

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, xv = (torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(2))
    y, yv = (torch.randint(0, CLASSES, (BATCH,), generator=g) for _ in range(2))
    rss0 = _rss_mb()
    config = {
        "super_type": "nasnet-super", "name": PEERS[strategy], "C": C, "N": N, "steps": 4, "multiplier": 4,
        "stem_multiplier": 3, "num_classes": CLASSES, "space": get_search_spaces("cell", "darts"),
        "affine": False, "track_running_stats": False,
    }  # fmt: skip
    net = get_cell_based_tiny_net(config)
    net.train()
    warm, dt = time_search_steps(net, net.get_weights(), net.get_alphas(), (x, y), (xv, yv), steps)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "strategy": strategy,
        "impl": f"xautodl-{strategy}",
        "images_per_s": BATCH / dt,
        "s_per_step": dt,
        "peak_rss_mb": peak,
        "net_peak_mb": peak - rss0,
        "warmup_s": warm,
        "weights": sum(p.numel() for p in net.get_weights()),
        "cells": len(net.cells),
    }


def child(strategy: str, steps: int, threads: int, channels_last: bool) -> dict:
    import torch

    sys.path.insert(0, ROOT)
    from nas_core.config import ExperimentConfig
    from nas_core.data import Dataset
    from nas_core.reporting import MemoryReporter
    from nas_core.spaces import get_space
    from nas_core.strategies import STRATEGIES, SearchContext
    from nas_core.train import fmt

    torch.set_num_threads(threads)
    strat = STRATEGIES[strategy]
    params = {"warmup_epochs": 0} if strategy == "pc-darts" else {}
    cfg = ExperimentConfig(
        strategy=strategy, space="darts", dataset="synthetic", epochs=1, batch_size=BATCH, channels=C,
        cells_per_stage=N, final_epochs=0, channels_last=channels_last, params=params,
    ).validated()  # fmt: skip
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(2)]
    ys = [torch.randint(0, CLASSES, (BATCH,), generator=g) for _ in range(2)]
    data = Dataset("random", xs[0], ys[0], xs[1], ys[1], xs[1][:2], ys[1][:2], CLASSES)
    ctx = SearchContext(cfg, get_space("darts"), data, MemoryReporter())
    rss0 = _rss_mb()
    loop = strat.setup(ctx)
    strat.begin_epoch(loop, 0)
    loop.lr = cfg.params["w_lr"]
    x, y = fmt(xs[0], channels_last), ys[0]
    t_warm = time.perf_counter()
    strat.train_step(loop, x, y, 0)
    warm = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    for _ in range(steps):
        strat.train_step(loop, x, y, 0)
    dt = (time.perf_counter() - t0) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "strategy": strategy,
        "impl": "ours",
        "images_per_s": BATCH / dt,
        "s_per_step": dt,
        "peak_rss_mb": peak,
        "net_peak_mb": peak - rss0,
        "warmup_s": warm,
        "weights": sum(p.numel() for p in loop.w_params),
        "cells": len(loop.net.cells),
    }


def _run_row(kind: str, name: str, args: argparse.Namespace, cl: bool) -> dict | str:
    """One row in a fresh process (so its peak RSS is its own): the result, or why it failed."""
    cmd = [sys.executable, __file__, "--child", kind, name, "--steps", str(args.steps), "--threads", str(args.threads)]
    if not cl:
        cmd.append("--no-channels-last")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _median(rows: list[dict]) -> dict:
    out = dict(rows[0])
    for key in ("images_per_s", "s_per_step", "peak_rss_mb", "net_peak_mb", "warmup_s"):
        out[key] = statistics.median(r[key] for r in rows)
    out["runs"] = [round(r["images_per_s"], 2) for r in rows]
    return out


def _ratio(a: dict | None, b: dict | None, key: str) -> str:
    if not a or not b:
        return "-"
    return f"x{a[key] / max(b[key], 1e-9):.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", nargs="+", default=["darts", "pc-darts", "gdas", "single-darts"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-channels-last", action="store_true", help="NCHW instead of the default channels_last")
    ap.add_argument("--no-peers", action="store_true", help="skip xautodl's networks")
    ap.add_argument("--repeat", type=int, default=1, help="run every row this many times, interleaved; medians")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "STRATEGY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    cl = not args.no_channels_last
    if args.child:
        kind, name = args.child
        res = (
            peer_child(name, args.steps, args.threads) if kind == "peer" else child(name, args.steps, args.threads, cl)
        )
        print(json.dumps(res))
        return
    print(f"DARTS space, C={C}, {3 * N + 2} layers (xautodl N={N}: 3N cells), batch {BATCH}, {SIZE}x{SIZE}, "
          f"{args.threads} thread(s), ours {'channels_last' if cl else 'NCHW'}, peers NCHW, {args.steps} timed "
          f"steps, {args.repeat} run(s) per row", flush=True)  # fmt: skip
    rows = [("ours", name) for name in args.strategies]
    if not args.no_peers:
        rows += [("peer", name) for name in args.strategies if name in PEERS]
    runs: dict[tuple[str, str], list[dict]] = {row: [] for row in rows}
    for rep in range(args.repeat):
        for kind, name in rows:
            r = _run_row(kind, name, args, cl)
            label = f"{name} ({'ours' if kind == 'ours' else 'xautodl'})"
            if isinstance(r, str):
                print(f"  run {rep + 1}: {label:24s} failed: {r}", flush=True)
                continue
            runs[(kind, name)].append(r)
            print(f"  run {rep + 1}: {label:24s} {r['images_per_s']:6.2f} img/s  peak RSS {r['peak_rss_mb']:6.0f} MB  "
                  f"(net {r['net_peak_mb']:6.0f} MB)  warm-up {r['warmup_s']:.1f} s", flush=True)  # fmt: skip
    res = {row: _median(v) for row, v in runs.items() if v}
    base = res.get(("ours", "darts"))
    head = (f"{'strategy':13s} {'impl':14s} {'cells':>5s} {'img/s':>7s} {'peak RSS MB':>11s} {'net MB':>7s}  "
            f"{'vs peer: speed':>14s} {'memory':>7s}  {'vs our darts: speed':>19s} {'memory':>7s}")  # fmt: skip
    print("\n" + head + "\n" + "-" * len(head))
    for name in args.strategies:
        for kind in ("ours", "peer"):
            r = res.get((kind, name))
            if r is None:
                if kind == "peer" and name not in PEERS and not args.no_peers:
                    print(f"{name:13s} {'xautodl':14s} (xautodl has no {name} network of the DARTS space)")
                continue
            peer = res.get(("peer", name)) if kind == "ours" else None
            ours_vs_base = kind == "ours" and name != "darts"
            vs_base = base if ours_vs_base else None
            print(
                f"{name:13s} {r['impl']:14s} {r['cells']:5d} {r['images_per_s']:7.2f} {r['peak_rss_mb']:11.0f} "
                f"{r['net_peak_mb']:7.0f}  {_ratio(r, peer, 'images_per_s'):>14s} "
                f"{_ratio(r, peer, 'peak_rss_mb'):>7s}  "
                f"{_ratio(r, vs_base, 'images_per_s'):>19s} {_ratio(r, vs_base, 'peak_rss_mb'):>7s}"
            )
    print("speed ratios: images/s of the row over the other; memory ratios: peak RSS of the row over the other. "
          f"Medians of {args.repeat} run(s); per-run images/s: "
          + "; ".join(f"{r['impl']} {r['strategy']} {r['runs']}" for r in res.values()))  # fmt: skip


if __name__ == "__main__":
    main()
