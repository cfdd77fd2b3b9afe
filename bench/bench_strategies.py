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

Targets (issue 3): PC-DARTS >= 2.5x our DARTS images/s and <= 0.5x its peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, C, N, SIZE, CLASSES = 64, 16, 2, 32, 10


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


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
        "images_per_s": BATCH / dt,
        "s_per_step": dt,
        "peak_rss_mb": peak,
        "net_peak_mb": peak - rss0,
        "warmup_s": warm,
        "weights": sum(p.numel() for p in loop.w_params),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", nargs="+", default=["darts", "pc-darts", "gdas", "single-darts"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-channels-last", action="store_true", help="NCHW instead of the default channels_last")
    ap.add_argument("--child", metavar="STRATEGY")
    args = ap.parse_args()
    cl = not args.no_channels_last
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.threads, cl)))
        return
    print(f"DARTS space, C={C}, {3 * N + 2} layers, batch {BATCH}, {SIZE}x{SIZE}, {args.threads} thread(s), "
          f"{'channels_last' if cl else 'NCHW'}, {args.steps} timed steps")  # fmt: skip
    results: dict[str, dict] = {}
    for name in args.strategies:
        cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--threads", str(args.threads)]
        if not cl:
            cmd.append("--no-channels-last")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            print(f"{name:13s} failed: {last}", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[name] = r
        print(
            f"{name:13s} {r['images_per_s']:7.1f} img/s {r['s_per_step']:7.2f} s/step  "
            f"peak RSS {r['peak_rss_mb']:6.0f} MB  (net {r['net_peak_mb']:6.0f} MB)  "
            f"{r['weights']:,} weights  warm-up step {r['warmup_s']:.1f} s",
            flush=True,
        )
    base = results.get("darts")
    if base:
        for name, r in results.items():
            if name == "darts":
                continue
            print(
                f"{name}/darts: speed x{r['images_per_s'] / base['images_per_s']:.2f}, "
                f"peak RSS x{r['peak_rss_mb'] / base['peak_rss_mb']:.2f}, "
                f"net peak x{r['net_peak_mb'] / max(base['net_peak_mb'], 1e-9):.2f}"
            )


if __name__ == "__main__":
    main()
