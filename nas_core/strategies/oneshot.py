"""The search loop shared by the one-shot differentiable strategies (DARTS family, PC-DARTS, GDAS).

Every one of them trains a supernet for ``epochs`` passes over the training split with an SGD weight
optimiser (cosine lr, grad-norm clip) and an Adam optimiser on the architecture parameters, reports
alpha snapshots, a genotype and validation accuracy per epoch, and honours cancel at every step. What
differs is the supernet mode, the order and gating of the alpha and weight steps, per-epoch state
(GDAS's temperature) and the extra scalars plotted beside the alphas. :class:`OneShotStrategy` runs
the loop; subclasses override the small hooks marked "hook". The loop saves a checkpoint at every epoch's
end and a resumed run goes on from the last one (:mod:`nas_core.strategies.resume`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.data import batches, endless_batches
from nas_core.params import ParamSpec
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy
from nas_core.strategies.resume import with_checkpoints
from nas_core.train import EpochMeter, cosine_lr, evaluate, fmt, prepare_model, set_lr

COMMON_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("w_lr", 0.025, "float", "Weight learning rate (SGD, cosine-annealed)", 1e-6, 10.0),
    ParamSpec("w_lr_min", 0.001, "float", "Final weight learning rate of the cosine schedule", 0.0, 10.0),
    ParamSpec("w_momentum", 0.9, "float", "SGD momentum for the weights", 0.0, 0.999),
    ParamSpec("w_weight_decay", 3e-4, "float", "Weight decay for the weights", 0.0, 1.0),
    ParamSpec("grad_clip", 5.0, "float", "Gradient-norm clip for the weights (0 = off)", 0.0, 1e6),
    ParamSpec("arch_lr", 3e-4, "float", "Alpha learning rate (Adam)", 1e-7, 1.0),
    ParamSpec("arch_beta1", 0.5, "float", "Adam beta1 for alphas", 0.0, 0.9999),
    ParamSpec("arch_beta2", 0.999, "float", "Adam beta2 for alphas", 0.0, 0.99999),
    ParamSpec("arch_weight_decay", 1e-3, "float", "Weight decay for alphas", 0.0, 1.0),
    ParamSpec("snapshots_per_epoch", 4, "int", "Alpha snapshots recorded per epoch (for the plots)", 1, 1000),
)


def maybe_compile(model: nn.Module, enabled: bool, reporter) -> nn.Module:
    """torch.compile when asked and available; otherwise (or on failure) the eager model, with a log line."""
    if not enabled:
        return model
    try:
        compiled = torch.compile(model, dynamic=False)
        reporter.log("torch.compile enabled for the search network (first steps include compile time)")
        return compiled  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 - compile support varies by platform
        reporter.log(f"torch.compile unavailable ({exc}); running eagerly", "warning")
        return model


def mean_entropy(weights: torch.Tensor) -> float:
    """Entropy in nats of each row's distribution (edges x ops), averaged over the rows (edges)."""
    w = weights.detach().double()
    return float(-(w * w.clamp_min(1e-300).log()).sum(-1).mean())


