"""The timed unit of the supernet benches: one DARTS search step (alpha step, then weight step)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def time_search_steps(
    run: Callable,
    w_params: Sequence,
    a_params: Sequence,
    train_batch: tuple,
    val_batch: tuple,
    steps: int,
    with_alpha: bool = True,
) -> tuple[float, float]:
    """(warm-up seconds for 2 steps, mean seconds per timed step) of DARTS's first-order search step.

    The optimisers are DARTS's (SGD for weights with clip 5, Adam for alphas); ``run`` may return
    ``(features, logits)`` as xautodl's networks do. ``with_alpha=False`` times the weight step alone.
    """
    import torch
    import torch.nn.functional as F

    w_params, a_params = list(w_params), list(a_params)
    w_opt = torch.optim.SGD(w_params, lr=0.025, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(a_params, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    (x, y), (xv, yv) = train_batch, val_batch

    def out(inp):
        o = run(inp)
        return o[1] if isinstance(o, tuple) else o

    def step() -> None:
        if with_alpha:
            a_opt.zero_grad(set_to_none=True)
            ga = torch.autograd.grad(F.cross_entropy(out(xv), yv), a_params)
            for a, g in zip(a_params, ga):
                a.grad = g
            a_opt.step()
        w_opt.zero_grad(set_to_none=True)
        F.cross_entropy(out(x), y).backward(inputs=w_params)
        torch.nn.utils.clip_grad_norm_(w_params, 5.0)
        w_opt.step()

    # on a GPU the steps only queue kernels: wait for them before reading the clock
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    t_warm = time.perf_counter()
    for _ in range(2):
        step()
    sync()
    warm = time.perf_counter() - t_warm
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return warm, (time.perf_counter() - t0) / steps
