"""Search and final-training wall time of a few strategies on each device (``device`` setting), same host.

    python bench/bench_device.py [--devices cpu cuda] [--threads N] [--per-class 100]
        [--cases darts gdas random proxyless] [--epochs 1] [--nchw]

Runs on a temporary CIFAR-10-layout folder of random 3x32x32 images (the cost depends on the shapes, not
the pixels; nothing is downloaded), ``--per-class`` images per class, at NB201's search-network size
(C=16, N=5) for the NB201 cases, an 8-cell DARTS supernet (C=16, N=2) for GDAS and the MobileNetV2-style
supernet for ProxylessNAS (by MACs; ``--cases proxyless``). Prints one row per
(case, device): search seconds, final-training seconds, and the speed-up against the first device.
``--nchw`` runs with ``channels_last`` off (the config's default is on: oneDNN's CPU convs are faster so; whether
cuDNN's float32 channels-last convs cost a GPU run time is what this flag is for).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from bench_tenas import write_cifar_like  # noqa: E402

from nas_core.config import ExperimentConfig  # noqa: E402
from nas_core.devices import device_text, resolve_device  # noqa: E402
from nas_core.pipeline import run_experiment  # noqa: E402
from nas_core.reporting import MemoryReporter  # noqa: E402

#: name -> (strategy, space, config fields, params)
CASES: dict[str, tuple[str, str, dict, dict]] = {
    "darts": ("darts", "nb201", {"channels": 16, "cells_per_stage": 5}, {}),
    "gdas": ("gdas", "darts", {"channels": 16, "cells_per_stage": 2}, {}),
    "random": ("random", "nb201", {"channels": 16, "cells_per_stage": 5}, {"trials": 2, "workers": 1}),
    # ProxylessNAS by MACs (no latency table to measure); on a GPU its step was the slow one (test_device.py)
    "proxyless": ("proxylessnas", "mobilenet", {}, {"resource": "macs"}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all)")
    ap.add_argument("--per-class", type=int, default=100, help="random images per class (10 classes)")
    ap.add_argument("--epochs", type=int, default=1, help="search epochs (and final-training epochs)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--nchw", action="store_true", help="channels_last off (default: the config's, on)")
    args = ap.parse_args()
    layout = "NCHW" if args.nchw else "channels_last"
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), {os.cpu_count()} CPU(s), {layout}")
    for d in args.devices:
        print(f"  {d}: {device_text(resolve_device(d))}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = write_cifar_like(Path(tmp) / "data", per_class=args.per_class)
        for name in args.cases:
            strategy, space, fields, params = CASES[name]
            base = None
            for device in args.devices:
                cfg = ExperimentConfig(
                    strategy=strategy, space=space, dataset=spec, epochs=args.epochs, final_epochs=args.epochs,
                    final_channels=16, batch_size=64, threads=args.threads, device=device, params=params,
                    channels_last=not args.nchw, **fields,
                )  # fmt: skip
                rep = MemoryReporter(workdir=Path(tmp) / f"{name}-{device}")
                t = time.perf_counter()
                res = run_experiment(cfg, rep)
                wall = time.perf_counter() - t
                base = base or res.search_seconds + res.train_seconds
                speed = base / (res.search_seconds + res.train_seconds)
                rows.append((name, device, res.search_seconds, res.train_seconds, wall, speed))
                print(f"{name:8s} {device:6s} search {res.search_seconds:7.1f} s  final {res.train_seconds:6.1f} s  "
                      f"whole run {wall:6.1f} s  ({speed:.1f}x the first device)", flush=True)  # fmt: skip
    print("\n| case | device | search s | final training s | whole run s | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, device, s, f, w, x in rows:
        print(f"| {name} | {device} | {s:.1f} | {f:.1f} | {w:.1f} | {x:.1f}x |")


if __name__ == "__main__":
    main()