@dataclass
class LoopState:
    """What one search run holds; the hooks read and step it."""

    ctx: SearchContext
    net: nn.Module
    run: nn.Module  # ``net`` or its compiled version: the callable the steps use
    w_params: list[nn.Parameter]
    a_params: list[nn.Parameter]
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer
    val_stream: Any
    channels_last: bool
    lr: float = 0.0
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # strategy-specific state (GDAS's tau ...)

    @property
    def p(self) -> dict[str, Any]:
        return self.ctx.params

    def next_val(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next validation batch (the alphas' split of the bi-level search)."""
        xv, yv = next(self.val_stream)
        return fmt(xv, self.channels_last), yv

    def alpha_step(self, xv: torch.Tensor, yv: torch.Tensor) -> None:
        """First-order alpha step: gradient of the validation loss at the current weights."""
        self.a_opt.zero_grad(set_to_none=True)
        grads = torch.autograd.grad(F.cross_entropy(self.run(xv), yv), self.a_params)
        for a, g in zip(self.a_params, grads):
            a.grad = g
        self.a_opt.step()

    def weight_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step of the weights on a training batch (grad-norm clipped); returns loss and logits."""
        logits = self.run(xb)
        loss = F.cross_entropy(logits, yb)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward(inputs=self.w_params)
        if self.p["grad_clip"] > 0:
            nn.utils.clip_grad_norm_(self.w_params, self.p["grad_clip"])
        self.w_opt.step()
        return loss, logits


class OneShotStrategy(Strategy):
    """A supernet search: the shared loop; subclasses set the mode and override the hooks."""

    resumable = True

    # ------------------------------------------------------------------ hooks

    def supernet_options(self, params: dict[str, Any]) -> dict[str, Any]:
        """Hook: keyword options for ``space.build_supernet`` (mode, partial_k)."""
        return {}

    def check(self, ctx: SearchContext) -> None:
        """Hook: refuse settings the search cannot run with (raise ConfigError naming the field)."""

    def weight_optimizer(self, w_params: list[nn.Parameter], p: dict[str, Any]) -> torch.optim.Optimizer:
        """Hook: the weights' optimiser (the DARTS SGD by default)."""
        return torch.optim.SGD(w_params, lr=p["w_lr"], momentum=p["w_momentum"], weight_decay=p["w_weight_decay"])

    def begin_epoch(self, loop: LoopState, epoch: int) -> None:
        """Hook: per-epoch state (GDAS sets its temperature here)."""

    def train_step(
        self, loop: LoopState, xb: torch.Tensor, yb: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook: one search step on training batch ``xb``; returns the weight step's loss and logits."""
        raise NotImplementedError

    def series(self, loop: LoopState) -> dict[str, float]:
        """Hook: named scalars reported with every alpha snapshot (tau, entropies, betas)."""
        return {}

    # ------------------------------------------------------------------ the loop

    def snapshot(self, loop: LoopState, epoch: int) -> None:
        rep, space = loop.ctx.reporter, loop.ctx.space
        rep.alphas(loop.step, epoch, space.alpha_rows(loop.net.arch_weights()))
        values = self.series(loop)
        if values:
            rep.series(loop.step, epoch, values)

    def setup(self, ctx: SearchContext) -> LoopState:
        """Check the settings, build the supernet in this strategy's mode and its two optimisers."""
        cfg, p, data, rep = ctx.config, ctx.params, ctx.data, ctx.reporter
        self.check(ctx)
        cl = cfg.channels_last
        torch.manual_seed(cfg.seed)
        options = {**ctx.space.supernet_device_options(ctx.device), **self.supernet_options(p)}
        net = ctx.space.build_supernet(data.num_classes, data.input_shape, cfg.channels, cfg.cells_per_stage, **options)
        net = prepare_model(net, cl, ctx.device)
        run = maybe_compile(net, cfg.compile, rep)
        w_params, a_params = net.weight_parameters(), net.arch_parameters()
        a_opt = torch.optim.Adam(
            a_params, lr=p["arch_lr"], betas=(p["arch_beta1"], p["arch_beta2"]), weight_decay=p["arch_weight_decay"]
        )
        val_gen = torch.Generator().manual_seed(cfg.seed + 2)
        val_stream = endless_batches(data.x_val, data.y_val, cfg.batch_size, val_gen)
        return LoopState(ctx, net, run, w_params, a_params, self.weight_optimizer(w_params, p), a_opt, val_stream, cl)

    def search(self, ctx: SearchContext) -> SearchOutcome:
        ctx, checkpoints = with_checkpoints(ctx)  # what it charts goes into the checkpoints too
        cfg, p, data, rep = ctx.config, ctx.params, ctx.data, ctx.reporter
        loop = self.setup(ctx)
        net, run, w_params, cl = loop.net, loop.run, loop.w_params, loop.channels_last
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        augment = bool(getattr(data, "augment", False))
        if augment:
            from nas_core.augment import random_crop_flip

            aug_gen = torch.Generator().manual_seed(cfg.seed + 3)
        steps_per_epoch = max(1, math.ceil(len(data.y_train) / cfg.batch_size))
        total_steps = cfg.epochs * steps_per_epoch
        snap_every = max(1, steps_per_epoch // p["snapshots_per_epoch"])
        rep.log(
            f"{self.label}: {sum(x.numel() for x in w_params):,} supernet weights, "
            f"{steps_per_epoch} steps/epoch, {cfg.epochs} epochs"
            + (", random crop + flip on the weight batches" if augment else "")
        )
        val_acc = None
        lr = p["w_lr"]
        checkpoints.register(
            {"net": net, "w_opt": loop.w_opt, "a_opt": loop.a_opt, "val_stream": loop.val_stream},
            {"batches": gen, **({"augment": aug_gen} if augment else {})},
        )
        start = 0
        saved = checkpoints.restore()
        if saved is not None:
            loop.step, loop.lr, loop.extra, val_acc = saved["step"], saved["lr"], saved["extra"], saved["val_acc"]
            lr, start = loop.lr, saved["epochs_done"]
        for epoch in range(start, cfg.epochs):
            self.begin_epoch(loop, epoch)
            if epoch == 0:
                self.snapshot(loop, 0)
            meter = EpochMeter()
            for xb, yb in batches(data.x_train, data.y_train, cfg.batch_size, gen):
                ctx.check_stop()
                lr = cosine_lr(p["w_lr"], p["w_lr_min"], loop.step, total_steps)
                set_lr(loop.w_opt, lr)
                loop.lr = lr
                if augment:
                    xb = random_crop_flip(xb, aug_gen)
                loss, logits = self.train_step(loop, fmt(xb, cl), yb, epoch)
                loop.step += 1
                meter.add(loss, logits, yb)
                if loop.step % snap_every == 0:
                    self.snapshot(loop, epoch)
                    ctx.report_progress(loop.step / total_steps, epoch)
            val_loss, val_acc = evaluate(run, data.x_val, data.y_val, channels_last=cl)
            genotype = ctx.space.format(net.genotype())
            rep.epoch("search", epoch, meter.metrics(val_loss, val_acc, lr))
            rep.genotype(loop.step, epoch, genotype)
            rep.log(f"search epoch {epoch + 1}/{cfg.epochs}: val acc {val_acc:.3f}, genotype {genotype}")
            ctx.report_progress(loop.step / total_steps, epoch + 1)
            if epoch == cfg.epochs - 1 and loop.step % snap_every != 0:
                self.snapshot(loop, epoch)  # the final alphas
            checkpoints.save(self.name, {"epochs_done": epoch + 1, "step": loop.step, "lr": loop.lr,
                                         "val_acc": val_acc, "extra": loop.extra})  # fmt: skip
        return SearchOutcome(genotype=ctx.space.format(net.genotype()), accuracy=val_acc)
