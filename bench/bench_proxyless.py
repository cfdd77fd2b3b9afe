"""ProxylessNAS's latency lookup table against measured latency of whole networks.

    python bench/bench_proxyless.py [--presets digits cifar-search] [--random 8] [--threads 1]
        [--repeats 50] [--rounds 10] [--seconds 30] [--lut-seconds 20] [--search-epochs 2] [--lut-dir DIR]
        [--methods network isolated]

For every preset: build the lookup table (in a temporary folder unless ``--lut-dir``; its build time is
printed), then take networks of that preset - the genotypes derived by short ProxylessNAS searches on digits
at two latency targets (digits preset only, ``--search-epochs`` > 0), the all-smallest / all-largest /
all-skipped extremes and ``--random`` uniformly drawn genotypes - and compare the table's prediction
(fixed layers + the chosen op of every block) with the measured batch-1 latency of the stand-alone network
with the statistic the pipeline's :func:`nas_core.metrics.measure_latency` uses (the median of the fastest
10% of passes, :func:`nas_core.metrics.fast_median`). The networks are timed in ``--rounds`` interleaved
rounds spread over at least ``--seconds`` (each round gives each network its share of ``--repeats`` and of
the time), so a phase of other load on a shared machine cannot cover all of one network's passes.
Target (issue 5, nn-Meter's bar): >= 90% of the networks within 10%. Both table methods are compared:
``network`` (each block timed inside a whole network, what the strategy uses) and ``isolated`` (each module
timed alone, the classic table).

It then prints how steady the machine was: how far each network's latency moved between the first and the
second half of its rounds. Where that nears 10% (a machine whose unloaded speed itself moves: throttling,
frequency scaling), the comparison says nothing about the table.
The last lines also fit one constant offset (measured - predicted, the per-network overhead the per-block
table cannot see) with leave-one-out, to show how much a calibrated fixed term would change.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nas_core.latency_lut import (  # noqa: E402
    LUT_MIN_SECONDS,
    UNSTEADY_DRIFT_PCT,
    drift_pct,
    load_or_build_lut,
    predict_latency,
)
from nas_core.metrics import device_name, fast_median, steady_allocator, time_forward  # noqa: E402
from nas_core.spaces import get_space  # noqa: E402
from nas_core.spaces.mobilenet_arch import PRESETS, layout  # noqa: E402
from nas_core.spaces.mobilenet_proxyless import block_ops  # noqa: E402

SP = get_space("mobilenet")
SHAPES = {"digits": ((1, 8, 8), 10), "cifar-search": ((3, 32, 32), 10), "cifar": ((3, 32, 32), 10),
          "imagenet-search": ((3, 224, 224), 1000), "imagenet": ((3, 224, 224), 1000)}  # fmt: skip


def genotype_text(preset: str, ops: list[str]) -> str:
    return json.dumps({"preset": preset, "blocks": ops})


def candidates(preset: str, n_random: int, rng: random.Random) -> list[tuple[str, list[str]]]:
    """(kind, ops) networks of a preset: extremes and uniform random draws over each block's ops."""
    shape, _ = SHAPES[preset]
    plans = layout(PRESETS[preset], PRESETS[preset].width, shape).searchable
    allowed = [block_ops(p.keeps_shape) for p in plans]
    nets = [
        ("all mb3_e3", ["mb3_e3"] * len(plans)),
        ("all mb7_e6", ["mb7_e6"] * len(plans)),
        ("zero where allowed, else mb3_e3", [ops[-1] if ops[-1] == "zero" else "mb3_e3" for ops in allowed]),
    ]
    nets += [(f"random {i + 1}", [rng.choice(ops) for ops in allowed]) for i in range(n_random)]
    return nets


