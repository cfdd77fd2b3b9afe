"""NB201 DARTS supernet training throughput and peak memory, ours against xautodl's TinyNetworkDarts.

Equal settings for both: C=16, N=5, 32x32 random inputs, batch 64, 10 classes, 2 threads, non-affine
search BN, first-order alpha step (Adam) on a second batch. Each measurement runs in its own process
so peak RSS is that configuration's alone. xautodl is optional: ``pip install --no-deps xautodl``.

    python bench/bench_supernet.py [--steps 6] [--threads 2] [--compile]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

from search_step import time_search_steps  # bench/ is on sys.path when a bench runs as a script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(impl: str):
    import torch

    if impl == "xautodl":
        from xautodl.models.cell_operations import NAS_BENCH_201
        from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts

        net = TinyNetworkDarts(16, 5, 4, 10, NAS_BENCH_201, False, False)
        return net, net.get_weights(), net.get_alphas(), False
    sys.path.insert(0, ROOT)
    from nas_core.spaces import get_space

    fused = impl != "ours-plain"
    net = get_space("nb201").build_supernet(10, (3, 32, 32), 16, 5, fused=fused)
    cl = impl in ("ours", "ours-compiled")
    if cl:
        net = net.to(memory_format=torch.channels_last)
    return net, net.weight_parameters(), net.arch_parameters(), cl


def child(impl: str, mode: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, w_params, a_params, cl = _build(impl)
    run = torch.compile(net, dynamic=False) if impl == "ours-compiled" else net
    net.train()
    fmt = (lambda t: t.contiguous(memory_format=torch.channels_last)) if cl else (lambda t: t)
    x, y = fmt(torch.randn(64, 3, 32, 32)), torch.randint(0, 10, (64,))
    xv, yv = fmt(torch.randn(64, 3, 32, 32)), torch.randint(0, 10, (64,))
    warm, dt = time_search_steps(run, w_params, a_params, (x, y), (xv, yv), steps, with_alpha=mode == "wa")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "impl": impl,
        "mode": mode,
        "images_per_s": 64 / dt,
        "ms_per_step": dt * 1000,
        "peak_rss_mb": peak_mb,
        "warmup_s": warm,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile of our supernet")
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "MODE"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.steps, args.threads)))
        return
    impls = ["xautodl", "ours-plain", "ours"] + (["ours-compiled"] if args.compile else [])
    results: dict[tuple[str, str], dict] = {}
    for mode in ("w", "wa"):
        for impl in impls:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                impl,
                mode,
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{impl:14s} {mode:3s} skipped: {last}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(impl, mode)] = r
            label = "weight" if mode == "w" else "weight+alpha"
            print(
                f"{impl:14s} {label:13s} {r['images_per_s']:7.1f} img/s {r['ms_per_step']:8.1f} ms/step  "
                f"peak RSS {r['peak_rss_mb']:7.0f} MB  (warm-up {r['warmup_s']:.1f} s)",
                flush=True,
            )
    for mode in ("w", "wa"):
        peer = results.get(("xautodl", mode))
        for impl in impls[1:]:
            ours = results.get((impl, mode))
            if peer and ours:
                print(
                    f"ratio {impl}/xautodl {mode:2s}: speed x{ours['images_per_s'] / peer['images_per_s']:.2f}, "
                    f"peak memory x{ours['peak_rss_mb'] / peer['peak_rss_mb']:.2f}"
                )


if __name__ == "__main__":
    main()
