"""The default Launch settings end to end: search throughput, per-epoch time, peak memory, wall time.

Runs the same pipeline the worker runs (in memory, nothing stored) for each strategy given.

    python bench/bench_default_run.py [--strategies darts single-darts darts-2nd] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nas_core import viz  # noqa: E402
from nas_core.config import ExperimentConfig, apply_overrides  # noqa: E402
from nas_core.data import load_dataset  # noqa: E402
from nas_core.pipeline import run_experiment  # noqa: E402
from nas_core.reporting import MemoryReporter  # noqa: E402
from nas_core.spaces import get_space  # noqa: E402


def param_free_trace(rep: MemoryReporter, space: str) -> str:
    """Share of alpha weight on parameter-free ops at the first, middle and last snapshot."""
    import pandas as pd

    df = pd.DataFrame(rep.alpha_rows, columns=["step", "epoch", "cell", "edge", "op", "weight"])
    share = viz.param_free_share_df(df, get_space(space).param_free_ops).groupby("step")["share"].sum()
    picks = [share.index[0], share.index[len(share) // 2], share.index[-1]]
    return ", ".join(f"step {s}: {share[s]:.3f}" for s in picks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", nargs="+", default=["darts"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    for name in args.strategies:
        cfg = ExperimentConfig.from_dict(apply_overrides({"strategy": name}, args.set))
        data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction)
        with tempfile.TemporaryDirectory() as tmp:
            rep = MemoryReporter(workdir=Path(tmp))
            t0 = time.perf_counter()
            res = run_experiment(cfg, rep)
            wall = time.perf_counter() - t0
        search = [m["seconds"] for phase, _, m in rep.epochs if phase == "search"]
        train = [m["seconds"] for phase, _, m in rep.epochs if phase == "train"]
        n = len(data.y_train)
        print(
            f"== {name} on {cfg.dataset} ({data.summary()}), epochs {cfg.epochs}, final_epochs {cfg.final_epochs}, "
            f"C={cfg.channels}, N={cfg.cells_per_stage}, batch {cfg.batch_size}, threads {cfg.threads}"
        )
        print(
            f"  search epoch: median {statistics.median(search):.2f} s -> {n / statistics.median(search):.0f} "
            f"train images/s (bi-level strategies also draw a val batch per step)"
        )
        if train:
            print(f"  final-training epoch: median {statistics.median(train):.2f} s")
        print(f"  search {res.search_seconds:.1f} s, final training {res.train_seconds:.1f} s, end to end {wall:.1f} s")
        print(
            f"  result: {res.genotype} accuracy {res.accuracy:.4f} ({res.accuracy_kind}), supernet val "
            f"{res.supernet_accuracy:.4f}, {res.params:,} params, {res.macs / 1e6:.3f} M MACs, "
            f"{res.latency_ms:.3f} ms"
        )
        pf_ops = get_space(cfg.space).param_free_ops
        ops = list(get_space(cfg.space).parse(res.genotype).ops)
        n_pf = sum(op in pf_ops for op in ops)
        print(
            f"  parameter-free share of alpha weight: {param_free_trace(rep, cfg.space)}; "
            f"derived cell: {n_pf}/{len(ops)} edges parameter-free"
        )
        print(f"  peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)


if __name__ == "__main__":
    main()
