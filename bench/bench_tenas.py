"""TE-NAS cost: time per NTK evaluation (ours vs the reference's loop), per region count, NTK time against
batch size, and the wall time of a full NB201 prune on digits at the reference's settings.

    python bench/bench_tenas.py [--threads 1] [--workers N] [--batches 24 48 72 96] [--no-search] [--big]
        [--search-dataset SPEC | --cifar-like] [--processes N] [--pool-ab] [--convs]

``--big`` also times the NTK on 3x32x32 inputs (the issue's reference figures were measured on those), with
our per-sample loop on one thread and on ``--workers`` threads (default: ``--threads``), the reference's
plain loop on our network, and -- when xautodl is installed -- the reference's own construction: xautodl's
NB201 ``TinyNetworkDarts`` (C=3, N=1, every op its own module, TE-NAS's rule of skipping ops whose weight is
<= 0.01) with the reference's ``.backward`` loop. From those it prints the cost of a full prune both ways:
ours evaluates each round's supernet once per repeat, the reference twice per candidate.
``--search-dataset cifar10:/path`` runs the full search on real CIFAR-10; ``--cifar-like`` on a temporary
CIFAR-10-layout folder of random 3x32x32 images (the proxies' cost depends on the shapes, not the pixels).
``--device cuda`` runs the full search there.
``--processes N`` scores the full search's candidates on N single-threaded processes (TE-NAS's ``workers``);
``--pool-ab`` times that against ``--threads`` threads in one process, alternately, on first-round settings.
``--convs`` times the backward pass of every convolution of the NTK net (batch 72 of 3x32x32, full supernet)
with PyTorch's ``F.conv2d`` against ``nas_core.proxies.ntk_conv``'s, one thread: the native kernels of
``nas_core.proxies.cpu_kernels`` where they are built, else the flipped-kernel and matrix-product paths
(``NAS_CPU_KERNELS=0`` times those).
Numbers are medians of ``--reps`` timed calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nas_core.config import ExperimentConfig  # noqa: E402
from nas_core.data import load_dataset  # noqa: E402
from nas_core.pipeline import run_experiment  # noqa: E402
from nas_core.proxies import (  # noqa: E402
    NTKNet,
    ProxyEvaluator,
    init_proxy,
    linear_regions,
    ntk_condition_number,
    ntk_condition_number_reference,
)
from nas_core.reporting import MemoryReporter  # noqa: E402
from nas_core.strategies.tenas import planned_evaluations  # noqa: E402


def timed(fn: Callable[[], object], reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up call."""
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def reference_peer(num_classes: int, in_ch: int):
    """xautodl's NB201 search network at TE-NAS's NTK settings with TE-NAS's cell forward; None without xautodl
    or for inputs other than 3 channels (its stem takes min(3, C) channels)."""
    if in_ch != 3:
        return None
    try:
        from xautodl.models.cell_operations import SearchSpaceNames
        from xautodl.models.cell_searchs.search_cells import NAS201SearchCell
        from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts
    except ImportError:
        return None
    import types

    def cell_forward(self, inputs, weightss):  # every op its own module; ops of weight <= 0.01 skipped
        nodes = [inputs]
        for i in range(1, self.max_nodes):
            total = 0
            for j in range(i):
                key = f"{i}<-{j}"
                for op, w in zip(self.edges[key], weightss[self.edge2index[key]]):
                    if w > 0.01:
                        total = total + op(nodes[j]) * w
            nodes.append(total)
        return nodes[-1]

    torch.manual_seed(0)
    net = TinyNetworkDarts(3, 1, 4, num_classes, SearchSpaceNames["nas-bench-201"], True, False)
    for cell in net.cells:
        if isinstance(cell, NAS201SearchCell):
            cell.forward = types.MethodType(cell_forward, cell)
    with torch.no_grad():
        net.arch_parameters.zero_()
        net.arch_parameters[:, 0] = -1000.0  # `none` removed, 4 ops per edge: the prune's first state
    return net


def reference_loop(net: torch.nn.Module, x: torch.Tensor) -> float:
    """TE-NAS's get_ntk_n on one network: per-sample ``.backward`` into ``.grad`` of every parameter."""
    net.train()
    net.zero_grad()
    logits = net(x)[1]
    grads = []
    for i in range(len(x)):
        logits[i : i + 1].backward(torch.ones_like(logits[i : i + 1]), retain_graph=True)
        grads.append(
            torch.cat([p.grad.view(-1) for n, p in net.named_parameters() if "weight" in n and p.grad is not None])
        )
        net.zero_grad()
    g = torch.stack(grads)
    ev = torch.linalg.eigvalsh(g @ g.T)
    return (ev[-1] / ev[0]).item()


