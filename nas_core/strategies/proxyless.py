"""ProxylessNAS (Cai, Zhu, Han, ICLR 2019): binarised paths and a latency- or MACs-aware loss.

Follows ``mit-han-lab/proxylessnas`` (``search/nas_manager.py``, ``search/modules/mix_op.py``,
``search/imagenet_arch_search.py``):

- weight step on every training batch: one op per block sampled from softmax(alpha), only that path runs
  (:meth:`ProxylessSupernet.sample_single`); SGD with Nesterov momentum 0.9, weight decay 4e-5, label
  smoothing 0.1, cosine lr (the reference's search settings; lr 0.025 suits the CPU batch of 64 as well).
- arch step after every ``arch_every`` (5) weight steps once the warm-up is over, on a validation batch,
  Adam lr 1e-3 betas (0, 0.999); ``binary_mode`` picks the reference's gradient mode:

  - ``full_v2`` (default, as the reference's ``--grad_binary_mode`` default; its one search script,
    ``imagenet_arch_search.py``, keeps it for every target): one path per block sampled, only it runs in
    the forward; the backward computes the gate gradient of every candidate (each one's output on the
    block input, no graph: :class:`~nas_core.spaces.mobilenet_proxyless.FullV2Gate`), and
    dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) over all ops moves every alpha of the block. The
    resource expectation uses the full softmax, so its exact gradient reaches all alphas.
  - ``two``: two sampled paths per block, the gate gradient of the pair turned into alpha gradients of the
    pair (:func:`nas_core.spaces.mobilenet_proxyless.alpha_grad_from_gates`), then the pair's alphas
    re-centred (log-sum-exp kept). As in the reference, the resource expectation uses the pair's
    probabilities (other ops weigh 0), so only the two sampled alphas move; the reported
    ``latency/expected`` is still the expectation over all ops.

  In both modes a block whose sampled op is ``zero`` is skipped and its alphas are left alone (the
  reference sets their gradient to None, the resource term's part included).
- warm-up: the reference trains weights alone for 40 epochs, then searches 120 more and skips the arch
  step in the first of those (41 of 161 epochs, about a quarter). ``warmup_epochs=-1`` (auto) takes
  ``epochs // 4`` weight-only epochs; arch steps start in the epoch after them.
- resource: "latency" (expected latency from the lookup table of :mod:`nas_core.latency_lut`, measured
  on this machine once and stored under ``lut_dir``) or "macs" (exact per-op MACs).
- loss ``mul#log``: CE * alpha_r * (log E / log ref)^beta (alpha_r 0.2, beta 0.3); ``add#linear``:
  CE + lambda * (E - ref) / ref (lambda 0.1); ref is the user's target. The reference's ref is 80 ms
  (mobile) or 300 M MACs; log(E)/log(ref) depends on the unit, so E and ref are first scaled so that ref
  maps to the reference's 80 (latency) or 300e6 (MACs): the loss then pushes as hard at E = 2*ref here as
  the reference does at 160 ms, and stays defined for sub-millisecond CPU latencies.

The derived genotype (argmax per block) is reported every epoch and trained from scratch by the pipeline.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from nas_core.data import batches, endless_batches
from nas_core.errors import ConfigError
from nas_core.latency_lut import (
    LUT_MIN_SECONDS,
    CostTable,
    default_lut_dir,
    latency_table,
    load_or_build_lut,
    macs_table,
    predict_latency,
)
from nas_core.params import ParamSpec
from nas_core.spaces.mobilenet_arch import OPS, PRESETS
from nas_core.spaces.mobilenet_proxyless import (
    BINARY_MODES,
    ProxylessSupernet,
    alpha_grad_from_gates,
    recentre_pair,
)
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy
from nas_core.strategies.resume import with_checkpoints
from nas_core.train import EpochMeter, cosine_lr, evaluate, fmt, prepare_model, set_lr

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig

#: The reference's ref values the log-loss is calibrated at (``imagenet_arch_search.py``: 80 ms, 300 MFLOPs).
REFERENCE_REF = {"latency": 80.0, "macs": 300e6}


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "resource",
        "latency",
        "choice",
        "What the architecture loss trades accuracy against: 'latency' "
        "(lookup table measured on this machine) or 'macs'",
        choices=("latency", "macs"),
    ),
    ParamSpec(
        "target_latency_ms",
        0.0,
        "float",
        "Latency target in ms for resource=latency (batch 1, CPU, "
        "lut_threads threads). 0 = the expected latency of the supernet at the start",
        0.0,
        1e6,
    ),
    ParamSpec(
        "target_macs",
        0.0,
        "float",
        "MACs target in millions (M MACs) for resource=macs. 0 = the expected MACs of the supernet at the start",
        0.0,
        1e6,
    ),
    ParamSpec(
        "loss_type",
        "mul#log",
        "choice",
        "Resource loss: 'mul#log' CE*alpha_r*(log E/log ref)^beta or 'add#linear' CE + lambda*(E-ref)/ref",
        choices=("mul#log", "add#linear"),
    ),
    ParamSpec("reg_alpha", 0.2, "float", "alpha_r of mul#log", 0.0, 100.0),
    ParamSpec("reg_beta", 0.3, "float", "beta of mul#log", 0.0, 10.0),
    ParamSpec("reg_lambda", 0.1, "float", "lambda of add#linear", 0.0, 100.0),
    ParamSpec(
        "binary_mode",
        "full_v2",
        "choice",
        "Architecture-step gradient (reference default full_v2): 'full_v2' runs one sampled path per block and "
        "takes every candidate's gate gradient in the backward, so all alphas move; 'two' runs two sampled "
        "paths and updates only their two alphas, re-centred",
        choices=BINARY_MODES,
    ),
    ParamSpec("arch_every", 5, "int", "One architecture step after every this many weight steps", 1, 10_000),
    ParamSpec(
        "warmup_epochs",
        -1,
        "int",
        "Weight-only epochs before architecture steps start (reference: 40 "
        "warm-up + 1 of 161). -1 = auto, a quarter of the epochs",
        -1,
        10_000,
    ),
    ParamSpec("arch_lr", 1e-3, "float", "Alpha learning rate (Adam)", 1e-7, 1.0),
    ParamSpec("arch_beta1", 0.0, "float", "Adam beta1 for alphas (reference 0)", 0.0, 0.9999),
    ParamSpec("arch_beta2", 0.999, "float", "Adam beta2 for alphas", 0.0, 0.99999),
    ParamSpec("arch_weight_decay", 0.0, "float", "Weight decay for alphas (reference 0)", 0.0, 1.0),
    ParamSpec("w_lr", 0.025, "float", "Weight learning rate (SGD, Nesterov, cosine-annealed)", 1e-6, 10.0),
    ParamSpec("w_lr_min", 0.0, "float", "Final weight learning rate of the cosine schedule", 0.0, 10.0),
    ParamSpec("w_momentum", 0.9, "float", "SGD momentum for the weights", 0.0, 0.999),
    ParamSpec("w_weight_decay", 4e-5, "float", "Weight decay for the weights (reference 4e-5)", 0.0, 1.0),
    ParamSpec("label_smoothing", 0.1, "float", "Label smoothing of the weight steps (reference 0.1)", 0.0, 0.99),
    ParamSpec(
        "preset",
        "auto",
        "choice",
        "Stage table searched: auto = the search table for the input size (digits, cifar-search, imagenet-search)",
        choices=("auto", *PRESETS),
    ),
    ParamSpec("width", 1.0, "float", "Width multiplier of the searched network", 0.1, 4.0),
    ParamSpec(
        "lut_threads",
        1,
        "int",
        "Threads the latency table is measured with (the final network's latency is measured with 1)",
        1,
        256,
    ),
    ParamSpec(
        "lut_repeats",
        50,
        "int",
        "Timed passes per candidate network the table is measured in (each entry: the median over the fastest "
        "10% of them)",
        3,
        10_000,
    ),
    ParamSpec(
        "lut_seconds",
        LUT_MIN_SECONDS,
        "float",
        "Least time (s) the table's measurement is spread over, in interleaved rounds, so a burst of other load on "
        "the machine cannot cover all of one candidate's passes",
        0.0,
        600.0,
    ),
    ParamSpec("lut_warmup", 10, "int", "Warm-up runs per table entry", 0, 10_000),
    ParamSpec(
        "lut_dir",
        "",
        "text",
        "Folder of stored latency tables (reused across runs); empty = "
        "$NAS_RUNS_DIR/latency_luts (default nas_runs/latency_luts)",
    ),
    ParamSpec("snapshots_per_epoch", 4, "int", "Alpha snapshots recorded per epoch (for the plots)", 1, 1000),
)


def resource_loss(
    ce: torch.Tensor,
    expected: torch.Tensor,
    ref: float,
    loss_type: str,
    resource: str,
    alpha_r: float = 0.2,
    beta: float = 0.3,
    lam: float = 0.1,
) -> torch.Tensor:
    """The reference's ``add_regularization_loss`` with E and ref rescaled so ref maps to its 80 ms / 300 M."""
    if loss_type == "mul#log":
        r = REFERENCE_REF[resource]
        scaled = (expected * (r / ref)).clamp_min(1.0 + 1e-6)  # log must stay positive (E > ref / 80)
        return alpha_r * ce * (torch.log(scaled) / math.log(r)) ** beta
    if loss_type == "add#linear":
        return ce + lam * (expected - ref) / ref
    raise ValueError(f"unknown loss type {loss_type!r}; use 'mul#log' or 'add#linear'")