def derived_by_search(epochs: int, targets: list[float], lut_dir: Path, threads: int) -> list[tuple[str, list[str]]]:
    """Genotypes a short ProxylessNAS search on digits derives at the given latency targets (ms)."""
    from nas_core.config import ExperimentConfig
    from nas_core.data import load_dataset
    from nas_core.reporting import MemoryReporter
    from nas_core.strategies import STRATEGIES, SearchContext

    out = []
    for target in targets:
        cfg = ExperimentConfig(
            strategy="proxylessnas", space="mobilenet", dataset="digits", epochs=epochs, final_epochs=0,
            threads=threads, params={"target_latency_ms": target, "lut_dir": str(lut_dir), "arch_every": 1,
                                     "arch_lr": 0.02, "lut_threads": threads},
        ).validated()  # fmt: skip
        data = load_dataset(cfg.dataset, cfg.seed, cfg.val_fraction, cfg.test_fraction)
        res = STRATEGIES["proxylessnas"].search(SearchContext(cfg, SP, data, MemoryReporter()))
        out.append((f"derived (target {target:g} ms)", [b.name for b in SP.parse(res.genotype).blocks]))
    return out


def measure_all(models: list[torch.nn.Module], shape: tuple[int, int, int], threads: int, repeats: int,
                rounds: int, seconds: float) -> list[list[list[float]]]:  # fmt: skip
    """Each network's timed passes (ms), per interleaved round: 10 warm-up passes before its first round, 2
    after each switch of network, then its share of ``repeats`` and of ``seconds``."""
    steady_allocator()
    torch.set_num_threads(threads)  # as measure_latency does; a search in between must not change it
    x = torch.randn(1, *shape)
    share = seconds / (rounds * len(models))
    per_round: list[list[list[float]]] = [[] for _ in models]
    for r in range(rounds):
        for i, m in enumerate(models):
            times = time_forward(m.eval(), x, warmup=10 if r == 0 else 2, repeats=max(1, repeats // rounds),
                                 min_seconds=share)  # fmt: skip
            per_round[i].append([1000.0 * t for t in times])
    return per_round


def steadiness(per_round: list[list[list[float]]]) -> tuple[float, float]:
    """Median and largest drift (%) of the networks' latency between the first and second half of their
    rounds: how far the machine's own speed moved while it measured. A table cannot be checked to 10% on a
    machine that moves about as much."""
    drifts = [drift_pct(rs) for rs in per_round]
    known = [v for v in drifts if v is not None]
    return (statistics.median(known), max(known)) if known else (0.0, 0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["digits", "cifar-search"], choices=list(SHAPES))
    ap.add_argument("--random", type=int, default=8, help="random genotypes per preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=50, help="timed repeats per measurement (table and networks)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved measurement rounds per network")
    ap.add_argument("--seconds", type=float, default=30.0,
                    help="least time the networks of a preset are measured over, in all")  # fmt: skip
    ap.add_argument("--lut-seconds", type=float, default=LUT_MIN_SECONDS,
                    help="least time a table's measurement is spread over")  # fmt: skip
    ap.add_argument("--search-epochs", type=int, default=2, help="0 = no derived networks from a search")
    ap.add_argument("--lut-dir", type=Path, default=None, help="reuse/store tables here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=["network", "isolated"], choices=["network", "isolated"],
                    help="table methods compared (the first one is what the searches use here)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory()
    lut_dir = args.lut_dir or Path(tmp.name)
    print(f"device: {device_name('cpu')}, {args.threads} thread(s), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")  # fmt: skip
    all_rows: list[tuple[str, str, dict[str, float], float]] = []
    spreads: dict[str, tuple[float, float]] = {}
    for preset in args.presets:
        shape, classes = SHAPES[preset]
        luts = {}
        for method in args.methods:
            t0 = time.perf_counter()
            luts[method] = load_or_build_lut(
                lut_dir, preset, 1.0, shape, classes, threads=args.threads, repeats=args.repeats,
                log=lambda m: print("  " + m), method=method, min_seconds=args.lut_seconds,
            )  # fmt: skip
            print(f"{preset}: {method} table ready in {time.perf_counter() - t0:.1f} s; fixed layers "
                  f"{luts[method].fixed_ms:.3f} ms")  # fmt: skip
        lut = luts[args.methods[0]]
        nets = candidates(preset, args.random, rng)
        if preset == "digits" and args.search_epochs > 0:
            lo = lut.fixed_ms + sum(min(v.values()) for v in lut.blocks.values())
            hi = lut.fixed_ms + sum(max(v.values()) for v in lut.blocks.values())
            targets = [round(lo + 0.1 * (hi - lo), 3), round(hi, 3)]  # tight and loose
            nets = derived_by_search(args.search_epochs, targets, lut_dir, args.threads) + nets
        torch.manual_seed(args.seed)
        models = [SP.build_network(genotype_text(preset, ops), classes, shape) for _, ops in nets]
        per_round = measure_all(models, shape, args.threads, args.repeats, args.rounds, args.seconds)
        spreads[preset] = steadiness(per_round)
        measured = [fast_median([t for r in rs for t in r]) for rs in per_round]
        for (kind, ops), ms in zip(nets, measured):
            preds = {m: predict_latency(t, genotype_text(preset, ops)) for m, t in luts.items()}
            all_rows.append((preset, kind, preds, ms))
    head = "".join(f" {m + ' ms':>12s} {'err %':>7s}" for m in args.methods)
    print(f"\n{'preset':15s} {'network':34s} {'measured ms':>12s}{head}")
    for preset, kind, preds, ms in all_rows:
        cols = "".join(f" {preds[m]:12.3f} {100 * (preds[m] - ms) / ms:+7.1f}" for m in args.methods)
        print(f"{preset:15s} {kind:34s} {ms:12.3f}{cols}")
    for method in args.methods:
        rows = [(p, k, pr[method], ms, 100.0 * (pr[method] - ms) / ms) for p, k, pr, ms in all_rows]
        summary(method, rows, args.presets)
    print(
        "\nmachine steadiness (drift of each network's latency between the halves of its rounds; needs to be "
        "well under 10%):"
    )
    for preset, (med, worst) in spreads.items():
        verdict = "steady enough" if worst <= UNSTEADY_DRIFT_PCT else "too unsteady for a 10% check"
        print(f"  {preset}: median {med:.1f}%, largest {worst:.1f}% -> {verdict} (bar: {UNSTEADY_DRIFT_PCT:g}%)")
    tmp.cleanup()
    return 0


def summary(method: str, rows: list[tuple[str, str, float, float, float]], presets: list[str]) -> None:
    """Within-10% counts, mean errors, and what one fitted constant offset would give."""
    print(f"\n[{method} table]")
    within = sum(abs(r[4]) <= 10 for r in rows)
    print(f"\nwithin 10%: {within}/{len(rows)} ({100 * within / len(rows):.0f}%; target >= 90%); "
          f"mean |error| {statistics.mean(abs(r[4]) for r in rows):.1f}%, "
          f"max |error| {max(abs(r[4]) for r in rows):.1f}%")  # fmt: skip
    for preset in presets:
        sub = [r for r in rows if r[0] == preset]
        w = sum(abs(r[4]) <= 10 for r in sub)
        print(f"  {preset}: {w}/{len(sub)} within 10%, mean error {statistics.mean(r[4] for r in sub):+.1f}% "
              f"(negative = table predicts too little)")  # fmt: skip
        if len(sub) > 2:  # leave-one-out constant offset: what a calibrated fixed term would give
            loo = []
            for i, r in enumerate(sub):
                off = statistics.mean(s[3] - s[2] for j, s in enumerate(sub) if j != i)
                loo.append(100.0 * (r[2] + off - r[3]) / r[3])
            w2 = sum(abs(e) <= 10 for e in loo)
            print(f"    with a fitted constant offset ({statistics.mean(s[3] - s[2] for s in sub):+.3f} ms, "
                  f"leave-one-out): {w2}/{len(sub)} within 10%, mean |error| "
                  f"{statistics.mean(abs(e) for e in loo):.1f}%")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
