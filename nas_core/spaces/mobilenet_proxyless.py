"""ProxylessNAS's supernet on the MobileNetV2-style space: binarised mixed edges (Cai et al., ICLR 2019).

Every searchable block is a :class:`MixedBlock`: the candidates ``mb{3,5,7}_e{3,6}`` (one
:class:`~nas_core.spaces.mobilenet_blocks.InvertedResidual` each, built without its own residual) plus
``zero`` where the block keeps its shape (stride 1, same channels: the non-first blocks of a stage, as in
``mit-han-lab/proxylessnas``), and the block's shortcut around the chosen op, as the reference's
``MobileInvertedResidualBlock`` does. Alphas start at N(0, 1e-3) (``arch_init_ratio``).

Binarised paths (reference ``search/modules/mix_op.py``, ``MixedEdge``):

- weight step (:meth:`ProxylessSupernet.sample_single`): one op per block is sampled from softmax(alpha)
  and only that op runs; the others are not computed, so none of their weights get gradients.
- arch step, mode "full_v2" (the reference's default, ``--grad_binary_mode full_v2`` in
  ``imagenet_arch_search.py``; :meth:`ProxylessSupernet.sample_full_v2`): one op per block is sampled, the
  gates ``g`` are one-hot on it and the forward runs only that op. :class:`FullV2Gate` is the autograd
  function in between: its backward passes dL/dx back through the active op and, for EVERY candidate k,
  computes dL/dg_k = sum(o_k * dL/dout) with o_k run on the block input under no_grad (the active op's
  saved output is reused; ``zero`` gives 0). :func:`alpha_grad_from_gates` then gives
  dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) over all ops, so every alpha of the block moves.
  Like the reference, the inactive candidates run in train mode in that backward, so their BN running
  statistics see the validation batch (outputs use batch statistics, so the gradients are unaffected).
- arch step, mode "two" (:meth:`ProxylessSupernet.sample_two`): two ops are drawn without replacement,
  the active one of the pair by the softmax over the pair. The block computes ``g_a*o_a + g_b*o_b`` with
  binary gates ``g`` (g_a = 1, g_b = 0) and ``o_b`` detached, so autograd gives the gate gradient
  dL/dg_k = sum(o_k * dL/dout) for both; :func:`alpha_grad_from_gates` turns it into
  dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i) over the pair, and after the optimiser step
  :func:`recentre_pair` shifts the two alphas so their log-sum-exp is what it was before the step.

In both modes, as in the reference, a block whose active op is ``zero`` is skipped (output = input) and
its alphas are left alone in that step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nas_core.errors import ConfigError
from nas_core.spaces.mobilenet_arch import (
    OPS,
    MBConv,
    MobileNetGenotype,
    MobileNetNetwork,
    block_groups,
    check_width,
    get_preset,
    layout,
    parse_block,
)
from nas_core.spaces.mobilenet_blocks import InvertedResidual, activation, init_weights

#: The candidate MBConvs of every searchable block (reference ``conv_candidates``), in :data:`OPS` order.
CANDIDATES: tuple[str, ...] = ("mb3_e3", "mb3_e6", "mb5_e3", "mb5_e6", "mb7_e3", "mb7_e6")
ZERO_OP = "zero"
ARCH_INIT_STD = 1e-3


def block_ops(keeps_shape: bool) -> tuple[str, ...]:
    """The ops a block may choose: the six MBConvs, plus ``zero`` where the block keeps its shape."""
    return CANDIDATES + ((ZERO_OP,) if keeps_shape else ())


def make_candidate(op: str, c_in: int, c_out: int, stride: int, act: str) -> InvertedResidual:
    """One MBConv candidate without its residual (the mixed block adds the shortcut around the edge)."""
    k, e = (int(v) for v in op[2:].split("_e"))
    groups, expand = block_groups(MBConv(k, e), c_in)  # type: ignore[misc]
    mod = InvertedResidual(c_in, c_out, stride, groups, expand, act)
    mod.use_residual = False
    return mod


def alpha_grad_from_gates(gate_grads: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i): the gate gradient through softmax(alpha)."""
    return probs * gate_grads - probs * (probs * gate_grads).sum()


