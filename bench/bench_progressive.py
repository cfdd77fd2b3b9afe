"""Pareto-aware progressive search against random search and evolution at the same number of trials.

    python bench/bench_progressive.py [--space nb201|darts] [--beam 8] [--first-stage 0] [--epochs 3]
        [--seeds 0 1] [--dataset digits] [--channels 8] [--cells 2] [--cost macs] [--threads 2]

Each strategy's search runs alone (no final training) on the chosen space with progressive search's trial
budget (first stage + (stages - 1) x beam), the same data and the same seeds. Per run it prints the wall time,
the time spent outside training (progressive: costing and predicting), the best validation accuracy, the size of
the trials' (validation accuracy, cost) front and, for progressive search, the predictor's Kendall tau per
stage. The closing table gives means over the seeds, with the hypervolume of each run's front (reference point:
accuracy 0 and 1.1 x the costliest trial of any run, so runs compare).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from nas_core.config import ExperimentConfig  # noqa: E402
from nas_core.data import load_dataset  # noqa: E402
from nas_core.pareto import hypervolume_2d, pareto_mask  # noqa: E402
from nas_core.reporting import MemoryReporter  # noqa: E402
from nas_core.spaces import get_space  # noqa: E402
from nas_core.strategies import STRATEGIES, SearchContext  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="nb201", choices=["nb201", "darts"])
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--first-stage", type=int, default=0, help="progressive: one-node cells drawn (0 = all)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cells", type=int, default=2)
    ap.add_argument("--cost", default="macs", choices=["macs", "params"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--strategies", nargs="+", default=["progressive", "random", "evolution"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = get_space(args.space)
    base = {"strategy": "progressive", "space": args.space, "dataset": args.dataset, "epochs": args.epochs,
            "channels": args.channels, "cells_per_stage": args.cells, "threads": args.threads}  # fmt: skip
    progressive = {"beam": args.beam, "cost": args.cost, "first_stage": args.first_stage}
    trials = STRATEGIES["progressive"].total_trials(ExperimentConfig(**base, params=progressive).validated())
    print(f"{space.label} on {args.dataset}: {trials} trials x {args.epochs} epoch(s) each, C={args.channels}, "
          f"N={args.cells}, cost {args.cost}; {args.threads} thread(s), torch {torch.__version__}")  # fmt: skip
    rows, fronts = [], []
    objectives = [("val_acc", "max"), (args.cost, "min")]
    for name in args.strategies:
        for seed in args.seeds:
            params: dict = progressive if name == "progressive" else {"trials": trials}
            if name == "evolution":
                params = params | {"population": max(2, trials // 2), "sample_size": 3}
            cfg = ExperimentConfig(**base | {"strategy": name, "seed": seed}, params=params).validated()
            data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction)
            with tempfile.TemporaryDirectory() as tmp:
                rep = MemoryReporter(workdir=Path(tmp))
                t0 = time.perf_counter()
                out = STRATEGIES[name].search(SearchContext(cfg, space, data, rep))
                secs = time.perf_counter() - t0
            done = pd.DataFrame([d for kind, _, d in rep.events if kind == "trial"])
            fronts.append(done)
            found = [re.search(r"measured accuracy ([-+.\d]+)", msg) for _, _, msg in rep.logs]
            taus = [float(m.group(1)) for m in found if m]
            overhead = secs - float(done["seconds"].sum())
            rows.append({"strategy": name, "seed": seed, "seconds": secs, "best": out.accuracy,
                         "front": int(pareto_mask(done, objectives).sum()), "overhead": overhead})  # fmt: skip
            tau_text = f", predictor tau per stage {', '.join(f'{t:+.2f}' for t in taus)}" if taus else ""
            print(f"  {name:11s} seed {seed}: {secs:6.1f} s ({overhead:4.1f} s outside training), best val acc "
                  f"{out.accuracy:.4f}, {rows[-1]['front']} on the front{tau_text}")  # fmt: skip
    # One reference point for every run: accuracy 0 and 1.1 x the costliest trial any run trained.
    worst = 1.1 * max(float(d[args.cost].max()) for d in fronts)
    for row, done in zip(rows, fronts):
        row["hv"] = hypervolume_2d(done, objectives, [0.0, worst]) / worst
    table = pd.DataFrame(rows).groupby("strategy", sort=False)[["seconds", "best", "hv", "front"]].mean()
    print(f"means over seeds (hypervolume of val acc x {args.cost} up to {worst:,.0f}, normalised):")
    print(table.round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