def pair_probs_matrix(net: ProxylessSupernet) -> torch.Tensor:
    """(blocks x OPS): the softmax over each block's sampled pair at the pair's ops, 0 elsewhere
    (reference ``current_prob_over_ops`` in mode "two"); differentiable in the two alphas."""
    rows = []
    for b in net.mixed:
        pair = [b.active, b.inactive]
        pp = torch.softmax(b.alpha[pair], dim=0)
        row = [b.alpha.new_zeros(())] * len(OPS)
        for j, idx in enumerate(pair):
            row[OPS.index(b.ops[idx])] = pp[j]
        rows.append(torch.stack(row))
    return torch.stack(rows)


def arch_step(
    net: ProxylessSupernet,
    a_opt: torch.optim.Optimizer,
    xv: torch.Tensor,
    yv: torch.Tensor,
    table: CostTable,
    ref: float,
    p: dict[str, Any],
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One architecture step in mode ``p["binary_mode"]``: "full_v2" moves every alpha of a block, "two" only
    the two sampled ones (re-centred); blocks whose sampled op is ``zero`` keep their alphas."""
    mode = p.get("binary_mode", "full_v2")
    if mode not in BINARY_MODES:
        raise ValueError(f"unknown binary mode {mode!r}; use one of {', '.join(BINARY_MODES)}")
    net.sample_arch(mode, generator)
    try:
        logits = net(xv)
        ce = F.cross_entropy(logits, yv)
        # full_v2: E over all ops (reference current_prob_over_ops = probs); two: over the sampled pair
        expected = table.expected(net.probs_matrix() if mode == "full_v2" else pair_probs_matrix(net))
        loss = resource_loss(
            ce, expected, ref, p["loss_type"], p["resource"], p["reg_alpha"], p["reg_beta"], p["reg_lambda"]
        )
        alphas, gates = net.arch_parameters(), net.gates()
        grads = torch.autograd.grad(loss, alphas + gates, allow_unused=True)
        d_alphas, d_gates = grads[: len(alphas)], grads[len(alphas) :]
        old: list[tuple[list[int], list[float]] | None] = []
        for b, a, da, dg in zip(net.mixed, alphas, d_alphas, d_gates):
            if b.is_zero(b.active):  # reference: the block was skipped, its alphas are left alone
                a.grad = None
                old.append(None)
                continue
            idx = list(range(len(b.ops))) if mode == "full_v2" else [b.active, int(b.inactive)]  # type: ignore[arg-type]
            g = torch.zeros_like(a) if da is None else da.detach().clone()
            gate_grad = (
                torch.zeros(len(idx), dtype=a.dtype, device=a.device) if dg is None else dg.detach()[idx].to(a.dtype)
            )
            g[idx] += alpha_grad_from_gates(gate_grad, torch.softmax(a.detach()[idx], dim=0))
            a.grad = g
            old.append((idx, a.detach()[idx].tolist()) if mode == "two" else None)
        a_opt.step()
        for a, o in zip(alphas, old):
            if o is not None:
                recentre_pair(a, o[0], o[1])
        a_opt.zero_grad(set_to_none=True)
    finally:
        net.sample_single(generator)  # leave the net in single-path mode with fresh samples
    return {"ce": float(ce.detach()), "total": float(loss.detach()), "expected": float(expected.detach())}


class ProxylessStrategy(Strategy):
    """Latency/MACs-aware ProxylessNAS on the MobileNetV2-style space."""

    name = "proxylessnas"
    label = "ProxylessNAS"
    description = (
        "Binarised paths (one op per block per step; architecture step full_v2, every candidate's gate "
        "gradient, or two-path), latency lookup table measured on this machine or MACs, the user's target "
        "in the loss."
    )
    params = PARAMS
    relative_cost = 1.3
    resumable = True

    @staticmethod
    def warmup_epochs(p: dict[str, Any], epochs: int) -> int:
        return epochs // 4 if p["warmup_epochs"] < 0 else int(p["warmup_epochs"])

    def validate(self, config: ExperimentConfig) -> None:
        p, epochs = config.params, config.epochs
        if self.warmup_epochs(p, epochs) >= epochs:
            raise ConfigError(
                "params.warmup_epochs",
                f"{p['warmup_epochs']} warm-up epochs leave none of the {epochs} epochs for the architecture "
                "search; use fewer (or -1 for a quarter)",
            )
        if p["w_lr_min"] > p["w_lr"]:
            raise ConfigError("params.w_lr_min", f"must not exceed w_lr ({p['w_lr']})")

    def cost_table(self, ctx: SearchContext, net: ProxylessSupernet) -> tuple[CostTable, Any]:
        """The resource table: the stored or freshly measured latency table, or exact MACs."""
        p, data = ctx.params, ctx.data
        if p["resource"] == "macs":
            return macs_table(net.preset, net.width, data.input_shape, data.num_classes), None
        lut_dir = Path(p["lut_dir"]) if p["lut_dir"] else default_lut_dir()
        lut = load_or_build_lut(
            lut_dir,
            net.preset,
            net.width,
            data.input_shape,
            data.num_classes,
            threads=p["lut_threads"],
            warmup=p["lut_warmup"],
            repeats=p["lut_repeats"],
            min_seconds=p["lut_seconds"],
            log=ctx.reporter.log,
        )
        ctx.reporter.event(
            "latency_lut",
            0,
            {
                "path": str(lut.path),
                "reused": lut.reused,
                "build_seconds": lut.build_seconds,
                "threads": lut.threads,
                "device": lut.device,
                "fixed_ms": lut.fixed_ms,
            },
        )
        return latency_table(lut), lut

    def search(self, ctx: SearchContext) -> SearchOutcome:
        ctx, checkpoints = with_checkpoints(ctx)  # what it charts goes into the checkpoints too
        cfg, p, data, rep = ctx.config, ctx.params, ctx.data, ctx.reporter
        self.validate(ctx.config)
        cl = cfg.channels_last
        torch.manual_seed(cfg.seed)
        net: ProxylessSupernet = ctx.space.build_supernet(
            data.num_classes,
            data.input_shape,
            cfg.channels,
            cfg.cells_per_stage,
            style="proxylessnas",
            preset=None if p["preset"] == "auto" else p["preset"],
            width=p["width"],
        )  # type: ignore[assignment]
        table, lut = self.cost_table(ctx, net)
        net = prepare_model(net, cl, ctx.device)
        resource = p["resource"]
        chart = "latency" if resource == "latency" else "macs"
        unit = 1.0 if resource == "latency" else 1e-6  # series: ms, or millions of MACs
        target_param = p["target_latency_ms"] if resource == "latency" else p["target_macs"] * 1e6
        start_expected = float(table.expected(net.probs_matrix().detach()))
        ref = float(target_param) if target_param > 0 else start_expected
        rep.log(
            f"{self.label}: {resource} target {ref * unit:.4g} {'ms' if unit == 1 else 'M MACs'}"
            f"{' (auto: the supernet expectation at the start)' if target_param <= 0 else ''}; "
            f"expected now {start_expected * unit:.4g}, loss {p['loss_type']}"
        )

        w_params, a_params = net.weight_parameters(), net.arch_parameters()
        w_opt = torch.optim.SGD(
            w_params,
            lr=p["w_lr"],
            momentum=p["w_momentum"],
            nesterov=p["w_momentum"] > 0,
            weight_decay=p["w_weight_decay"],
        )
        a_opt = torch.optim.Adam(
            a_params,
            lr=p["arch_lr"],
            betas=(p["arch_beta1"], p["arch_beta2"]),
            eps=1e-8,
            weight_decay=p["arch_weight_decay"],
        )
        gen = torch.Generator().manual_seed(cfg.seed + 1)
        val_stream = endless_batches(
            data.x_val, data.y_val, cfg.batch_size, torch.Generator().manual_seed(cfg.seed + 2)
        )
        path_gen = torch.Generator().manual_seed(cfg.seed + 3)
        steps_per_epoch = max(1, math.ceil(len(data.y_train) / cfg.batch_size))
        total_steps = cfg.epochs * steps_per_epoch
        snap_every = max(1, steps_per_epoch // p["snapshots_per_epoch"])
        warmup = self.warmup_epochs(p, cfg.epochs)
        rep.log(
            f"{self.label}: {len(net.mixed)} searchable blocks, {sum(x.numel() for x in w_params):,} supernet "
            f"weights, {steps_per_epoch} steps/epoch, {cfg.epochs} epochs ({warmup} weight-only warm-up), "
            f"arch step ({p['binary_mode']}) every {p['arch_every']} weight steps"
        )

        arch_log: list[dict[str, float]] = []
        step = 0

        def snapshot(epoch: int) -> None:
            rep.alphas(step, epoch, ctx.space.alpha_rows(net.arch_weights(), net.block_names))
            values = {
                f"{chart}/expected": float(table.expected(net.probs_matrix().detach())) * unit,
                f"{chart}/target": ref * unit,
            }
            if lut is not None:
                values["latency/derived"] = predict_latency(lut, net.genotype())
            if arch_log:
                values["loss/ce"] = sum(a["ce"] for a in arch_log) / len(arch_log)
                values["loss/total"] = sum(a["total"] for a in arch_log) / len(arch_log)
                values["loss/resource"] = values["loss/total"] - values["loss/ce"]
                arch_log.clear()
            rep.series(step, epoch, values)

        val_acc = None
        checkpoints.register(
            {"net": net, "w_opt": w_opt, "a_opt": a_opt, "val_stream": val_stream}, {"batches": gen, "paths": path_gen}
        )
        start = 0
        saved = checkpoints.restore()
        if saved is not None:
            step, val_acc, start = saved["step"], saved["val_acc"], saved["epochs_done"]
            arch_log.extend(saved["arch_log"])
        for epoch in range(start, cfg.epochs):
            if epoch == 0:
                snapshot(0)
            meter = EpochMeter()
            lr = p["w_lr"]
            net.train()
            for i, (xb, yb) in enumerate(batches(data.x_train, data.y_train, cfg.batch_size, gen)):
                ctx.check_stop()
                lr = cosine_lr(p["w_lr"], p["w_lr_min"], step, total_steps)
                set_lr(w_opt, lr)
                net.sample_single(path_gen)
                logits = net(fmt(xb, cl))
                loss = F.cross_entropy(logits, yb, label_smoothing=p["label_smoothing"])
                w_opt.zero_grad(set_to_none=True)  # unsampled ops keep grad None: no decay, no momentum step
                loss.backward()  # single-path mode: alphas are not in the graph
                w_opt.step()
                if epoch >= warmup and (i + 1) % p["arch_every"] == 0:
                    xv, yv = next(val_stream)
                    arch_log.append(arch_step(net, a_opt, fmt(xv, cl), yv, table, ref, p, path_gen))
                step += 1
                meter.add(loss, logits, yb)
                if step % snap_every == 0:
                    snapshot(epoch)
                    ctx.report_progress(step / total_steps, epoch)
            net.set_chosen()  # validate the derived (argmax) network's path
            val_loss, val_acc = evaluate(net, data.x_val, data.y_val, channels_last=cl)
            genotype = ctx.space.format(net.genotype())
            rep.epoch("search", epoch, meter.metrics(val_loss, val_acc, lr))
            rep.genotype(step, epoch, genotype)
            extra = f", predicted latency {predict_latency(lut, net.genotype()):.3f} ms" if lut is not None else ""
            rep.log(f"search epoch {epoch + 1}/{cfg.epochs}: val acc {val_acc:.3f}{extra}, genotype {genotype}")
            ctx.report_progress(step / total_steps, epoch + 1)
            if epoch == cfg.epochs - 1 and step % snap_every != 0:
                snapshot(epoch)  # the final alphas
            checkpoints.save(self.name, {"epochs_done": epoch + 1, "step": step, "val_acc": val_acc,
                                         "arch_log": list(arch_log)})  # fmt: skip
        g = net.genotype()
        extra_out: dict[str, Any] = {
            "expected": float(table.expected(net.probs_matrix().detach())) * unit,
            "target": ref * unit,
            "resource": resource,
        }
        if lut is not None:
            extra_out.update(predicted_latency_ms=predict_latency(lut, g), lut_path=str(lut.path))
        return SearchOutcome(genotype=ctx.space.format(g), accuracy=val_acc, extra=extra_out)


PROXYLESS = ProxylessStrategy()
