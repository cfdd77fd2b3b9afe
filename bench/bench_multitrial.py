"""Multi-trial search throughput: trials per minute in this process, on a pool of worker processes, or on Ray.

    python bench/bench_multitrial.py [--strategy random] [--space nb201] [--trials 8] [--epochs 2]
        [--workers 1 2] [--executor process ray] [--dataset digits] [--channels 8] [--cells 2]

Runs the strategy's search alone (no final training) once per executor and worker count, same seed, and
prints the search's wall time, trials per minute, the speed-up over the first run and the best validation
accuracy found. A pool worker or Ray task runs one torch thread; in process, torch uses ``--threads``
(default: all cores), so the comparison is "all cores inside each trial" against "one core per trial,
trials side by side". The pool's start-up (spawn, torch import) and Ray's (a local instance on 127.0.0.1,
or the cluster at ``RAY_ADDRESS``; its workers, their torch import) count in the wall time, as in a search.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nas_core.config import ExperimentConfig  # noqa: E402
from nas_core.data import load_dataset  # noqa: E402
from nas_core.reporting import MemoryReporter  # noqa: E402
from nas_core.spaces import get_space  # noqa: E402
from nas_core.strategies import STRATEGIES, SearchContext  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategy", default="random", choices=["random", "evolution"])
    ap.add_argument("--space", default="nb201", choices=["nb201", "darts", "mobilenet"])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--executor", nargs="+", default=["process"], choices=["process", "ray"],
                    help="where trials run (each one given is benchmarked in turn; ray: pip install ray)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in process")
    args = ap.parse_args()
    print(f"{args.strategy} on {args.space}, {args.dataset}: {args.trials} trials x {args.epochs} epoch(s), "
          f"C={args.channels}, N={args.cells}; {os.cpu_count()} CPUs, torch {torch.__version__}")  # fmt: skip
    base = None
    for executor, workers in [(e, w) for e in args.executor for w in args.workers]:
        params = {"trials": args.trials, "workers": workers, "executor": executor}
        if args.strategy == "evolution":
            params |= {"population": max(2, args.trials // 2), "sample_size": 2}
        cfg = ExperimentConfig(
            strategy=args.strategy, space=args.space, dataset=args.dataset, epochs=args.epochs,
            channels=args.channels, cells_per_stage=args.cells, threads=args.threads, params=params,
        ).validated()  # fmt: skip
        torch.set_num_threads(args.threads)
        data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction)
        with tempfile.TemporaryDirectory() as tmp:
            rep = MemoryReporter(workdir=Path(tmp))
            ctx = SearchContext(cfg, get_space(cfg.space), data, rep)
            t0 = time.perf_counter()
            out = STRATEGIES[cfg.strategy].search(ctx)
            secs = time.perf_counter() - t0
        base = base or secs
        print(f"  {executor:7s} workers {workers}: {secs:7.1f} s, {60 * args.trials / secs:6.1f} trials/min, "
              f"x{base / secs:.2f} vs the first, best val acc {out.accuracy:.4f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
