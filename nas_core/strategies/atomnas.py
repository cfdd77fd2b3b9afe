"""AtomNAS (Mei et al., ICLR 2020): search and train in one run by shrinking a supernet of atoms.

Follows ``meijieru/AtomNAS`` (../shared/ALGORITHMS.md section 6) on the MobileNetV2-style space:

- The supernet (``space.build_supernet(style="atomnas")``): every searchable block has kernel sizes 3, 5, 7,
  each with 6x its input channels; every hidden channel of every branch is an atom whose depthwise BN scale
  gamma is its importance (bookkeeping in :mod:`nas_core.atomnas_shrink`).
- The L1 term rho_t * sum_b c_b sum |gamma_b|, c_b = per-atom MACs of branch b over the channel-weighted mean
  (computed once on the supernet, as the reference does); rho_t ramps linearly from 0 over ``warmup_fraction`` of
  the run (the reference: 25 of 350 epochs, so 0.0714 by default), per step. ``l1_mode`` says how it acts:

  * ``"loss"``: added to the label-smoothed CE, as the reference does (``prune.cal_bn_l1_loss`` in ``train.py``).
    Its subgradient goes through RMSProp, whose normalised step keeps a gamma driven to zero oscillating around
    it by ~lr / (1 - momentum) * rho c / sqrt(square_avg + eps), more than the dead threshold once rho is ~1e-2
    at CPU learning rates, so "weight and EMA both small" then rarely fires.
  * ``"proximal"`` (default, a documented departure): a soft-threshold step on the gammas after the optimiser
    step (:func:`proximal_l1_`) by tau_j = lr * rho * c_j / ((1 - momentum) sqrt(square_avg_j + eps)), the step
    the L1 gradient takes in the loss mode at steady momentum, so rho keeps its meaning. It puts an atom at
    exactly zero and keeps it there while its momentum-averaged CE gradient stays under rho * c_j (the L1
    optimality condition), so the dead test works at any rho; and the square averages see the CE alone.
- Dynamic shrinkage after every epoch: an atom is dead when |gamma| <= ``threshold`` for both the live weight and
  its EMA (last epoch: the EMA alone); when the dead atoms' MACs reach ``shrink_fraction`` of the supernet's (the
  reference's 1e6 of a ~1.5 G supernet) or at the last epoch, they are removed for real, with the optimiser state
  and the EMA sliced and their constant output folded into the next BN (:mod:`nas_core.atomnas_shrink`).
- MACs target (``target_macs``): with ``rho`` > 0 rho is fixed after the ramp, as in the reference. With ``rho``
  = 0 the tool finds it: every ``control_steps`` (default a quarter epoch) after the warm-up, rho *= (L / S) **
  ``rho_gain`` (clamped to x1/1.5 .. x1.5 per update, at most ``rho_max``), where L is the MACs the network would
  have without the atoms at (or within ``threshold`` of) zero right now and S a setpoint that leaves the supernet's
  MACs at the end of the warm-up and falls straight in log MACs to the target at ``reach_fraction`` of the run
  (0.6), so the atoms die over time, the controller can back off while they are still reversible (a zeroed gamma
  regrows once rho * c_j is under its CE gradient), and the rest of the run trains the network found. In the
  proximal mode the controller mostly brakes: rho_start kills fast, L falls under S and rho comes down. The cap
  ``rho_max`` is anti-windup for the loss mode, where atoms are not seen at zero while rho rises. Removal is
  irreversible: a shrink never goes past the target (dead atoms of least |gamma EMA| first, up to the target), and
  once the target is met the penalty stops. If the network is still above the target ``finetune_epochs`` before
  the end, the reference's ``cal_mask_network_slimming_by_flops`` removes the atoms of least |gamma EMA| down to
  the target (``final_trim``, a safety net); the log, the shrink events and ``SearchOutcome.extra``
  (``trimmed_macs``) say how much it removed. Measured on digits (``bench/bench_atomnas.py``, 15 epochs = 255
  steps, targets 0.4 and 0.7 of the supernet, 8 seeds): the penalty and shrinkage alone end within +0.1% of the
  target in all 16 runs (no trim); test accuracy is within 1.1 points of the unpenalised supernet of the same seed
  in 15 of them and 5 points under it in one (seed 0 at 0.4; single-run digits accuracy moves by +-2 points from
  epoch to epoch). At 10 epochs the 0.4 target still needs the trim (~10% of the target's MACs).
- ``gamma_init`` (default 1, as a fresh BN): the BN after the branches undoes a common scale of a block's gammas,
  so they first fall together and separate near zero; a lower start shortens that way, but measured at 0.25 (30
  epochs) it did not help: the 0.4 target then needed a trim of 7% of its MACs.
- Optimiser: the reference's RMSProp (alpha 0.9, momentum 0.9, eps 1e-3 inside the square root, square average
  starting at 0, lr applied after the momentum), weight decay 1e-5 on conv/linear weights, label smoothing 0.1,
  lr x0.97 every 2.4 epochs. CPU defaults that differ, each a parameter: lr 0.1 per 256 images (reference 0.016;
  digits needs more to learn in a few epochs); BN momentum 0.1 (the reference's 0.01 averages over ~100 steps,
  more than a digits epoch has; BN eps stays the space's 1e-5 so the exported network is exactly the one trained);
  gamma EMA decay 0.95 (a time constant of ~20 steps, about one digits epoch at batch 64, where the reference's
  0.9999 spans ~2 of its 350 ImageNet epochs and would keep every EMA near its start in a CPU run); dead threshold
  1e-2 (the reference's 1e-3 works with per-step gamma moves of ~lr * rho / sqrt(eps) ~ 4e-4; with the larger lr
  * rho a run of a few hundred steps needs, a gamma driven to zero oscillates around it by more than 1e-3, so
  with 1e-3 almost no atom is ever dead in both the weight and its EMA).

The trained, shrunk network is returned (``SearchOutcome.network``, rebuilt with ``space.build_network`` from its
genotype and loaded with the trained weights), so the pipeline tests and exports it without retraining.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.atomnas_shrink import (
    AtomState,
    ShrinkResult,
    count_parameters,
    network_macs,
    searchable_blocks,
    shrink_network,
)
from nas_core.data import batches
from nas_core.errors import ConfigError
from nas_core.params import ParamSpec
from nas_core.spaces.mobilenet_arch import PRESETS, MobileNetNetwork, estimate_macs, genotype_from_json
from nas_core.spaces.mobilenet_blocks import InvertedResidual
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy
from nas_core.train import EpochMeter, evaluate, fmt, prepare_model, set_lr

#: the reference's lr schedule: x0.97 every 2.4 epochs over 350 epochs
REF_DECAY_EPOCHS, REF_EPOCHS, REF_WARMUP = 2.4, 350, 25


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp as AtomNAS's ``utils/rmsprop.py`` runs it (``eps_inside_sqrt``): ms = a*ms + (1-a)*g^2,
    buf = m*buf + g / sqrt(ms + eps), p -= lr * buf. State keys ``square_avg``/``momentum_buffer`` are shaped
    like the parameter, so shrinking slices them."""

    def __init__(self, params: Any, lr: float, alpha: float = 0.9, eps: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:  # fmt: skip
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            a, eps, m, wd, lr = group["alpha"], group["eps"], group["momentum"], group["weight_decay"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p)
                    if m > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                state["step"] += 1
                sq = state["square_avg"]
                sq.mul_(a).addcmul_(g, g, value=1 - a)
                avg = sq.add(eps).sqrt_()
                if m > 0:
                    buf = state["momentum_buffer"]
                    buf.mul_(m).addcdiv_(g, avg)
                    p.add_(buf, alpha=-lr)
                else:
                    p.addcdiv_(g, avg, value=-lr)
        return loss


def rho_ramp(step: int, warmup_steps: float) -> float:
    """Linear warm-up of the penalty strength from 0 to 1 (the reference's ``linear`` rho scheduler, stepwise)."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def controller_factor(projected: float, target: float, gain: float, max_step: float = 2.0) -> float:
    """Multiplicative rho update (P / target) ** gain, clamped to [1/max_step, max_step]."""
    if target <= 0 or projected <= 0:
        return 1.0 / max_step if projected <= 0 else max_step
    return float(min(max_step, max(1.0 / max_step, (projected / target) ** gain)))


def setpoint(step: int, start_step: float, reach_step: float, macs_from: float, macs_to: float) -> float:
    """MACs the controller steers to at ``step``: ``macs_from`` until ``start_step`` (the end of the warm-up), then
    straight in log MACs down to ``macs_to`` at ``reach_step``, which it keeps."""
    if step <= start_step:
        return macs_from
    if step >= reach_step:
        return macs_to
    u = (step - start_step) / (reach_step - start_step)
    return float(math.exp((1 - u) * math.log(macs_from) + u * math.log(macs_to)))


@torch.no_grad()
def proximal_l1_(net: MobileNetNetwork, atoms: AtomState, opt: RMSpropTF, lr: float, rho: float) -> None:
    """The L1 term as a proximal step after the optimiser step (``l1_mode="proximal"``): each atom's gamma is
    soft-thresholded by tau_j = lr * rho * c_j / ((1 - momentum) * sqrt(square_avg_j + eps)), the step the L1
    gradient takes in the reference's RMSProp at steady momentum, so rho means what it means in the loss mode.
    Unlike that subgradient step, which leaves a gamma at zero oscillating by ~tau, this puts it at exactly zero
    and keeps it there while its momentum-averaged CE gradient stays under rho * c_j (the L1 optimality
    condition), so the dead test sees it whatever rho is."""
    if rho <= 0:
        return
    for i, block in atoms.alive_blocks(net):
        w = block.bn_dw.weight
        group = next(g for g in opt.param_groups if any(q is w for q in g["params"]))
        state = opt.state.get(w, {})
        sq = state.get("square_avg")
        denom = (sq + group["eps"]).sqrt() if sq is not None else torch.full_like(w, group["eps"]).sqrt()
        tau = lr * rho * atoms.penalty[i].to(w.device, w.dtype) / ((1.0 - group["momentum"]) * denom)
        w.copy_(w.sign() * (w.abs() - tau).clamp_min(0.0))


def lr_at(base: float, decay: float, decay_epochs: float, epoch_float: float) -> float:
    """Exponential decay ``base * decay ** (epochs / decay_epochs)`` (continuous, per step)."""
    return base * decay ** (epoch_float / decay_epochs)


def _quartiles(atoms: AtomState, net: MobileNetNetwork) -> str:
    g = [b.bn_dw.weight.detach().abs().flatten().cpu() for _, b in atoms.alive_blocks(net)]
    if not g:
        return "-"
    q = torch.quantile(torch.cat(g).float(), torch.tensor([0.25, 0.5, 0.75]))
    return "/".join(f"{v:.3g}" for v in q.tolist())


def _param_groups(net: nn.Module, wd: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for m in net.modules():
        for name, p in m.named_parameters(recurse=False):
            (decay if isinstance(m, (nn.Conv2d, nn.Linear)) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


class AtomNASStrategy(Strategy):
    """Resource-aware atomic block selection with dynamic network shrinkage; trains its own network."""

    name = "atomnas"
    label = "AtomNAS"
    description = (
        "Search and train in one run: every hidden channel of every kernel-size branch is an atom; a MACs-weighted "
        "L1 penalty on the atoms' BN scales drives unimportant ones to zero and they are removed while it trains, "
        "until the network meets the MACs target. No retraining."
    )
    relative_cost = 1.0
    trains_network = True
    params = (
        ParamSpec(
            "target_macs",
            0.0,
            "float",
            "MACs target in millions (paper convention, one image); 0 = half of the supernet's MACs",
            0.0,
            1e6,
        ),
        ParamSpec(
            "rho",
            0.0,
            "float",
            "Penalty strength rho after warm-up; 0 = found by the tool (a controller moves it every quarter epoch "
            "so the MACs left without the atoms at zero follow a setpoint falling to the target; the reference "
            "uses 1.8e-4 / 1.2e-4 / 1.0e-4 for AtomNAS-A/B/C)",
            0.0,
            10.0,
        ),
        ParamSpec("rho_start", 5e-3, "float", "Starting rho when it is found by the tool", 1e-8, 10.0),
        ParamSpec(
            "rho_max",
            0.02,
            "float",
            "Largest rho the tool may set (anti-windup: with the L1 in the loss a gamma driven to zero oscillates "
            "by more than the dead threshold, the controller sees no atom die and would raise rho without bound)",
            1e-8,
            10.0,
        ),
        ParamSpec(
            "l1_mode",
            "proximal",
            "choice",
            "How the L1 term acts: proximal = a soft-threshold step on the gammas after the optimiser step (puts "
            "atoms at exactly zero, so the dead test works at any rho; a departure from the reference), loss = in "
            "the loss as the reference does",
            choices=("proximal", "loss"),
        ),
        ParamSpec(
            "rho_gain", 1.0, "float", "Controller gain: rho *= (MACs left / setpoint) ** gain per update", 0.0, 20.0
        ),
        ParamSpec(
            "reach_fraction",
            0.6,
            "float",
            "When rho is found by the tool: fraction of the run at which the controller's setpoint reaches the "
            "target (it falls from the supernet's MACs after the warm-up); the rest trains the network found",
            0.0,
            1.0,
        ),
        ParamSpec(
            "control_steps", 0, "int", "Steps between controller updates; 0 = a quarter of an epoch", 0, 1_000_000
        ),
        ParamSpec(
            "gamma_init",
            1.0,
            "float",
            "Initial atom gammas (the depthwise BN scales); the BN after the branches undoes a common scale, so "
            "a lower start only shortens the penalty's way down to zero",
            1e-3,
            10.0,
        ),
        ParamSpec(
            "warmup_fraction",
            REF_WARMUP / REF_EPOCHS,
            "float",
            "Fraction of the run over which rho ramps linearly from 0 (the reference: 25 of 350 epochs)",
            0.0,
            1.0,
        ),
        ParamSpec(
            "threshold",
            1e-2,
            "float",
            "An atom is dead when |gamma| and its EMA are at most this (the reference: 1e-3, for ~1e5 steps; at "
            "a CPU run's lr * rho a dying gamma oscillates around 0 by more than 1e-3)",
            0.0,
            1.0,
        ),
        ParamSpec(
            "ema_decay",
            0.95,
            "float",
            "Decay of the gammas' moving average per step (the reference's 0.9999 spans ~2 of its 350 ImageNet "
            "epochs; 0.95 spans ~20 steps, about one digits epoch)",
            0.0,
            0.999999,
        ),
        ParamSpec(
            "shrink_fraction",
            1e-3,
            "float",
            "Shrink when the dead atoms' MACs reach this fraction of the supernet's MACs (the reference: 1e6 MACs "
            "of a ~1.5 G supernet); the last epoch always shrinks",
            0.0,
            1.0,
        ),
        ParamSpec(
            "final_trim",
            True,
            "bool",
            "If the network is still above the MACs target finetune_epochs before the end, remove the atoms of "
            "least |gamma EMA| down to the target (the reference's slimming by FLOPs) and stop the penalty",
        ),
        ParamSpec("finetune_epochs", 1, "int", "Epochs trained after the final trim (penalty off)", 0, 10_000),
        ParamSpec("lr", 0.1, "float", "Learning rate per 256 images (the reference: 0.016), RMSProp", 1e-6, 10.0),
        ParamSpec("lr_decay", 0.97, "float", "Learning-rate decay factor (the reference: 0.97)", 0.01, 1.0),
        ParamSpec(
            "lr_decay_epochs",
            REF_DECAY_EPOCHS,
            "float",
            "Epochs per lr decay step (the reference: 2.4); 0 = 2.4 of 350 epochs scaled to this run (x0.0117 over "
            "the run, which stalls the gammas of a short run)",
            0.0,
            1e6,
        ),
        ParamSpec("momentum", 0.9, "float", "RMSProp momentum", 0.0, 0.999),
        ParamSpec("rms_alpha", 0.9, "float", "RMSProp square-average decay", 0.0, 0.9999),
        ParamSpec("rms_eps", 1e-3, "float", "RMSProp epsilon (inside the square root, as the reference)", 1e-12, 1.0),
        ParamSpec("weight_decay", 1e-5, "float", "Weight decay of conv and linear weights", 0.0, 1.0),
        ParamSpec("label_smoothing", 0.1, "float", "Label smoothing of the cross-entropy", 0.0, 0.5),
        ParamSpec("bn_momentum", 0.1, "float", "BN running-statistics momentum (the reference: 0.01)", 1e-4, 1.0),
        ParamSpec(
            "preset",
            "auto",
            "choice",
            "Stage table of the supernet; auto = the search table for the input size",
            choices=("auto", *PRESETS),
        ),
        ParamSpec("width", 1.0, "float", "Width multiplier of the supernet", 0.1, 4.0),
        ParamSpec("expansion", 6, "int", "Hidden channels per kernel branch, as a multiple of the input", 1, 12),
    )

    # ------------------------------------------------------------------ helpers

    def build_supernet(self, ctx: SearchContext) -> MobileNetNetwork:
        p, data = ctx.params, ctx.data
        options: dict[str, Any] = {"style": "atomnas", "width": float(p["width"]), "expansion": int(p["expansion"])}
        if p["preset"] != "auto":
            options["preset"] = p["preset"]
        net = ctx.space.build_supernet(data.num_classes, data.input_shape, 16, 1, **options)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = float(p["bn_momentum"])
        with torch.no_grad():
            for i, _ in searchable_blocks(net):
                if isinstance(net.blocks[i], InvertedResidual):
                    net.blocks[i].bn_dw.weight.fill_(float(p["gamma_init"]))
        return net  # type: ignore[return-value]

    @staticmethod
    def fixed_macs(net: MobileNetNetwork, num_classes: int, input_shape: Any) -> int:
        """MACs no shrink can remove: stem, fixed blocks, head, classifier, and one atom of every block that
        cannot vanish (no residual)."""
        g = net.current_genotype()
        blocks = ["zero" if plan.keeps_shape else {"3": 1} for plan in net.layout.searchable]
        doc = {"space": "mobilenet", "preset": g.preset, "width": g.width, "blocks": blocks}
        return estimate_macs(genotype_from_json(doc), num_classes, input_shape)

    # ------------------------------------------------------------------ search

    def search(self, ctx: SearchContext) -> SearchOutcome:  # noqa: C901 - one readable loop
        cfg, p, data, rep, space = ctx.config, ctx.params, ctx.data, ctx.reporter, ctx.space
        cl = bool(cfg.channels_last)
        mf = torch.channels_last if cl else torch.contiguous_format
        torch.manual_seed(cfg.seed)
        net = self.build_supernet(ctx)
        nc, shape = data.num_classes, data.input_shape
        macs_super = network_macs(net, nc, shape)
        floor = self.fixed_macs(net, nc, shape)
        target = float(p["target_macs"]) * 1e6 if p["target_macs"] > 0 else 0.5 * macs_super
        if target >= macs_super:
            raise ConfigError("params.target_macs", f"{target / 1e6:.4g} M is not below the supernet's "
                              f"{macs_super / 1e6:.4g} M MACs: nothing to search")  # fmt: skip
        if target <= floor:
            raise ConfigError("params.target_macs", f"{target / 1e6:.4g} M is at or below the {floor / 1e6:.4g} M "
                              "MACs no shrink can remove (stem, head, one atom per non-residual block)")  # fmt: skip
        auto = p["rho"] <= 0
        rho = min(float(p["rho_start"]), float(p["rho_max"])) if auto else float(p["rho"])
        if cfg.compile:
            rep.log("compile is not used by AtomNAS: the network changes shape while it trains", "warning")

        net = prepare_model(net, cl, ctx.device)
        atoms = AtomState.from_network(net, float(p["ema_decay"]))
        steps_per_epoch = max(1, math.ceil(len(data.y_train) / cfg.batch_size))
        total_steps = cfg.epochs * steps_per_epoch
        warmup_steps = float(p["warmup_fraction"]) * total_steps
        base_lr = float(p["lr"]) * cfg.batch_size / 256
        decay_epochs = float(p["lr_decay_epochs"]) or REF_DECAY_EPOCHS * cfg.epochs / REF_EPOCHS
        opt = RMSpropTF(_param_groups(net, float(p["weight_decay"])), lr=base_lr, alpha=float(p["rms_alpha"]),
                        eps=float(p["rms_eps"]), momentum=float(p["momentum"]))  # fmt: skip
        shrink_macs = float(p["shrink_fraction"]) * macs_super
        threshold = float(p["threshold"])
        trim_epoch = max(0, cfg.epochs - 1 - int(p["finetune_epochs"])) if p["final_trim"] else -1
        proximal = p["l1_mode"] == "proximal"
        control_steps = int(p["control_steps"]) or max(1, steps_per_epoch // 4)
        reach_step = max(warmup_steps, float(p["reach_fraction"]) * total_steps)
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        augment = bool(getattr(data, "augment", False))
        if augment:
            from nas_core.augment import random_crop_flip

            aug_gen = torch.Generator().manual_seed(cfg.seed + 3)
        rep.log(
            f"{self.label}: supernet {macs_super / 1e6:.4g} M MACs, {count_parameters(net):,} params, "
            f"{sum(atoms.alive_atoms(net).values()):,} atoms in {len(atoms.names)} blocks; target "
            f"{target / 1e6:.4g} M MACs (floor {floor / 1e6:.4g} M); rho "
            + (
                f"found by the controller from {rho:g} (setpoint at the target by step {reach_step:.0f})"
                if auto
                else f"{rho:g} (given)"
            )
            + f", L1 {p['l1_mode']}, warm-up {warmup_steps:.0f} steps; {steps_per_epoch} steps/epoch, lr {base_lr:.4g} "
            f"x{p['lr_decay']} every {decay_epochs:.3g} epochs"
        )

        step = 0
        penalty_on = True
        macs_now = macs_super
        macs_before_trim: float | None = None
        trimmed = 0
        reached = False
        macs_uncapped = float(macs_super)
        shrinks = 0
        val_acc = float("nan")
        history: list[dict[str, float]] = []

        def macs_left() -> float:
            """MACs the network would have without the atoms the penalty holds at (or within ``threshold`` of)
            zero now: what the controller steers."""
            return macs_now - atoms.dead_macs(atoms.dead_masks(net, threshold, ema_only=False, live_only=True))

        def report(epoch: int, step_ms: float | None) -> None:
            values: dict[str, float] = {
                "macs/current": macs_now / 1e6,
                "macs/target": target / 1e6,
                "macs/setpoint": setpoint(step, warmup_steps, reach_step, macs_super, target) / 1e6
                if auto
                else target / 1e6,
                "macs/left": macs_left() / 1e6,
                "params/current": float(count_parameters(net)),
                "rho": rho * (rho_ramp(step, warmup_steps) if penalty_on else 0.0),
            }
            for name, n in atoms.alive_atoms(net).items():
                values[f"atoms/{name}"] = float(n)
            by_k = atoms.alive_by_kernel(net)
            for k in (3, 5, 7):
                values[f"kernels/k{k}"] = float(by_k.get(k, 0))
            if step_ms is not None:
                values["time/step_ms"] = step_ms
            rep.series(step, epoch, values)
            rep.genotype(step, epoch, space.format(net.current_genotype()))

        def do_shrink(masks: dict[int, torch.Tensor], epoch: int, reason: str, ema_only: bool) -> ShrinkResult:
            nonlocal macs_now, shrinks
            before, params_before = macs_now, count_parameters(net)
            res = shrink_network(net, masks, opt, atoms, mf)
            macs_now = network_macs(net, nc, shape)
            if res.total:
                shrinks += 1
                rep.event(
                    "shrink",
                    step,
                    {
                        "epoch": epoch,
                        "reason": reason,
                        "ema_only": ema_only,
                        "removed": dict(res.removed),
                        "removed_by_kernel": {f"k{k}": n for k, n in sorted(res.removed_by_kernel.items())},
                        "removed_total": res.total,
                        "vanished_blocks": res.vanished_blocks,
                        "vanished_branches": res.vanished_branches,
                        "macs_before": before,
                        "macs_after": macs_now,
                        "params_before": params_before,
                        "params_after": count_parameters(net),
                    },
                )
                rep.log(
                    f"epoch {epoch + 1}: {reason} shrink removed {res.total} atoms "
                    f"({', '.join(f'{b} -{n}' for b, n in sorted(res.removed.items()))}); MACs {before / 1e6:.4g} M "
                    f"-> {macs_now / 1e6:.4g} M"
                    + (f"; blocks now identity: {', '.join(res.vanished_blocks)}" if res.vanished_blocks else "")
                )
            return res

        report(0, None)
        for epoch in range(cfg.epochs):
            net.train()
            meter, l1_sum = EpochMeter(), 0.0
            lr = base_lr
            for xb, yb in batches(data.x_train, data.y_train, cfg.batch_size, gen):
                ctx.check_stop()
                lr = lr_at(base_lr, float(p["lr_decay"]), decay_epochs, step / steps_per_epoch)
                set_lr(opt, lr)
                if augment:
                    xb = random_crop_flip(xb, aug_gen)
                logits = net(fmt(xb, cl))
                loss = F.cross_entropy(logits, yb, label_smoothing=float(p["label_smoothing"]))
                rho_t = rho * rho_ramp(step, warmup_steps) if penalty_on else 0.0
                total = loss
                if rho_t > 0 and not proximal:
                    l1 = atoms.l1_penalty(net)
                    total = loss + rho_t * l1
                    l1_sum += float(l1.detach()) * rho_t * len(yb)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                if rho_t > 0 and proximal:
                    proximal_l1_(net, atoms, opt, lr, rho_t)
                    with torch.no_grad():
                        l1_sum += float(atoms.l1_penalty(net)) * rho_t * len(yb)
                atoms.update_ema(net)
                step += 1
                if auto and penalty_on and step > warmup_steps and step % control_steps == 0:
                    rho *= controller_factor(macs_left(), setpoint(step, warmup_steps, reach_step, macs_super, target),
                                             float(p["rho_gain"]), 1.5)  # fmt: skip
                    rho = min(rho, float(p["rho_max"]))
                meter.add(loss, logits, yb)
                if step % max(1, steps_per_epoch // 4) == 0:
                    ctx.report_progress(step / total_steps, epoch)
            step_ms = 1000 * meter.seconds / max(1, math.ceil(meter.seen / cfg.batch_size))
            val_loss, val_acc = evaluate(net, data.x_val, data.y_val, channels_last=cl)
            rep.epoch("search", epoch, meter.metrics(val_loss, val_acc, lr, l1_loss=l1_sum / max(1, meter.seen)))
            last = epoch == cfg.epochs - 1
            masks = atoms.dead_masks(net, threshold, ema_only=last)
            dead = atoms.dead_macs(masks)
            if dead > 0 and (dead >= shrink_macs or last):
                reason = "final" if last else "threshold"
                if macs_now - dead < target:  # do not shrink past the target: the least |gamma EMA| first
                    macs_uncapped = min(macs_uncapped, macs_now - dead)
                    masks = atoms.lowest_atoms_mask(net, macs_now - target, masks, at_least=False)
                    reason += " (capped at the target)"
                    reached = True
                do_shrink(masks, epoch, reason, last)
            if epoch == trim_epoch and not reached and macs_now > target:
                macs_before_trim = macs_now
                trim = atoms.lowest_atoms_mask(net, macs_now - target)
                trimmed = do_shrink(trim, epoch, "trim to target", True).total
                reached = True
            if macs_now <= target:
                reached = True
            if reached and penalty_on:
                penalty_on = False
                rep.log(f"epoch {epoch + 1}: MACs target reached ({macs_now / 1e6:.4g} M); penalty off, the "
                        "remaining epochs train the network found")  # fmt: skip
            history.append({"epoch": epoch, "macs": macs_now, "val_acc": val_acc, "step_ms": step_ms})
            report(epoch, step_ms)
            rep.log(
                f"epoch {epoch + 1}/{cfg.epochs}: val acc {val_acc:.3f}, MACs {macs_now / 1e6:.4g} M "
                f"(target {target / 1e6:.4g} M, {macs_left() / 1e6:.4g} M without the atoms at zero), "
                f"{step_ms:.1f} ms/step, "
                f"rho {rho:.3g}; |gamma| quartiles {_quartiles(atoms, net)}"
            )
            ctx.report_progress(step / total_steps, epoch + 1)

        final = self.stand_alone(ctx, net)
        genotype = space.format(final.current_genotype())
        gap = (macs_now - target) / target
        rep.log(
            f"{self.label}: final network {macs_now / 1e6:.4g} M MACs ({gap:+.1%} of the target "
            f"{target / 1e6:.4g} M; the penalty alone reached "
            f"{(macs_before_trim if macs_before_trim is not None else macs_now) / 1e6:.4g} M, trim removed "
            f"{trimmed} atoms), {count_parameters(final):,} params, val acc {val_acc:.3f}"
        )
        extra = {
            "target_macs": target,
            "final_macs": macs_now,
            "supernet_macs": macs_super,
            "macs_gap": gap,
            "macs_before_trim": macs_before_trim,
            "macs_all_dead_removed": min(macs_uncapped, macs_now),
            "trimmed_atoms": trimmed,
            "trimmed_macs": (macs_before_trim - macs_now) if macs_before_trim is not None else 0.0,
            "l1_mode": p["l1_mode"],
            "shrinks": shrinks,
            "rho_final": rho,
            "rho_mode": "auto" if auto else "fixed",
        }
        return SearchOutcome(genotype=genotype, accuracy=val_acc, accuracy_kind="val", extra=extra, network=final)

    @staticmethod
    def stand_alone(ctx: SearchContext, net: MobileNetNetwork) -> MobileNetNetwork:
        """The network ``space.build_network`` builds from the shrunk genotype, with every trained weight and BN
        statistic copied in (the export rebuilds it the same way)."""
        g = net.current_genotype()
        out = ctx.space.build_network(g, ctx.data.num_classes, ctx.data.input_shape)
        state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
        out.load_state_dict(state)
        for m_new, m_old in zip(out.modules(), net.modules()):
            if isinstance(m_new, nn.BatchNorm2d):
                m_new.momentum, m_new.eps = m_old.momentum, m_old.eps
        assert all(isinstance(b, (InvertedResidual, nn.Identity)) for b in out.blocks)
        return out.eval()


ATOMNAS = AtomNASStrategy()
