"""GDAS (Dong & Yang, CVPR 2019): differentiable sampling of one op per edge.

Every forward pass draws one hard Gumbel-softmax sample per edge (shared by all cells of a type) and
computes only the sampled op; the straight-through estimator carries the gradient to alpha. Per step,
as ``D-X-Y/AutoDL-Projects`` (``exps/NAS-Bench-201-algos/GDAS.py``) does: a weight step on a training
batch (SGD, Nesterov, grad-norm clip 5), then an alpha step on a validation batch (Adam 3e-4, betas
(0.5, 0.999), weight decay 1e-3). The temperature falls linearly per epoch from ``tau_max`` to
``tau_min``. Weight defaults are the reference's NB201 configuration (lr 0.025 cosine to 0.001, weight
decay 5e-4, Nesterov momentum 0.9).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nas_core.errors import ConfigError
from nas_core.params import ParamSpec
from nas_core.strategies.oneshot import LoopState, OneShotStrategy, mean_entropy

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig

GDAS_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("w_lr", 0.025, "float", "Weight learning rate (SGD, cosine-annealed)", 1e-6, 10.0),
    ParamSpec("w_lr_min", 0.001, "float", "Final weight learning rate of the cosine schedule", 0.0, 10.0),
    ParamSpec("w_momentum", 0.9, "float", "SGD momentum for the weights", 0.0, 0.999),
    ParamSpec("w_nesterov", True, "bool", "Nesterov momentum for the weights (reference: on)"),
    ParamSpec("w_weight_decay", 5e-4, "float", "Weight decay for the weights (reference NB201 config: 5e-4)", 0.0, 1.0),
    ParamSpec("grad_clip", 5.0, "float", "Gradient-norm clip for the weights (0 = off)", 0.0, 1e6),
    ParamSpec("arch_lr", 3e-4, "float", "Alpha learning rate (Adam)", 1e-7, 1.0),
    ParamSpec("arch_beta1", 0.5, "float", "Adam beta1 for alphas", 0.0, 0.9999),
    ParamSpec("arch_beta2", 0.999, "float", "Adam beta2 for alphas", 0.0, 0.99999),
    ParamSpec("arch_weight_decay", 1e-3, "float", "Weight decay for alphas", 0.0, 1.0),
    ParamSpec("tau_max", 10.0, "float", "Gumbel-softmax temperature of the first epoch", 1e-3, 1e4),
    ParamSpec("tau_min", 0.1, "float", "Gumbel-softmax temperature of the last epoch (linear per epoch)", 1e-3, 1e4),
    ParamSpec("snapshots_per_epoch", 4, "int", "Alpha snapshots recorded per epoch (for the plots)", 1, 1000),
)


def tau_schedule(epoch: int, epochs: int, tau_max: float, tau_min: float) -> float:
    """GDAS's linear temperature: tau_max at the first epoch, tau_min at the last (tau_max for one epoch)."""
    if epochs <= 1:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)


class GdasStrategy(OneShotStrategy):
    """GDAS: hard Gumbel samples, weight step then alpha step, annealed temperature."""

    name = "gdas"
    label = "GDAS"
    description = (
        "Gumbel-softmax hard sampling of one op per edge (straight-through gradient, only the sampled op "
        "computed), temperature annealed linearly; weight step then alpha step each batch."
    )
    params = GDAS_PARAMS
    relative_cost = 0.8

    def supernet_options(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"mode": "gdas"}

    def validate(self, config: ExperimentConfig) -> None:
        p = config.params
        if p["tau_min"] > p["tau_max"]:
            raise ConfigError("params.tau_min", f"must be <= tau_max ({p['tau_min']} > {p['tau_max']})")

    def weight_optimizer(self, w_params: list[nn.Parameter], p: dict[str, Any]) -> torch.optim.Optimizer:
        nesterov = bool(p["w_nesterov"]) and p["w_momentum"] > 0
        return torch.optim.SGD(
            w_params, lr=p["w_lr"], momentum=p["w_momentum"], weight_decay=p["w_weight_decay"], nesterov=nesterov
        )

    def begin_epoch(self, loop: LoopState, epoch: int) -> None:
        tau = tau_schedule(epoch, loop.ctx.config.epochs, loop.p["tau_max"], loop.p["tau_min"])
        loop.net.set_tau(tau)
        loop.extra["tau"] = tau

    def train_step(
        self, loop: LoopState, xb: torch.Tensor, yb: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight step (one sample), then alpha step on a validation batch (a fresh sample)."""
        out = loop.weight_step(xb, yb)
        loop.alpha_step(*loop.next_val())
        return out

    def series(self, loop: LoopState) -> dict[str, float]:
        """Temperature and the mean per-edge entropy (nats) of the sampling distribution softmax(alpha)."""
        out = {"tau": float(loop.extra["tau"])}
        for cell, w in loop.net.arch_weights().items():
            out[f"entropy/{cell}"] = mean_entropy(w)
        return out


GDAS = GdasStrategy()
