"""DARTS (Liu et al., ICLR 2019) first and second order, and Single-DARTS (Hou et al., 2021).

Bi-level DARTS alternates per step: an alpha step on a validation batch (Adam), then a weight step on
a training batch (SGD, cosine lr, grad-norm clip), as ``quark0/darts`` does. Second order replaces the
alpha gradient with the unrolled one: a virtual SGD step w' = w - xi*(mu*m + dL_train/dw + lambda*w),
then dL_val(w', a)/da - xi * finite-difference Hessian-vector product with eps = 0.01 / ||dL_val/dw'||.
Single-DARTS drops the bi-level split: one forward/backward on a training batch steps both optimisers
(the paper's abstract; its code was not available, so alpha's optimiser and split are DARTS's
settings, and the validation split is used only for reporting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.params import ParamSpec
from nas_core.strategies.oneshot import COMMON_PARAMS, LoopState, OneShotStrategy, maybe_compile

__all__ = ["COMMON_PARAMS", "DARTS_V1", "DARTS_V2", "SINGLE_DARTS", "DartsStrategy", "maybe_compile"]


def unrolled_alpha_grads(
    net: nn.Module,
    w_params: list[nn.Parameter],
    a_params: list[nn.Parameter],
    w_opt: torch.optim.SGD,
    train_batch: tuple[torch.Tensor, torch.Tensor],
    val_batch: tuple[torch.Tensor, torch.Tensor],
    xi: float,
    momentum: float,
    weight_decay: float,
) -> list[torch.Tensor]:
    """Second-order DARTS alpha gradient; weights are restored exactly before returning."""
    xt, yt = train_batch
    xv, yv = val_batch
    w0 = [p.detach().clone() for p in w_params]
    g_train = torch.autograd.grad(F.cross_entropy(net(xt), yt), w_params)
    with torch.no_grad():
        for p, g, p0 in zip(w_params, g_train, w0):
            buf = w_opt.state.get(p, {}).get("momentum_buffer")
            step = g + weight_decay * p0
            if buf is not None:
                step = step + momentum * buf
            p.sub_(xi * step)  # p is now w'
    grads = torch.autograd.grad(F.cross_entropy(net(xv), yv), a_params + w_params)
    d_alpha, d_w = grads[: len(a_params)], grads[len(a_params) :]
    eps = 0.01 / torch.cat([d.reshape(-1) for d in d_w]).norm().clamp_min(1e-12)
    with torch.no_grad():
        for p, p0, d in zip(w_params, w0, d_w):
            p.copy_(p0 + eps * d)
    g_pos = torch.autograd.grad(F.cross_entropy(net(xt), yt), a_params)
    with torch.no_grad():
        for p, p0, d in zip(w_params, w0, d_w):
            p.copy_(p0 - eps * d)
    g_neg = torch.autograd.grad(F.cross_entropy(net(xt), yt), a_params)
    with torch.no_grad():
        for p, p0 in zip(w_params, w0):
            p.copy_(p0)
    return [da - xi * (gp - gn) / (2 * eps) for da, gp, gn in zip(d_alpha, g_pos, g_neg)]


class DartsStrategy(OneShotStrategy):
    """DARTS bi-level (first or second order) or single-level (Single-DARTS) search."""


    def __init__(
        self,
        name: str,
        label: str,
        mode: str,
        description: str,
        relative_cost: float,
        params: tuple[ParamSpec, ...] = COMMON_PARAMS,
    ) -> None:
        self.name = name
        self.label = label
        self.mode = mode  # "first" | "second" | "single"
        self.description = description
        self.relative_cost = relative_cost
        self.params = params

    def train_step(
        self, loop: LoopState, xb: torch.Tensor, yb: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DARTS order: alpha step on a validation batch first, then the weight step; or both at once."""
        p = loop.p
        if self.mode == "single":
            logits = loop.run(xb)
            loss = F.cross_entropy(logits, yb)
            loop.w_opt.zero_grad(set_to_none=True)
            loop.a_opt.zero_grad(set_to_none=True)
            loss.backward()
            if p["grad_clip"] > 0:
                nn.utils.clip_grad_norm_(loop.w_params, p["grad_clip"])
            loop.w_opt.step()
            loop.a_opt.step()
            return loss, logits
        xv, yv = loop.next_val()
        if self.mode == "second":
            loop.a_opt.zero_grad(set_to_none=True)
            grads = unrolled_alpha_grads(
                loop.run,
                loop.w_params,
                loop.a_params,
                loop.w_opt,  # type: ignore[arg-type]
                (xb, yb),
                (xv, yv),
                loop.lr,
                p["w_momentum"],
                p["w_weight_decay"],
            )
            for a, g in zip(loop.a_params, grads):
                a.grad = g
            loop.a_opt.step()
        else:
            loop.alpha_step(xv, yv)
        return loop.weight_step(xb, yb)


DARTS_V1 = DartsStrategy(
    "darts",
    "DARTS (first order)",
    "first",
    "Bi-level differentiable search; alpha step on validation batches with the first-order gradient.",
    2.0,
)
DARTS_V2 = DartsStrategy(
    "darts-2nd",
    "DARTS (second order)",
    "second",
    "Bi-level differentiable search with the unrolled (second-order, finite-difference Hessian) alpha gradient.",
    4.0,
)
SINGLE_DARTS = DartsStrategy(
    "single-darts",
    "Single-DARTS",
    "single",
    "Single-level: weights and alphas stepped together on the same training batch.",
    1.2,
)
