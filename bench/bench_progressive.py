"""Pareto-aware progressive search against random search and evolution at the same number of trials.

    python bench/bench_progressive.py [--beam 8] [--epochs 3] [--seeds 0 1] [--dataset digits]
        [--channels 8] [--cells 2] [--cost macs] [--threads 2]

Each strategy's search runs alone (no final training) on the NB201 space with the same trial budget,
4 + 2 x beam, the same data and the same seeds. Per run it prints the wall time, the best validation accuracy,
the hypervolume of the trials' (validation accuracy, cost) front (reference point: accuracy 0 and 1.1 x the
costliest cell of the space at this size, so runs are comparable), the size of that front, and for
progressive search the predictor's Kendall tau per stage and the time spent outside training (costing and
predicting). Means over the seeds close each strategy's block.
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
from nas_core.spaces.nb201 import EDGE_PAIRS, NB201Genotype  # noqa: E402
from nas_core.strategies import STRATEGIES, SearchContext  # noqa: E402
from nas_core.strategies.growers import EdgeCosts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beam", type=int, default=8)
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
    trials = 4 + 2 * args.beam
    space = get_space("nb201")
    print(f"NB201 on {args.dataset}: {trials} trials x {args.epochs} epoch(s) each, C={args.channels}, "
          f"N={args.cells}, cost {args.cost}; {args.threads} thread(s), torch {torch.__version__}")  # fmt: skip
    rows = []
    for name in args.strategies:
        for seed in args.seeds:
            params: dict = {"beam": args.beam, "cost": args.cost} if name == "progressive" else {"trials": trials}
            if name == "evolution":
                params |= {"population": max(2, trials // 2), "sample_size": 3}
            cfg = ExperimentConfig(
                strategy=name, space="nb201", dataset=args.dataset, epochs=args.epochs, channels=args.channels,
                cells_per_stage=args.cells, threads=args.threads, seed=seed, params=params,
            ).validated()  # fmt: skip
            data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction)
            with tempfile.TemporaryDirectory() as tmp:
                rep = MemoryReporter(workdir=Path(tmp))
                t0 = time.perf_counter()
                out = STRATEGIES[name].search(SearchContext(cfg, space, data, rep))
                secs = time.perf_counter() - t0
            done = pd.DataFrame([d for kind, _, d in rep.events if kind == "trial"])
            objectives = [("val_acc", "max"), (args.cost, "min")]
            costs = EdgeCosts.count(space, data.num_classes, data.input_shape, args.channels, args.cells)
            worst = costs.of(NB201Genotype(("nor_conv_3x3",) * len(EDGE_PAIRS)), args.cost)
            hv = hypervolume_2d(done, objectives, [0.0, 1.1 * worst]) / (1.1 * worst)
            found = [re.search(r"measured accuracy ([-+.\d]+)", msg) for _, _, msg in rep.logs]
            taus = [float(m.group(1)) for m in found if m]
            overhead = secs - float(done["seconds"].sum())
            rows.append({"strategy": name, "seed": seed, "seconds": secs, "best": out.accuracy, "hv": hv,
                         "front": int(pareto_mask(done, objectives).sum()), "overhead": overhead})  # fmt: skip
            tau_text = f", predictor tau per stage {', '.join(f'{t:+.2f}' for t in taus)}" if taus else ""
            print(f"  {name:11s} seed {seed}: {secs:6.1f} s ({overhead:4.1f} s outside training), best val acc "
                  f"{out.accuracy:.4f}, hypervolume {hv:.4f}, {rows[-1]['front']} on the front{tau_text}")  # fmt: skip
    table = pd.DataFrame(rows).groupby("strategy", sort=False)[["seconds", "best", "hv", "front"]].mean()
    print("means over seeds:")
    print(table.round(4).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
