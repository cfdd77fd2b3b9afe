"""DARTS-space supernet training throughput and peak memory, ours against xautodl's NASNetworkDARTS.

Equal settings for every row: C=16, 8 layers (N=2), 32x32 random inputs, batch 64, 10 classes,
2 threads, non-affine search BN. One step = a first-order alpha step (Adam) on a second batch, then
a weight step (SGD, clip 5) - the DARTS search step (``--step w`` times the weight step alone).
images/s counts the training batch. Each row runs in its own process so its peak RSS is its own.
xautodl is optional (``pip install --no-deps xautodl``); its row is skipped when it is missing.
Indicative figures: a couple of warm-up steps and ~5 timed steps on a shared machine.

    python bench/bench_darts_space.py [--modes darts] [--steps 5] [--threads 2] [--step wa|w] [--device cuda]

Rows: ``xautodl`` (peer; darts mode only), ``ours-plain`` (reference-style per-edge MixedOp sum),
``ours`` (the default fused supernet, NCHW), ``ours-keep`` (fused, NCHW, ``recompute=False``: keeps every
activation), ``ours-cl`` (fused, channels_last: what a search with the default ``channels_last`` runs on the
CPU), ``ours-cl-keep`` (channels_last, ``recompute=False``: what it runs on a GPU). ``--device cuda`` runs the
rows there (xautodl's too), timing after a device synchronise; peak RSS is then host memory only.
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
BATCH, C, N, SIZE, CLASSES = 64, 16, 2, 32, 10


def _build(impl: str, mode: str, device: str):
    import torch

    if impl == "xautodl":
        if mode != "darts":
            raise SystemExit(f"no xautodl peer wired for mode {mode}")
        from xautodl.models.cell_operations import DARTS_SPACE
        from xautodl.models.cell_searchs.search_model_darts_nasnet import NASNetworkDARTS

        # C, N, steps, multiplier, stem multiplier, classes, ops, affine, track_running_stats
        net = NASNetworkDARTS(C, N, 4, 4, 3, CLASSES, DARTS_SPACE, False, False).to(device)
        return net, net.get_weights(), net.get_alphas(), False
    sys.path.insert(0, ROOT)
    from nas_core.spaces import get_space

    net = (
        get_space("darts")
        .build_supernet(
            CLASSES, (3, SIZE, SIZE), C, N, mode=mode, fused=impl != "ours-plain", recompute=not impl.endswith("-keep")
        )
        .to(device)
    )
    cl = impl.startswith("ours-cl")
    if cl:
        net = net.to(memory_format=torch.channels_last)
    return net, net.weight_parameters(), net.arch_parameters(), cl


def child(impl: str, mode: str, step_kind: str, steps: int, threads: int, device: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, w_params, a_params, cl = _build(impl, mode, device)
    net.train()
    fmt = (lambda t: t.contiguous(memory_format=torch.channels_last)) if cl else (lambda t: t)
    x, y = fmt(torch.randn(BATCH, 3, SIZE, SIZE)).to(device), torch.randint(0, CLASSES, (BATCH,)).to(device)
    xv, yv = fmt(torch.randn(BATCH, 3, SIZE, SIZE)).to(device), torch.randint(0, CLASSES, (BATCH,)).to(device)
    warm, dt = time_search_steps(net, w_params, a_params, (x, y), (xv, yv), steps, with_alpha=step_kind == "wa")
    return {
        "impl": impl,
        "mode": mode,
        "step": step_kind,
        "images_per_s": BATCH / dt,
        "ms_per_step": dt * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "warmup_s": warm,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=["darts"], help="supernet modes: darts pcdarts gdas")
    ap.add_argument(
        "--impls", nargs="+", default=["xautodl", "ours-plain", "ours", "ours-keep", "ours-cl", "ours-cl-keep"]
    )
    ap.add_argument("--device", default="cpu", help="torch device of every row (cpu, cuda, cuda:1 ...)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--step", choices=["wa", "w"], default="wa", help="wa: alpha + weight step; w: weight step")
    ap.add_argument("--child", nargs=2, metavar=("IMPL", "MODE"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.step, args.steps, args.threads, args.device)))
        return
    print(
        f"DARTS space on {args.device}, C={C}, {3 * N + 2} layers, batch {BATCH}, {SIZE}x{SIZE}, "
        f"{args.threads} threads, step={'alpha+weight' if args.step == 'wa' else 'weight'}",
        flush=True,
    )
    results: dict[tuple[str, str], dict] = {}
    for mode in args.modes:
        for impl in args.impls:
            if impl == "xautodl" and mode != "darts":
                continue
            cmd = [sys.executable, __file__, "--child", impl, mode, "--steps", str(args.steps)]
            cmd += ["--threads", str(args.threads), "--step", args.step, "--device", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{mode:8s} {impl:11s} skipped: {last}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[(impl, mode)] = r
            print(
                f"{mode:8s} {impl:11s} {r['images_per_s']:7.1f} img/s {r['ms_per_step']:8.1f} ms/step  "
                f"peak RSS {r['peak_rss_mb']:7.0f} MB  (warm-up {r['warmup_s']:.1f} s)",
                flush=True,
            )
    peer = results.get(("xautodl", "darts"))
    if peer:
        for (impl, mode), r in results.items():
            if impl != "xautodl":
                print(
                    f"ratio {mode}/{impl} vs xautodl darts: speed x{r['images_per_s'] / peer['images_per_s']:.2f}, "
                    f"peak memory x{r['peak_rss_mb'] / peer['peak_rss_mb']:.2f}"
                )


if __name__ == "__main__":
    main()