def recentre_pair(alpha: torch.Tensor, idx: Sequence[int], old: Sequence[float]) -> None:
    """Shift the updated alphas at ``idx`` so log(sum exp) over them equals that of ``old`` (reference rescale)."""
    with torch.no_grad():
        ids = list(idx)
        new = alpha[ids].double()
        offset = torch.logsumexp(new, 0) - torch.logsumexp(torch.tensor(list(old), dtype=torch.float64), 0)
        alpha[ids] -= offset.to(alpha.dtype)


#: Architecture-step gradient modes: "full_v2" (the reference's default) and "two".
BINARY_MODES: tuple[str, ...] = ("full_v2", "two")


class FullV2Gate(torch.autograd.Function):
    """The reference's ``ArchGradientFunction``: forward = the active op only; backward = dL/dx through it,
    plus dL/dg_k = sum(o_k * dL/dout) for every candidate k of the block (o_k computed there, without a graph).

    ``apply(x, gates, block, active)``: ``gates`` is the block's one-hot gate vector (a leaf that requires
    grad), ``block`` the :class:`MixedBlock`, ``active`` the index of the op that runs.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, gates: torch.Tensor, block: MixedBlock, active: int
    ) -> torch.Tensor:
        x_in = x.detach().requires_grad_(x.requires_grad)
        with torch.enable_grad():  # the active op's graph from x, for dL/dx in backward
            out = block.run_op(active, x_in)
        ctx.x_in, ctx.out, ctx.block, ctx.active = x_in, out, block, active
        ctx.gate_dtype = gates.dtype
        return out.detach()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor, None, None]:
        x_in, out, block, active = ctx.x_in, ctx.out, ctx.block, ctx.active
        grad_x = None
        if ctx.needs_input_grad[0]:
            (grad_x,) = torch.autograd.grad(out, x_in, grad_out)
        gate_grads = torch.zeros(len(block.ops), dtype=ctx.gate_dtype, device=grad_out.device)
        with torch.no_grad():
            g = grad_out.detach()
            for k in range(len(block.ops)):
                if block.is_zero(k):
                    continue  # the zero op's output is 0: its gate gradient is 0
                o_k = out.detach() if k == active else block.run_op(k, x_in.detach())
                gate_grads[k] = (o_k * g).sum().to(ctx.gate_dtype)
        ctx.x_in = ctx.out = ctx.block = None  # free the saved graph
        return grad_x, gate_grads, None, None


class MixedBlock(nn.Module):
    """One searchable block: candidate ops, their alphas, the sampled path(s) and the shortcut."""

    def __init__(self, name: str, c_in: int, c_out: int, stride: int, keeps_shape: bool, act: str) -> None:
        super().__init__()
        self.name = name
        self.ops = block_ops(keeps_shape)
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.residual = keeps_shape
        self.candidates = nn.ModuleDict(
            {op: make_candidate(op, c_in, c_out, stride, act) for op in self.ops if op != ZERO_OP}
        )
        self.alpha = nn.Parameter(torch.randn(len(self.ops)) * ARCH_INIT_STD)
        #: the executed op (index into ``ops``); in mode "two" also the inactive one; in the arch-step modes
        #: the one-hot gates whose gradient the step reads.
        self.active = 0
        self.inactive: int | None = None
        self.gates: torch.Tensor | None = None
        self.mode = "single"  # "single" (weight step / fixed path) | "full_v2" | "two" (arch step)

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.alpha, dim=0)

    def argmax(self) -> int:
        return int(self.alpha.detach().argmax())

    def is_zero(self, index: int) -> bool:
        return self.ops[index] == ZERO_OP

    def run_op(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.candidates[self.ops[index]](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_zero(self.active):
            return x  # the block is skipped (reference: res = x when the active op is the zero layer)
        if self.mode == "full_v2" and self.gates is not None:
            out = FullV2Gate.apply(x, self.gates, self, self.active)
        elif self.mode == "two" and self.gates is not None and self.inactive is not None:
            out = self.gates[self.active] * self.run_op(self.active, x)
            if not self.is_zero(self.inactive):
                with torch.no_grad():
                    other = self.run_op(self.inactive, x)
                out = out + self.gates[self.inactive] * other
        else:
            out = self.run_op(self.active, x)
        return out + x if self.residual else out

    def extra_repr(self) -> str:
        return f"{self.name}: {self.c_in}->{self.c_out}, stride={self.stride}, ops={list(self.ops)}"


class ProxylessSupernet(nn.Module):
    """Stem, fixed first stage, one :class:`MixedBlock` per searchable block, head; the skeleton of
    :class:`~nas_core.spaces.mobilenet.MobileNetNetwork` so a derived genotype builds the same layers."""

    def __init__(
        self, preset: str, width: float, num_classes: int, input_shape: Sequence[int], dropout: float = 0.0
    ) -> None:
        super().__init__()
        cfg = get_preset(preset)
        self.preset, self.width, self.num_classes = preset, float(width), num_classes
        self.input_shape = tuple(int(v) for v in input_shape)
        self.config = cfg
        self.layout = layout(cfg, self.width, self.input_shape)
        lay = self.layout
        self.stem = nn.Sequential(
            nn.Conv2d(lay.in_channels, lay.stem_channels, 3, cfg.stem_stride, 1, bias=False),
            nn.BatchNorm2d(lay.stem_channels),
            activation(cfg.act),
        )
        mods: list[nn.Module] = []
        for plan in lay.blocks:
            if plan.searchable:
                mods.append(MixedBlock(plan.name, plan.c_in, plan.c_out, plan.stride, plan.keeps_shape, cfg.act))
            else:
                groups, expand = block_groups(MBConv(3, plan.t), plan.c_in)  # type: ignore[misc]
                mods.append(InvertedResidual(plan.c_in, plan.c_out, plan.stride, groups, expand, cfg.act))
        self.blocks = nn.ModuleList(mods)
        self.head = nn.Sequential(
            nn.Conv2d(lay.blocks[-1].c_out, lay.head_channels, 1, bias=False),
            nn.BatchNorm2d(lay.head_channels),
            activation(cfg.act),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)  # the reference searches without dropout
        self.classifier = nn.Linear(lay.head_channels, num_classes)
        init_weights(self)

    # ------------------------------------------------------------------ parameters and paths

    @property
    def mixed(self) -> list[MixedBlock]:
        return [b for b in self.blocks if isinstance(b, MixedBlock)]

    @property
    def block_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.mixed)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [b.alpha for b in self.mixed]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def sample_single(self, generator: torch.Generator | None = None) -> list[int]:
        """Weight step: one op per block from softmax(alpha); only it runs."""
        chosen = []
        for b in self.mixed:
            b.mode, b.inactive, b.gates = "single", None, None
            b.active = int(torch.multinomial(b.probs().detach().cpu(), 1, generator=generator))
            chosen.append(b.active)
        return chosen

    def _one_hot_gates(self, b: MixedBlock) -> torch.Tensor:
        gates = torch.zeros(len(b.ops), dtype=b.alpha.dtype, device=b.alpha.device)
        gates[b.active] = 1.0
        return gates.requires_grad_(True)

    def sample_full_v2(self, generator: torch.Generator | None = None) -> list[int]:
        """Arch step ("full_v2", the reference's default): one op per block from softmax(alpha), one-hot gates;
        the forward runs that op, the backward gives every candidate's gate gradient (:class:`FullV2Gate`)."""
        chosen = []
        for b in self.mixed:
            b.active = int(torch.multinomial(b.probs().detach().cpu(), 1, generator=generator))
            b.mode, b.inactive, b.gates = "full_v2", None, self._one_hot_gates(b)
            chosen.append(b.active)
        return chosen

    def sample_arch(self, mode: str, generator: torch.Generator | None = None) -> list[int] | list[tuple[int, int]]:
        """Sample the paths of an architecture step in ``mode`` (one of :data:`BINARY_MODES`)."""
        if mode == "full_v2":
            return self.sample_full_v2(generator)
        if mode == "two":
            return self.sample_two(generator)
        raise ValueError(f"unknown binary mode {mode!r}; use one of {', '.join(BINARY_MODES)}")

    def sample_two(self, generator: torch.Generator | None = None) -> list[tuple[int, int]]:
        """Arch step ("two"): two ops per block without replacement, the active one by the pair's softmax;
        binary gates g (active 1, other 0) that autograd differentiates."""
        pairs = []
        for b in self.mixed:
            pair = torch.multinomial(b.probs().detach().cpu(), 2, replacement=False, generator=generator).tolist()
            pair_p = torch.softmax(b.alpha.detach().cpu()[pair], dim=0)  # the generator's device
            c = int(torch.multinomial(pair_p, 1, generator=generator))
            b.active, b.inactive = pair[c], pair[1 - c]
            b.gates = self._one_hot_gates(b)
            b.mode = "two"
            pairs.append((b.active, b.inactive))
        return pairs

    def set_chosen(self, indices: Sequence[int] | None = None) -> None:
        """Fix one path per block: ``indices``, or the argmax of alpha (the derived network)."""
        for i, b in enumerate(self.mixed):
            b.mode, b.inactive, b.gates = "single", None, None
            b.active = b.argmax() if indices is None else int(indices[i])

    def gates(self) -> list[torch.Tensor]:
        """The binary gates of the last :meth:`sample_full_v2` / :meth:`sample_two` (leaves autograd differentiates)."""
        out = []
        for b in self.mixed:
            if b.gates is None:
                raise RuntimeError("no gates: call sample_full_v2() or sample_two() before an architecture step")
            out.append(b.gates)
        return out

    # the stand-alone network's forward: stem, blocks (here mixed), head, pool, dropout, classifier
    forward = MobileNetNetwork.forward

    # ------------------------------------------------------------------ what the search reports

    def probs_matrix(self) -> torch.Tensor:
        """(blocks x OPS) probabilities, 0 for ops a block does not allow (differentiable)."""
        rows = []
        for b in self.mixed:
            p = b.probs()
            row = [p[b.ops.index(op)] if op in b.ops else p.new_zeros(()) for op in OPS]
            rows.append(torch.stack(row))
        return torch.stack(rows)

    def arch_weights(self) -> dict[str, torch.Tensor]:
        """``{"blocks": (n_blocks x n_ops) softmax}`` for the alpha plots (masked ops weigh 0)."""
        return {"blocks": self.probs_matrix().detach()}

    def chosen_ops(self) -> list[str]:
        return [b.ops[b.argmax()] for b in self.mixed]

    def genotype(self) -> MobileNetGenotype:
        """The argmax op of every block as a MobileNet genotype (``mb<k>_e<e>`` / ``zero``)."""
        names = self.block_names
        blocks = tuple(parse_block(op, i, names) for i, op in enumerate(self.chosen_ops()))
        return MobileNetGenotype(blocks, self.preset, self.width)


def build_proxyless_supernet(
    num_classes: int, input_shape: Sequence[int], preset: str, width: float | None = None, dropout: float = 0.0
) -> ProxylessSupernet:
    """The supernet for ``preset`` at ``width`` (the preset's own width when None); bad values raise ConfigError."""
    cfg = get_preset(preset)
    w = cfg.width if width is None else width
    check_width(w, ConfigError)
    if not 0.0 <= dropout < 1.0:
        raise ConfigError("dropout", f"must be in [0, 1), got {dropout}")
    return ProxylessSupernet(preset, float(w), num_classes, input_shape, dropout)
