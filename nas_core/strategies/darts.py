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

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.config import ParamSpec
from nas_core.data import batches, endless_batches
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy
from nas_core.train import cosine_lr, evaluate, fmt, prepare_model, set_lr

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


class DartsStrategy(Strategy):
    """DARTS bi-level (first or second order) or single-level (Single-DARTS) search."""

    spaces = ("nb201",)

    def __init__(self, name: str, label: str, mode: str, description: str, relative_cost: float) -> None:
        self.name = name
        self.label = label
        self.mode = mode  # "first" | "second" | "single"
        self.description = description
        self.relative_cost = relative_cost
        self.params = COMMON_PARAMS

    def search(self, ctx: SearchContext) -> SearchOutcome:
        cfg, p, data, rep = ctx.config, ctx.params, ctx.data, ctx.reporter
        cl = cfg.channels_last
        torch.manual_seed(cfg.seed)
        net = ctx.space.build_supernet(data.num_classes, data.input_shape, cfg.channels, cfg.cells_per_stage)
        net = prepare_model(net, cl, ctx.device)
        run = maybe_compile(net, cfg.compile, rep)
        w_params, a_params = net.weight_parameters(), net.arch_parameters()
        w_opt = torch.optim.SGD(w_params, lr=p["w_lr"], momentum=p["w_momentum"], weight_decay=p["w_weight_decay"])
        a_opt = torch.optim.Adam(
            a_params, lr=p["arch_lr"], betas=(p["arch_beta1"], p["arch_beta2"]), weight_decay=p["arch_weight_decay"]
        )
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        val_gen = torch.Generator().manual_seed(cfg.seed + 2)
        val_stream = endless_batches(data.x_val, data.y_val, cfg.batch_size, val_gen)
        steps_per_epoch = max(1, math.ceil(len(data.y_train) / cfg.batch_size))
        total_steps = cfg.epochs * steps_per_epoch
        snap_every = max(1, steps_per_epoch // p["snapshots_per_epoch"])
        rep.log(
            f"{self.label}: {sum(x.numel() for x in w_params):,} supernet weights, "
            f"{steps_per_epoch} steps/epoch, {cfg.epochs} epochs"
        )
        rep.alphas(0, 0, ctx.space.alpha_rows(net.arch_weights()))
        step = 0
        val_acc = None
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            seen, loss_sum, correct = 0, 0.0, 0
            for xb, yb in batches(data.x_train, data.y_train, cfg.batch_size, gen):
                ctx.check_stop()
                lr = cosine_lr(p["w_lr"], p["w_lr_min"], step, total_steps)
                set_lr(w_opt, lr)
                xb = fmt(xb, cl)
                if self.mode == "single":
                    logits = run(xb)
                    loss = F.cross_entropy(logits, yb)
                    w_opt.zero_grad(set_to_none=True)
                    a_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if p["grad_clip"] > 0:
                        nn.utils.clip_grad_norm_(w_params, p["grad_clip"])
                    w_opt.step()
                    a_opt.step()
                else:
                    xv, yv = next(val_stream)
                    xv = fmt(xv, cl)
                    a_opt.zero_grad(set_to_none=True)
                    if self.mode == "second":
                        grads = unrolled_alpha_grads(
                            run,
                            w_params,
                            a_params,
                            w_opt,
                            (xb, yb),
                            (xv, yv),
                            lr,
                            p["w_momentum"],
                            p["w_weight_decay"],
                        )
                    else:
                        grads = torch.autograd.grad(F.cross_entropy(run(xv), yv), a_params)
                    for a, g in zip(a_params, grads):
                        a.grad = g
                    a_opt.step()
                    logits = run(xb)
                    loss = F.cross_entropy(logits, yb)
                    w_opt.zero_grad(set_to_none=True)
                    loss.backward(inputs=w_params)
                    if p["grad_clip"] > 0:
                        nn.utils.clip_grad_norm_(w_params, p["grad_clip"])
                    w_opt.step()
                step += 1
                seen += len(yb)
                loss_sum += float(loss.detach()) * len(yb)
                correct += int((logits.detach().argmax(1) == yb).sum())
                if step % snap_every == 0:
                    rep.alphas(step, epoch, ctx.space.alpha_rows(net.arch_weights()))
                    ctx.report_progress(step / total_steps, epoch)
            val_loss, val_acc = evaluate(run, data.x_val, data.y_val, channels_last=cl)
            genotype = ctx.space.format(net.genotype())
            rep.epoch(
                "search",
                epoch,
                {
                    "train_loss": loss_sum / max(1, seen),
                    "train_acc": correct / max(1, seen),
                    "val_loss": val_loss,
                    "val_acc": val_acc,
                    "lr": lr,
                    "seconds": time.perf_counter() - t0,
                },
            )
            rep.genotype(step, epoch, genotype)
            rep.log(f"search epoch {epoch + 1}/{cfg.epochs}: val acc {val_acc:.3f}, genotype {genotype}")
            ctx.report_progress(step / total_steps, epoch + 1)
        if step % snap_every != 0:
            rep.alphas(step, cfg.epochs - 1, ctx.space.alpha_rows(net.arch_weights()))
        return SearchOutcome(genotype=ctx.space.format(net.genotype()), accuracy=val_acc)


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
