"""AtomNAS bookkeeping: atoms, their resource-aware penalty weights, the EMA of their BN scales, and
dynamic network shrinkage (``meijieru/AtomNAS``: ``utils/prune.py``, ``models/compress_utils.py``).

An atom is one hidden channel of one kernel-size branch of an :class:`InvertedResidual`: its row of the
1x1 expansion, its depthwise filter, its column of the 1x1 projection. Its importance is its depthwise BN
scale gamma (``bn_dw.weight[j]``). In :class:`InvertedResidual` a block's hidden channels are the branches'
channel ranges one after the other (kernel 3, then 5, then 7), so "atom j of a block" is channel j of
``conv_expand``/``bn_expand``/``bn_dw``/``conv_project`` and channel ``j - offset`` of its branch's ``dw``.

Shrinking (:func:`shrink_network`) builds new, smaller modules (new tensors, so MACs, memory and step time
really fall), copies the kept slices of weights and BN statistics into them, slices every optimiser state
tensor shaped like a parameter (momentum, square averages) and the gamma EMA the same way, and folds each
removed atom's constant output into the next BN's running mean:

- an atom whose gamma is 0 outputs the constant ``act(beta_j)`` after its depthwise BN, which the projection
  turns into ``W[:, j] * act(beta_j)``; removing it and subtracting that from ``bn_project.running_mean``
  leaves the eval-mode output unchanged (training-mode BN removes constants by itself). The reference code
  has this fold written but switched off (``warnings.warn('Do not adjust bn mean!!!')``); we apply it.
- a branch with no atoms left disappears (its ``dw`` conv is dropped).
- a residual block with no atoms left becomes the identity (genotype ``"zero"``). Its former output
  ``x + o`` differs from ``x`` by a constant ``o`` (``bn_project`` of the folded constants); ``o`` is folded
  forward into the running mean of the BN after every 1x1 conv that saw it (the expansion BN of each following
  block, through consecutive residual blocks, up to and including the first block without a residual, or the
  head), so the network's eval output is unchanged here too. The reference just makes the block return its
  input (dropping ``o``).
- a block without a residual cannot vanish (its output shape differs from its input): it keeps at least its
  atom with the largest |gamma EMA|. The reference's block would return its input, which would break the
  next layer's shapes; it relies on that never happening.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nas_core.spaces.mobilenet_arch import MobileNetNetwork, estimate_macs
from nas_core.spaces.mobilenet_blocks import InvertedResidual, atom_macs


def penalty_weights(branches: Sequence[tuple[int, float]]) -> list[float]:
    """AtomNAS's c_b per branch from ``(n_b atoms, f_b MACs per atom)``: f_b over the channel-weighted mean
    sum_b n_b f_b / sum_b n_b (``utils/prune.py: get_bn_to_prune``, ``expansion_only``; the reference adds
    1e-5 to the denominator, which changes nothing at these sizes and is left out)."""
    total = sum(n for n, _ in branches)
    if total <= 0:
        raise ValueError("no atoms: every branch has 0 channels")
    mean = sum(n * f for n, f in branches) / total
    return [f / mean for _, f in branches]


def searchable_blocks(net: MobileNetNetwork) -> list[tuple[int, str]]:
    """(index in ``net.blocks``, name) of the searchable blocks: the ones made of atoms."""
    return [(i, plan.name) for i, plan in enumerate(net.layout.blocks) if plan.searchable]


def block_kernel_ids(block: InvertedResidual) -> torch.Tensor:
    """The kernel size of each hidden channel (atom) of a block, in channel order."""
    return torch.cat([torch.full((h,), k, dtype=torch.long) for k, h in zip(block.kernels, block.hidden)])


def network_macs(net: MobileNetNetwork, num_classes: int, input_shape: Sequence[int]) -> int:
    """MACs of the network as its modules are now, from the layer shapes (same count as thop's)."""
    return estimate_macs(net.current_genotype(), num_classes, input_shape)


def count_parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


@dataclass
class AtomState:
    """Per searchable block (by index in ``net.blocks``): each atom's penalty weight c_b, its MACs, and the
    EMA of its gamma. All three are sliced together with the block's channels when it shrinks."""

    names: dict[int, str]
    penalty: dict[int, torch.Tensor]
    macs: dict[int, torch.Tensor]
    ema: dict[int, torch.Tensor]
    ema_decay: float
    updates: int = 0

    @classmethod
    def from_network(cls, net: MobileNetNetwork, ema_decay: float) -> AtomState:
        """Penalty weights from the per-atom MACs of every branch of every searchable block (fixed from here
        on, as in the reference, which computes them once from the supernet); EMA starts at the gammas."""
        names, branch_rows, per_block = {}, [], {}
        for i, name in searchable_blocks(net):
            block = net.blocks[i]
            if not isinstance(block, InvertedResidual):
                continue
            plan = net.layout.blocks[i]
            names[i] = name
            rows = []
            for k, h in zip(block.kernels, block.hidden):
                f = float(atom_macs(plan.c_in, plan.c_out, plan.stride, k, plan.in_hw))
                rows.append((k, h, f))
                branch_rows.append((h, f))
            per_block[i] = rows
        if not branch_rows:
            raise ValueError("the network has no atoms (no searchable block with hidden channels)")
        c = iter(penalty_weights(branch_rows))
        penalty, macs, ema = {}, {}, {}
        for i, rows in per_block.items():
            penalty[i] = torch.cat([torch.full((h,), next(c)) for _, h, _ in rows])
            macs[i] = torch.cat([torch.full((h,), f, dtype=torch.float64) for _, h, f in rows])
            ema[i] = net.blocks[i].bn_dw.weight.detach().float().cpu().clone()
        return cls(names, penalty, macs, ema, float(ema_decay))

    def alive_blocks(self, net: MobileNetNetwork) -> list[tuple[int, InvertedResidual]]:
        return [(i, net.blocks[i]) for i in self.names if isinstance(net.blocks[i], InvertedResidual)]

    def l1_penalty(self, net: MobileNetNetwork) -> torch.Tensor:
        """sum_b c_b sum |gamma_b| over every atom (multiply by rho_t); goes into the loss as in the reference."""
        total = None
        for i, block in self.alive_blocks(net):
            w = block.bn_dw.weight
            term = (self.penalty[i].to(w.device, w.dtype) * w.abs()).sum()
            total = term if total is None else total + term
        return total if total is not None else torch.zeros(())

    @torch.no_grad()
    def update_ema(self, net: MobileNetNetwork) -> None:
        """ema <- d * ema + (1 - d) * gamma after every optimiser step (the reference averages after the step)."""
        d = self.ema_decay
        for i, block in self.alive_blocks(net):
            self.ema[i].mul_(d).add_(block.bn_dw.weight.detach().float().cpu(), alpha=1.0 - d)
        self.updates += 1

    def alive_atoms(self, net: MobileNetNetwork) -> dict[str, int]:
        """Atoms alive per searchable block name (0 for a block that became the identity)."""
        return {
            name: (sum(net.blocks[i].hidden) if isinstance(net.blocks[i], InvertedResidual) else 0)
            for i, name in self.names.items()
        }

    def alive_by_kernel(self, net: MobileNetNetwork) -> dict[int, int]:
        out: dict[int, int] = {}
        for _, block in self.alive_blocks(net):
            for k, h in zip(block.kernels, block.hidden):
                out[k] = out.get(k, 0) + h
        return out

    def dead_masks(
        self, net: MobileNetNetwork, threshold: float, ema_only: bool = False, live_only: bool = False
    ) -> dict[int, torch.Tensor]:
        """Per block, True where an atom is dead: |gamma| <= threshold for both the live weight and its EMA, or
        the EMA alone (the last epoch), or the live weight alone (``live_only``: the atoms the penalty holds at
        zero right now, which the MACs controller counts). (The reference keeps an atom where either exceeds the
        threshold.)"""
        if ema_only and live_only:
            raise ValueError("dead_masks: ema_only and live_only exclude each other")
        out = {}
        for i, block in self.alive_blocks(net):
            dead = torch.ones_like(self.ema[i], dtype=torch.bool)
            if not live_only:
                dead &= self.ema[i].abs() <= threshold
            if not ema_only:
                dead &= block.bn_dw.weight.detach().float().cpu().abs() <= threshold
            out[i] = dead
        return out

    def dead_macs(self, masks: dict[int, torch.Tensor]) -> float:
        """MACs of the atoms ``masks`` marks (the reference's ``cal_pruned_flops``)."""
        return float(sum(float(self.macs[i][m].sum()) for i, m in masks.items()))

    def lowest_atoms_mask(
        self, net: MobileNetNetwork, macs: float, candidates: dict[int, torch.Tensor] | None = None,
        at_least: bool = True,
    ) -> dict[int, torch.Tensor]:  # fmt: skip
        """Atoms in order of least |gamma EMA| (among ``candidates`` if given) until their MACs add up to at least
        ``macs`` (``at_least``: the reference's ``cal_mask_network_slimming_by_flops``, the final trim onto the
        target) or to at most ``macs`` (not past the target: a shrink that would overshoot it)."""
        blocks = self.alive_blocks(net)
        out = {i: torch.zeros(sum(b.hidden), dtype=torch.bool) for i, b in blocks}
        if not blocks or macs <= 0:
            return out
        vals = torch.cat([self.ema[i].abs().double() for i, _ in blocks])
        cost = torch.cat([self.macs[i] for i, _ in blocks])
        allowed = torch.cat([candidates[i] if candidates is not None else torch.ones_like(out[i]) for i, _ in blocks])
        order = torch.argsort(vals, stable=True)
        order = order[allowed[order]]
        cum = torch.cumsum(cost[order], 0)
        if at_least:
            n = int(torch.searchsorted(cum, torch.tensor([macs], dtype=cum.dtype)).item()) + 1
        else:
            n = int((cum <= macs).sum())
        flat = torch.zeros(len(vals), dtype=torch.bool)
        flat[order[: min(n, len(order))]] = True
        start = 0
        for i, b in blocks:
            h = sum(b.hidden)
            out[i] = flat[start : start + h].clone()
            start += h
        return out


# ------------------------------------------------------------------------------------------------ shrinking


@dataclass
class ShrinkResult:
    """What one shrink removed: atoms per block name and per kernel, and blocks that became the identity."""

    removed: dict[str, int] = field(default_factory=dict)
    removed_by_kernel: dict[int, int] = field(default_factory=dict)
    vanished_blocks: list[str] = field(default_factory=list)
    vanished_branches: list[str] = field(default_factory=list)
    kept_last_atom: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def _act(block: InvertedResidual, x: torch.Tensor) -> torch.Tensor:
    return block.act_dw(x.clone())  # the activation modules are in-place


def _replace_param(opt: torch.optim.Optimizer | None, old: nn.Parameter, new: nn.Parameter | None,
                   dim: int = 0, idx: torch.Tensor | None = None) -> None:  # fmt: skip
    """Move ``old``'s optimiser entry to ``new``: state tensors shaped like ``old`` are sliced along ``dim`` by
    ``idx`` (kept entries unchanged); other state (step counts) is copied. ``new=None`` drops the entry."""
    if opt is None:
        return
    state = opt.state.pop(old, None)
    for group in opt.param_groups:
        params = group["params"]
        for j, p in enumerate(params):
            if p is old:
                if new is None:
                    del params[j]
                else:
                    params[j] = new
                break
    if new is None or state is None:
        return
    moved: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.shape == old.shape:
            sliced = value.index_select(dim, idx.to(value.device)) if idx is not None else value
            moved[key] = torch.empty_like(new).copy_(sliced)
        else:
            moved[key] = value.clone() if isinstance(value, torch.Tensor) else value
    opt.state[new] = moved


def _copy_param(opt: torch.optim.Optimizer | None, old: nn.Parameter, new: nn.Parameter, dim: int,
                idx: torch.Tensor | None) -> None:  # fmt: skip
    with torch.no_grad():
        new.copy_(old.index_select(dim, idx.to(old.device)) if idx is not None else old)
    _replace_param(opt, old, new, dim, idx)


def _copy_bn(opt: torch.optim.Optimizer | None, old: nn.BatchNorm2d, new: nn.BatchNorm2d,
             idx: torch.Tensor | None) -> None:  # fmt: skip
    _copy_param(opt, old.weight, new.weight, 0, idx)
    _copy_param(opt, old.bias, new.bias, 0, idx)
    with torch.no_grad():
        for name in ("running_mean", "running_var"):
            src = getattr(old, name)
            getattr(new, name).copy_(src.index_select(0, idx.to(src.device)) if idx is not None else src)
        new.num_batches_tracked.copy_(old.num_batches_tracked)
    new.momentum, new.eps = old.momentum, old.eps


def _drop_block_params(opt: torch.optim.Optimizer | None, block: nn.Module) -> None:
    for p in block.parameters():
        _replace_param(opt, p, None)


@torch.no_grad()
def _removed_constant(block: InvertedResidual, removed: torch.Tensor) -> torch.Tensor:
    """The projection's constant output from the removed atoms, sum_j W[:, j] act(beta_j) (zero gammas)."""
    if removed.numel() == 0:
        return torch.zeros(block.c_out, device=block.bn_project.running_mean.device)
    r = removed.to(block.bn_dw.bias.device)
    beta = _act(block, block.bn_dw.bias.detach().index_select(0, r))
    w = block.conv_project.weight.detach().index_select(1, r)[:, :, 0, 0]
    return (w @ beta).to(block.bn_project.running_mean.dtype)


@torch.no_grad()
def _fold_forward(net: MobileNetNetwork, start: int, offset: torch.Tensor) -> None:
    """The input of blocks ``start``.. lost the constant ``offset`` (per channel): subtract what every 1x1 conv
    made of it from the following BN's running mean, through residual blocks, up to the first block without a
    residual (whose output no longer carries it) or the head."""
    for j in range(start, len(net.blocks)):
        m = net.blocks[j]
        if isinstance(m, nn.Identity):
            continue
        if not isinstance(m, InvertedResidual) or m.conv_expand is None:
            raise RuntimeError(f"cannot fold a constant through block {j} (no 1x1 expansion)")
        w = m.conv_expand.weight.detach()[:, :, 0, 0]
        m.bn_expand.running_mean.sub_(w @ offset.to(w.dtype))
        if not m.use_residual:
            return
    conv, bn = net.head[0], net.head[1]
    bn.running_mean.sub_(conv.weight.detach()[:, :, 0, 0] @ offset.to(conv.weight.dtype))


@torch.no_grad()
def shrink_block(
    net: MobileNetNetwork,
    index: int,
    dead: torch.Tensor,
    opt: torch.optim.Optimizer | None = None,
    atoms: AtomState | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> ShrinkResult:
    """Remove the atoms ``dead`` marks from block ``net.blocks[index]`` for real (see the module docstring)."""
    block = net.blocks[index]
    if not isinstance(block, InvertedResidual):
        raise ValueError(f"block {index} has no atoms to remove")
    name = net.layout.blocks[index].name
    hidden = sum(block.hidden)
    dead = dead.to(torch.bool).cpu()
    if dead.shape != (hidden,):
        raise ValueError(f"block {name}: mask of {tuple(dead.shape)} for {hidden} atoms")
    res = ShrinkResult()
    kernel_of = block_kernel_ids(block)
    if bool(dead.all()) and not block.use_residual:
        keep_one = int((atoms.ema[index] if atoms is not None else block.bn_dw.weight.detach().cpu()).abs().argmax())
        dead = dead.clone()
        dead[keep_one] = False
        res.kept_last_atom.append(name)
    if not bool(dead.any()):
        return res
    removed = torch.nonzero(dead).flatten()
    keep = torch.nonzero(~dead).flatten()
    res.removed[name] = int(removed.numel())
    for k in block.kernels:
        n = int((kernel_of[removed] == k).sum())
        if n:
            res.removed_by_kernel[k] = n
    const = _removed_constant(block, removed)

    if keep.numel() == 0:  # a residual block with no atoms left: the identity
        bn = block.bn_project
        offset = (const - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight.detach()
        offset = offset + bn.bias.detach()
        _drop_block_params(opt, block)
        net.blocks[index] = nn.Identity()
        _fold_forward(net, index + 1, offset)
        res.vanished_blocks.append(name)
        if atoms is not None:
            for table in (atoms.penalty, atoms.macs, atoms.ema):
                table[index] = table[index][:0]
        return res

    groups, offsets, start = [], [], 0
    for k, h in zip(block.kernels, block.hidden):
        n = int(((keep >= start) & (keep < start + h)).sum())
        if n:
            groups.append((k, n))
        else:
            res.vanished_branches.append(f"{name}/k{k}")
        offsets.append((k, start, h))
        start += h
    act = "relu6" if isinstance(block.act_dw, nn.ReLU6) else "relu"
    new = InvertedResidual(block.c_in, block.c_out, block.stride, groups, block.conv_expand is not None, act)
    new = new.to(device=block.bn_project.weight.device, dtype=block.bn_project.weight.dtype)
    new = new.to(memory_format=memory_format)
    new.train(block.training)
    if block.conv_expand is not None:
        _copy_param(opt, block.conv_expand.weight, new.conv_expand.weight, 0, keep)
        _copy_bn(opt, block.bn_expand, new.bn_expand, keep)
    gi = 0
    for g, (_k, s, h) in enumerate(offsets):
        local = keep[(keep >= s) & (keep < s + h)] - s
        if local.numel() == 0:
            _replace_param(opt, block.dw[g].weight, None)
            continue
        _copy_param(opt, block.dw[g].weight, new.dw[gi].weight, 0, local)
        gi += 1
    _copy_bn(opt, block.bn_dw, new.bn_dw, keep)
    _copy_param(opt, block.conv_project.weight, new.conv_project.weight, 1, keep)
    _copy_bn(opt, block.bn_project, new.bn_project, None)
    new.bn_project.running_mean.sub_(const)
    net.blocks[index] = new
    if atoms is not None:
        for table in (atoms.penalty, atoms.macs, atoms.ema):
            table[index] = table[index][keep]
    return res


def shrink_network(
    net: MobileNetNetwork,
    masks: dict[int, torch.Tensor],
    opt: torch.optim.Optimizer | None = None,
    atoms: AtomState | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> ShrinkResult:
    """Shrink every block by its dead mask (block index -> bool per atom), last block first so constants
    folded forward from a vanishing block land in modules that are already final."""
    total = ShrinkResult()
    for i in sorted(masks, reverse=True):
        if not isinstance(net.blocks[i], InvertedResidual):
            continue
        r = shrink_block(net, i, masks[i], opt, atoms, memory_format)
        total.removed.update(r.removed)
        for k, n in r.removed_by_kernel.items():
            total.removed_by_kernel[k] = total.removed_by_kernel.get(k, 0) + n
        total.vanished_blocks += r.vanished_blocks
        total.vanished_branches += r.vanished_branches
        total.kept_last_atom += r.kept_last_atom
    return total
