"""Why jobs default to 1 thread and OMP_WAIT_POLICY=PASSIVE: step time of the default digits supernet
(C=8, N=2, 1x8x8, batch 64, weight step) for 1 and 2 threads, OpenMP wait policy ACTIVE/PASSIVE, with and
without a competing busy process (what the dashboard or a second job is to a 2-core machine).

    python bench/bench_threads.py [--steps 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(threads: int, steps: int) -> float:
    sys.path.insert(0, ROOT)
    import torch
    import torch.nn.functional as F

    from nas_core.spaces import get_space

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = get_space("nb201").build_supernet(10, (1, 8, 8), 8, 2).to(memory_format=torch.channels_last)
    x = torch.randn(64, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.01)

    def step() -> None:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward(inputs=net.weight_parameters())
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--child", type=int, metavar="THREADS")
    args = ap.parse_args()
    if args.child:
        print(child(args.child, args.steps))
        return
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for threads in (1, 2):
                for policy in ("ACTIVE", "PASSIVE"):
                    env = os.environ | {"OMP_WAIT_POLICY": policy}
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", str(threads), "--steps", str(args.steps)],
                        env=env, capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    ms = float(out.stdout.strip().splitlines()[-1])
                    print(f"{'busy' if busy else 'idle':4s} machine, {threads} thread(s), OMP_WAIT_POLICY={policy:7s}: "
                          f"{ms:8.1f} ms/step", flush=True)  # fmt: skip
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()


if __name__ == "__main__":
    main()