def full_supernet_weights() -> torch.Tensor:
    """softmax(alpha) of the supernet at the start of the prune: `none` removed, 4 ops per edge."""
    return first_round_settings()[0]


def first_round_settings() -> list[torch.Tensor]:
    """The first round's weight settings: the supernet and its 24 candidates (one op removed each)."""
    alpha = torch.zeros(6, 5)
    alpha[:, 0] = -1000.0
    out = [torch.softmax(alpha, dim=-1)]
    for e in range(6):
        for o in range(1, 5):
            a = alpha.clone()
            a[e, o] = -1000.0
            out.append(torch.softmax(a, dim=-1))
    return out


def pool_against_threads(threads: int, processes: int, rounds: int = 2) -> None:
    """Score half the first round (3x32x32, batch 72) in this process on ``threads`` threads and on
    ``processes`` single-threaded worker processes, alternately, so both see the same machine phases."""
    torch.manual_seed(0)
    x = torch.randn(500, 3, 32, 32)
    settings = first_round_settings()[:13]
    here = ProxyEvaluator(x, 10, ntk_batch=72, seed=0)
    with ProxyEvaluator(x, 10, ntk_batch=72, seed=0, workers=processes) as pooled:
        pooled.evaluate_repeats(settings[:2], [1])  # start the workers outside the timing
        print(f"\nscoring {len(settings)} first-round settings (3x32x32, batch 72), seconds per setting:")
        for r in range(rounds):
            for name, ev, n in ((f"{threads} thread(s), this process", here, threads),
                                (f"{processes} worker processes", pooled, 1)):  # fmt: skip
                torch.set_num_threads(n)
                t = time.perf_counter()
                ev.evaluate_repeats(settings, [0])
                print(f"  round {r}: {name:32s} {(time.perf_counter() - t) / len(settings):.3f}")
    torch.set_num_threads(threads)


def write_cifar_like(root: Path, per_class: int = 100) -> str:
    """A CIFAR-10 python-layout folder of random images (real shapes and format), for a 3x32x32 timing."""
    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), per_class)
    x = rng.integers(0, 256, size=(len(y), 3072), dtype=np.uint8)
    for i, part in enumerate(np.array_split(np.arange(len(y)), 5)):
        with open(folder / f"data_batch_{i + 1}", "wb") as fh:
            pickle.dump({b"labels": y[part].tolist(), b"data": x[part]}, fh)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"labels": y[:100].tolist(), b"data": x[:100]}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return f"cifar10:{folder}"


def ntk_on_device(device: str, w: torch.Tensor, reps: int) -> None:
    """The NTK of the full supernet (batch 72 of 3x32x32, C=3 N=1) on ``device``: ``ntk_condition_number`` (the
    samples one by one) against one batched backward pass with cuDNN off (cuDNN's kernels cannot be batched)."""
    from nas_core.devices import resolve_device
    from nas_core.proxies import batched_ntk_rows, kappa

    dev = resolve_device(device)
    torch.manual_seed(0)
    net = NTKNet(10, 3)
    init_proxy(net, "kaiming", "fan_out")
    net.to(dev)
    xb, wd = torch.randn(72, 3, 32, 32).to(dev), w.to(dev)

    def synchronize() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def loop() -> float:
        k = ntk_condition_number(net, xb, wd)
        synchronize()
        return k

    def batched() -> float:
        net.train()
        params = [p for name, p in net.named_parameters() if "weight" in name and p.requires_grad]
        with torch.backends.cudnn.flags(enabled=False):
            k = kappa(batched_ntk_rows(net(xb, wd).sum(dim=1), params))
        synchronize()
        return k

    print(f"\nNTK batch 72 of 3x32x32 on {device} (C=3 N=1 NTK net, full supernet):")
    print(f"  per-sample loop (ours): {timed(loop, reps):.3f} s, kappa {loop():.6g}")
    print(f"  one batched pass, cuDNN off: {timed(batched, reps):.3f} s, kappa {batched():.6g}")


