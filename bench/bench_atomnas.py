"""AtomNAS cost and accuracy of the MACs target.

1. Step time against MACs as the network shrinks: the digits supernet (and with ``--cifar`` the cifar-search
   supernet at batch 16) is shrunk for real to 100/75/50/25% of its atom MACs (atoms of least |gamma| first,
   random gammas), and a full training step (forward, backward, RMSProp step) is timed at each size.
2. Final MACs against the target: full AtomNAS runs on digits for each ``--targets`` (M MACs), with the
   controller finding rho; prints the final MACs, the gap to the target, the MACs the penalty alone reached
   (before the final trim), the MACs the trim removed, test accuracy and wall time, after one unpenalised run
   (same optimiser, gamma init and epochs) for the accuracy to compare with. Targets are fractions of the supernet.

    python bench/bench_atomnas.py [--threads 1] [--epochs 15] [--targets 0.4 0.7] [--params JSON] [--cifar]
                                  [--no-runs] [--no-baseline] [--no-shrink-table]

Step times are medians of ``--reps`` timed steps after two warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nas_core.atomnas_shrink import AtomState, count_parameters, network_macs, shrink_network  # noqa: E402
from nas_core.config import ExperimentConfig  # noqa: E402
from nas_core.pipeline import run_experiment  # noqa: E402
from nas_core.reporting import MemoryReporter  # noqa: E402
from nas_core.spaces import get_space  # noqa: E402
from nas_core.strategies.atomnas import RMSpropTF, _param_groups  # noqa: E402


def step_ms(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, reps: int) -> float:
    net.train()
    times = []
    for r in range(reps + 2):
        t0 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if r >= 2:
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def bench_shrink(preset: str, shape: tuple[int, int, int], batch: int, reps: int) -> None:
    torch.manual_seed(0)
    sp = get_space("mobilenet")
    net = sp.build_supernet(10, shape, style="atomnas", preset=preset)
    net = net.to(memory_format=torch.channels_last)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.0, 1.0)
    opt = RMSpropTF(_param_groups(net, 1e-5), lr=1e-3)
    atoms = AtomState.from_network(net, 0.9)
    for i in atoms.ema:
        atoms.ema[i] = net.blocks[i].bn_dw.weight.detach().abs().clone()
    x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    full = network_macs(net, 10, shape)
    atom_total = sum(float(v.sum()) for v in atoms.macs.values())
    fixed = full - atom_total
    print(f"\n{preset} supernet {shape}, batch {batch}: {full / 1e6:.3f} M MACs ({fixed / 1e6:.3f} M outside atoms)")
    print(f"{'atoms kept':>10} {'MACs (M)':>10} {'params':>10} {'ms/step':>9} {'MACs ratio':>11} {'time ratio':>11}")
    base_ms = None
    for keep in (1.0, 0.75, 0.5, 0.25):
        target = fixed + keep * atom_total
        now = network_macs(net, 10, shape)
        if now > target:
            shrink_network(net, atoms.lowest_atoms_mask(net, now - target), opt, atoms, torch.channels_last)
        macs = network_macs(net, 10, shape)
        ms = step_ms(net, opt, x, y, reps)
        base_ms = base_ms or ms
        print(f"{keep:>10.0%} {macs / 1e6:>10.3f} {count_parameters(net):>10,} {ms:>9.1f} "
              f"{macs / full:>11.2f} {ms / base_ms:>11.2f}")  # fmt: skip


ECHO = False  # --echo: print the runs' logs
SEED = 0  # --seed
WORKDIR = Path("nas_runs") / "bench_atomnas"


def _run(params: dict, epochs: int, threads: int) -> tuple[float, float, dict, float]:
    cfg = ExperimentConfig(strategy="atomnas", space="mobilenet", dataset="digits", epochs=epochs,
                           final_epochs=0, threads=threads, seed=SEED, params=params)  # fmt: skip
    # a folder of its own: benches run side by side must not overwrite each other's exported networks
    rep = MemoryReporter(workdir=Path(tempfile.mkdtemp(prefix="bench_atomnas_", dir=WORKDIR)), echo=ECHO)
    t0 = time.perf_counter()
    res = run_experiment(cfg, rep)
    return res.macs, res.accuracy, rep.architectures[-1].extra, time.perf_counter() - t0


def bench_targets(targets: list[float], epochs: int, threads: int, baseline: bool, params: dict) -> None:
    """Targets are fractions of the digits supernet's MACs; ``params`` go to every penalised run."""
    if baseline:  # same optimiser, init and epochs, no penalty (rho 1e-12 fixed) and nothing removed (threshold 0)
        base = {k: v for k, v in params.items() if k in ("gamma_init", "lr", "bn_momentum")}
        macs, acc, _, sec = _run({**base, "rho": 1e-12, "threshold": 0.0, "final_trim": False}, epochs, threads)
        print(f"\nunpenalised supernet, {epochs} epochs: {macs / 1e6:.4f} M MACs, test acc {acc:.3f} ({sec:.0f} s)",
              flush=True)  # fmt: skip
    supernet = network_macs(get_space("mobilenet").build_supernet(10, (1, 8, 8), style="atomnas"), 10, (1, 8, 8))
    print(f"\nAtomNAS on digits, {epochs} epochs, params {params or 'default'} (rho found by the tool unless given)")
    print(f"{'target':>7} {'target M':>9} {'final M':>8} {'gap':>7} {'penalty alone M':>16} {'trim M':>7} "
          f"{'trimmed':>8} {'rho end':>8} {'test acc':>9} {'seconds':>8}")  # fmt: skip
    for frac in targets:
        t = frac * supernet
        macs, acc, extra, sec = _run({**params, "target_macs": t / 1e6}, epochs, threads)
        alone = extra["macs_before_trim"] if extra["macs_before_trim"] is not None else macs
        print(f"{frac:>7.2f} {t / 1e6:>9.4f} {macs / 1e6:>8.4f} {(macs - t) / t:>+7.1%} {alone / 1e6:>16.4f} "
              f"{extra['trimmed_macs'] / 1e6:>7.4f} {extra['trimmed_atoms']:>8} {extra['rho_final']:>8.3g} "
              f"{acc:>9.3f} {sec:>8.1f}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--targets", type=float, nargs="*", default=[0.4, 0.7], help="fractions of the supernet's MACs")
    ap.add_argument("--params", default="{}", help="JSON of AtomNAS params for the runs, e.g. '{\"gamma_init\": 0.5}'")
    ap.add_argument("--cifar", action="store_true", help="also time the cifar-search supernet (batch 16)")
    ap.add_argument("--no-runs", action="store_true", help="only the step-time table")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unpenalised run")
    ap.add_argument("--no-shrink-table", action="store_true", help="skip the step-time table")
    ap.add_argument("--seed", type=int, default=0, help="seed of the runs")
    ap.add_argument("--echo", action="store_true", help="print the runs' logs (epoch by epoch)")
    args = ap.parse_args()
    global ECHO, SEED
    ECHO, SEED = args.echo, args.seed
    WORKDIR.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    if not args.no_shrink_table:
        bench_shrink("digits", (1, 8, 8), 64, args.reps)
    if args.cifar:
        bench_shrink("cifar-search", (3, 32, 32), 16, max(3, args.reps // 3))
    if not args.no_runs:
        bench_targets(args.targets, args.epochs, args.threads, not args.no_baseline, json.loads(args.params))


if __name__ == "__main__":
    main()
