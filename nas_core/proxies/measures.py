"""The measures of TE-NAS (Chen et al., ICLR 2021), whatever the space: the NTK's condition number and the number of
linear regions, with the reference's numerics (NaN kappa, rounding), and the proxy networks' initialisation.

Initialisation (``init``): ``"kaiming"`` (the default) is what the paper intends: Kaiming-normal
weights, fan-out for the NTK net and fan-in for the region net, BN gamma 1 and beta 0, biases 0.
``"pytorch-default"`` is what the reference effectively runs: its init helper is handed
``kaiming_normal_fanout``/``_fanin`` but only recognises ``kaiming_norm_*``, so weights keep PyTorch's
default init (BN 1/0 and biases 0 are still set).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

INITS: tuple[str, ...] = ("kaiming", "pytorch-default")


#: ops whose weight is at or below this are skipped, as the reference's mixed op does
ACTIVE_THRESHOLD = 0.01


#: what a NaN condition number is replaced with (the reference's ``np.nan_to_num(..., nan=1e5)``)
NAN_KAPPA = 1e5


def init_proxy(model: nn.Module, init: str, mode: str) -> None:
    """Initialise in place; ``mode`` is ``fan_out`` (NTK net) or ``fan_in`` (region net). See module doc."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            else:
                m.reset_parameters()
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def kappa(grads: torch.Tensor) -> float:
    theta = grads @ grads.T
    ev = torch.linalg.eigvalsh(theta)
    k = (ev[-1] / ev[0]).item()
    if math.isnan(k):
        return NAN_KAPPA
    if math.isinf(k):  # np.nan_to_num maps +-inf to the largest float, as the reference gets
        return math.copysign(torch.finfo(torch.float64).max, k)
    return k