def conv_table(reps: int) -> None:
    """Backward time of each distinct convolution the NTK net runs (batch 72 of 3x32x32, full supernet):
    PyTorch's F.conv2d against nas_core.proxies.ntk_conv (native kernels, or without them the flipped forward conv
    for the input gradient and 1x1 as products)."""
    from nas_core.proxies import ntk_conv

    calls: list[tuple[tuple[int, ...], tuple[int, ...], int, int, bool]] = []
    real = ntk_conv.conv2d

    def record(x: torch.Tensor, w: torch.Tensor, padding: int = 0, stride: int = 1) -> torch.Tensor:
        key = (tuple(x.shape), tuple(w.shape), padding, stride, x.requires_grad)
        if key not in calls:
            calls.append(key)
        return real(x, w, padding, stride)

    torch.manual_seed(0)
    net = NTKNet(10, 3)
    ntk_conv.conv2d = record  # type: ignore[assignment]
    try:
        net(torch.randn(72, 3, 32, 32), full_supernet_weights())
    finally:
        ntk_conv.conv2d = real  # type: ignore[assignment]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print("\nconvolution backward of the NTK net, batch 72 of 3x32x32, 1 thread, ms per backward pass:")
    print("  input          weight         pad stride  F.conv2d   ntk_conv   speed-up")
    total_native = total_ours = 0.0
    for xs, ws, pad, stride, input_grad in calls:
        x = torch.randn(xs).requires_grad_(input_grad)
        w = torch.randn(ws).requires_grad_()
        times = []
        for y in (F.conv2d(x, w, None, stride, pad), real(x, w, pad, stride)):
            g = torch.randn_like(y)
            inputs = [x, w] if input_grad else [w]
            times.append(timed(lambda y=y, g=g, inputs=inputs: torch.autograd.grad(y, inputs, g, retain_graph=True),
                               reps) * 1e3)  # fmt: skip
        total_native += times[0]
        total_ours += times[1]
        print(f"  {str(xs):14s} {str(ws):14s} {pad:3d} {stride:6d} {times[0]:9.2f}  {times[1]:9.2f}  "
              f"{times[0] / times[1]:8.2f}x")  # fmt: skip
    print(f"  all {len(calls)} shapes once: {total_native:.1f} ms against {total_ours:.1f} ms "
          f"({total_native / total_ours:.2f}x)")  # fmt: skip
    torch.set_num_threads(threads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="+", default=[24, 48, 72, 96])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="threads for the per-sample NTK loop (0 = --threads)")
    ap.add_argument(
        "--processes", type=int, default=1, help="the full search's TE-NAS `workers`: processes scoring candidates"
    )
    ap.add_argument("--pool-ab", action="store_true", help="time --processes workers against --threads threads")
    ap.add_argument("--no-search", action="store_true", help="skip the full search")
    ap.add_argument("--convs", action="store_true", help="time each conv's backward, PyTorch's against ntk_conv's")
    ap.add_argument("--big", action="store_true", help="also time the NTK on 3x32x32 inputs")
    ap.add_argument("--search-dataset", default="digits", help="data set of the full search (default digits)")
    ap.add_argument("--cifar-like", action="store_true", help="full search on random 3x32x32 CIFAR-layout data")
    ap.add_argument("--device", default="cpu", help="device of the full search (the config's `device`)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.workers = args.workers or args.threads
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s), load {os.getloadavg()}")

    data = load_dataset("digits", 0)
    w = full_supernet_weights()
    ev = ProxyEvaluator(data.x_train, data.num_classes, ntk_batch=72, region_samples=1000, seed=0)
    init_proxy(ev.ntk_net, "kaiming", "fan_out")
    init_proxy(ev.region_net, "kaiming", "fan_in")
    x72 = data.x_train[:72].float()
    fast = timed(lambda: ntk_condition_number(ev.ntk_net, x72, w), args.reps)
    ref = timed(lambda: ntk_condition_number_reference(ev.ntk_net, x72, w), args.reps)
    reg = timed(lambda: linear_regions(ev.region_net, ev.region_x, w), args.reps)
    print("\nper evaluation, full NB201 supernet (4 ops/edge), digits 1x8x8, C=3 N=1 NTK net:")
    print(f"  NTK batch 72     ours {fast:.3f} s   reference loop {ref:.3f} s   ({ref / fast:.2f}x)")
    print(f"  linear regions   {reg:.3f} s   (3 x 1000 crops of 1x3x3, C=1 one-cell net)")

    print("\nNTK time against batch size (digits):")
    print("  batch   ours [s]   reference [s]   ratio")
    for b in args.batches:
        xb = data.x_train[:b].float()
        f = timed(lambda xb=xb: ntk_condition_number(ev.ntk_net, xb, w), args.reps)
        r = timed(lambda xb=xb: ntk_condition_number_reference(ev.ntk_net, xb, w), args.reps)
        print(f"  {b:5d}   {f:8.3f}   {r:13.3f}   {r / f:5.2f}x")

    if args.device != "cpu":
        ntk_on_device(args.device, w, args.reps)

    if args.big:
        torch.manual_seed(0)
        net = NTKNet(10, 3)
        init_proxy(net, "kaiming", "fan_out")
        xb = torch.randn(72, 3, 32, 32)
        one = timed(lambda: ntk_condition_number(net, xb, w, workers=1), args.reps)
        par = timed(lambda: ntk_condition_number(net, xb, w, workers=args.workers), args.reps)
        ref = timed(lambda: ntk_condition_number_reference(net, xb, w), 1)
        print("\nNTK batch 72 of 3x32x32 (C=3 N=1 NTK net, full supernet):")
        print(f"  ours, 1 worker thread         {one:7.3f} s")
        print(f"  ours, {args.workers} worker thread(s)        {par:7.3f} s")
        print(f"  reference loop, our network   {ref:7.3f} s")
        peer = reference_peer(10, 3)
        per_repeat = planned_evaluations([4] * 6, 1)  # supernets + candidates + final, per repeat
        candidates = sum(n * 6 for n in (4, 3, 2))  # the reference: 2 NTKs and 2 region counts per candidate
        ours_prune = 3 * per_repeat * (par + reg)
        print(
            f"  full prune, ours: 3 x {per_repeat} evaluations x ({par:.2f} + {reg:.2f}) s = {ours_prune / 60:.1f} min"
        )
        if peer is None:
            print("  (xautodl not installed: the reference's own network is not timed)")
        else:
            peer_t = timed(lambda: reference_loop(peer, xb), 1)
            ref_prune = 3 * candidates * 2 * (peer_t + reg)
            print(
                f"  reference construction (xautodl TinyNetworkDarts, TE-NAS skip rule, .backward loop) {peer_t:7.3f} s"
            )
            print(f"  full prune, reference: 3 x {candidates} candidates x 2 x ({peer_t:.2f} + {reg:.2f}) s = "
                  f"{ref_prune / 60:.1f} min -> ours is {ref_prune / ours_prune:.1f}x faster")  # fmt: skip

    if args.convs:
        conv_table(max(args.reps, 5))

    if args.pool_ab:
        pool_against_threads(args.threads, max(2, args.processes))

    if not args.no_search:
        with tempfile.TemporaryDirectory() as tmp:
            spec = write_cifar_like(Path(tmp) / "data") if args.cifar_like else args.search_dataset
            cfg = ExperimentConfig(
                strategy="tenas",
                dataset=spec,
                final_epochs=0,
                threads=args.threads,
                device=args.device,
                params={"ntk_batch": 72, "repeats": 3, "region_samples": 1000, "workers": args.processes},
            )
            rep = MemoryReporter(workdir=Path(tmp) / "run")
            t = time.perf_counter()
            res = run_experiment(cfg, rep)
            total = time.perf_counter() - t
        what = "random 3x32x32 CIFAR-layout data" if args.cifar_like else spec
        print(f"\nfull NB201 TE-NAS prune on {what} (batch 72, 3 repeats, 1000 region samples, kaiming, "
              f"{args.processes} worker process(es), {args.threads} thread(s), device {args.device}):")  # fmt: skip
        rounds: dict[int, dict[str, float]] = {}
        for step, _, name, value in rep.series_points:
            rounds.setdefault(step, {})[name] = value
        for rnd, m in sorted(rounds.items()):
            print(f"  state {rnd}: kappa {m['kappa']:.4g}, regions {m['regions']:.1f}, "
                  f"round {m['seconds/round']:.1f} s")  # fmt: skip
        print(f"  search {res.search_seconds:.1f} s ({res.search_seconds / 60:.2f} min); whole run {total:.1f} s")
        print(f"  derived {res.genotype}")


if __name__ == "__main__":
    main()