def batched_ntk_rows(s: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """G (n x P): the n backward passes of ``s`` (one output per sample) as one vectorised pass, cotangents
    the rows of an identity. CPU only: on CUDA, cuDNN's convolution and batch-norm backward have no batching
    rule, and with cuDNN off the batched pass took 5.4 s against 0.85 s for :func:`per_sample_ntk_rows` (H100,
    batch 72 of 3x32x32, C=3 N=1; ``bench/bench_tenas.py --device cuda``)."""
    n = s.shape[0]
    eye = torch.eye(n, dtype=s.dtype, device=s.device)
    grads = torch.autograd.grad(s, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    return torch.cat([g.reshape(n, -1) for g in grads if g is not None], dim=1)


def per_sample_ntk_rows(s: torch.Tensor, params: Sequence[torch.Tensor], workers: int = 1) -> torch.Tensor:
    """G (n x P), one backward pass of ``s[i]`` per sample, asking autograd for ``params``' gradients only.

    On the CPU the passes (independent given the forward graph) run on ``workers`` threads, one core each;
    elsewhere one after the other.
    """
    n = s.shape[0]
    rows: list[torch.Tensor | None] = [None] * n

    def backward(indices: Sequence[int], single_thread: bool) -> None:
        if single_thread:
            torch.set_num_threads(1)  # this worker thread's own setting: one core per worker
        for i in indices:
            g = torch.autograd.grad(s[i], params, retain_graph=True, allow_unused=True)
            rows[i] = torch.cat([t.reshape(-1) for t in g if t is not None])

    workers = min(n, workers)
    if workers <= 1 or s.device.type != "cpu":  # a GPU runs the passes one after the other anyway
        backward(range(n), single_thread=False)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(backward, range(k, n, workers), True) for k in range(workers)]:
                f.result()
    return torch.stack(rows)  # type: ignore[arg-type]


def ntk_condition_number(model: nn.Module, x: torch.Tensor, *args: torch.Tensor, workers: int = 0) -> float:
    """kappa = lambda_max / lambda_min of Theta = G G^T, G[n] = d(sum of sample n's logits)/d(weights).

    As the reference: train mode (BN on batch statistics, so one forward of the whole batch; samples
    are coupled and per-sample forwards would change the numbers), gradients of the parameters whose
    name contains "weight" that take part in the forward. Faster than the reference loop because it
    asks autograd for just those gradients per sample, accumulating nothing in ``.grad``, and because
    the per-sample backward passes (independent given the forward graph) run on ``workers`` threads at
    once, one core each; ``0`` = torch's intra-op thread count. Tiny proxy nets keep the cores busier
    this way than with intra-op threads inside each small kernel (on 2 cores, batch 72 of 3x32x32: 4.1 s
    against 5.4 s; bench/bench_tenas.py --big). On a GPU the passes run one after the other. Extra positional
    ``args`` go to ``model`` (the proxy nets take the op weights). NaN -> 1e5.
    """
    model.train()
    params = [p for name, p in model.named_parameters() if "weight" in name and p.requires_grad]
    s = model(x, *args).sum(dim=1)
    return kappa(per_sample_ntk_rows(s, params, workers if workers > 0 else torch.get_num_threads()))


def ntk_condition_number_reference(model: nn.Module, x: torch.Tensor, *args: torch.Tensor) -> float:
    """The reference's plain loop (``get_ntk_n``): per sample ``backward`` into ``.grad``, then collect.

    Kept to check :func:`ntk_condition_number` against and as the bench's baseline.
    """
    model.train()
    model.zero_grad()
    logit = model(x, *args)
    grads = []
    for i in range(len(x)):
        logit[i : i + 1].backward(torch.ones_like(logit[i : i + 1]), retain_graph=True)
        grad = [
            w.grad.view(-1).detach() for name, w in model.named_parameters() if "weight" in name and w.grad is not None
        ]
        grads.append(torch.cat(grad, -1))
        model.zero_grad()
    return kappa(torch.stack(grads, 0))


def activation_patterns(model: nn.Module, batches: Sequence[torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """Binary ReLU patterns, one row per sample: all ``nn.ReLU`` outputs with 4-D input, flattened.

    Batches are forwarded one at a time (train-mode BN uses each batch's statistics, as the reference).
    A network without any ReLU gives zero-width rows (one region: the network is linear).
    """
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if inputs[0].dim() == 4:
            captured.append((output > 0).flatten(1))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    rows = []
    try:
        model.train()
        with torch.no_grad():
            for xb in batches:
                captured.clear()
                model(xb, *args)
                rows.append(
                    torch.cat(captured, 1) if captured else torch.zeros(len(xb), 0, dtype=torch.bool, device=xb.device)
                )
    finally:
        for h in handles:
            h.remove()
    return torch.cat(rows, 0)


def count_distinct_rows(patterns: torch.Tensor) -> int:
    """Number of distinct binary rows, exactly."""
    if patterns.shape[0] == 0:
        return 0
    if patterns.shape[1] == 0:
        return 1
    return int(torch.unique(patterns.to(torch.uint8), dim=0).shape[0])


def count_regions_reference(patterns: torch.Tensor) -> float:
    """The reference's count: sum over samples of 1/#samples sharing its pattern (Hamming products)."""
    a = patterns.to(torch.float64)
    res = a @ (1 - a).T
    res = res + res.T
    same = (res == 0).to(torch.float64).sum(1)
    return float((1.0 / same).sum())


def linear_regions(model: nn.Module, batches: Sequence[torch.Tensor], *args: torch.Tensor) -> int:
    """Distinct ReLU activation patterns over all samples of ``batches``: the reference's region count."""
    return count_distinct_rows(activation_patterns(model, batches, *args))


def region_inputs(x_train: torch.Tensor, samples: int, batches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``batches`` batches of ``samples`` random 3x3 crops of one random channel of random images: (n,1,3,3)."""
    n_img, ch, h, w = x_train.shape
    if h < 3 or w < 3:
        raise ValueError(f"linear regions need images of at least 3x3, got {h}x{w}")
    total = samples * batches
    draw = [torch.randint(k, (total,), generator=generator) for k in (n_img, ch, h - 2, w - 2)]  # the CPU stream
    idx, c, top, left = (t.to(x_train.device) for t in draw)
    ar = torch.arange(3, device=x_train.device)
    crops = x_train[
        idx[:, None, None],
        c[:, None, None],
        top[:, None, None] + ar[None, :, None],
        left[:, None, None] + ar[None, None, :],
    ]
    return list(crops.unsqueeze(1).float().split(samples))
