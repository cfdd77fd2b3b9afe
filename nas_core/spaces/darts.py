"""DARTS cell space (Liu et al., ICLR 2019): search supernet in three modes, and the evaluation network.

The space: 8 ops (``none, max_pool_3x3, avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5,
dil_conv_3x3, dil_conv_5x5``), a normal and a reduction cell, 4 intermediate nodes 2..5 each fed by
every earlier state (0 = c_{k-2}, 1 = c_{k-1}) - 14 edges named ``"2<-0", "2<-1", "3<-0", ...`` in the
reference's alpha-row order. Macro skeleton (search and evaluation): stem 3x3 conv in->3C + BN,
``layers`` cells with reduction cells (channels doubled) at ``layers//3`` and ``2*layers//3``, global
average pool, linear. ``layers`` defaults to ``3*cells_per_stage + 2`` (N=2 -> 8, N=6 -> 20).

Supernet contract (``build_supernet(..., mode=...)``; the strategies rely on exactly this):

- ``arch_parameters()`` -> list of parameters the architecture optimiser steps:
  ``[alpha_normal, alpha_reduce]`` (each 14x8, init 1e-3*N(0,1), shared by all cells of a type),
  plus ``[beta_normal, beta_reduce]`` (each (14,), same init) in mode ``"pcdarts"``.
- ``weight_parameters()`` -> every other parameter.
- ``arch_weights()`` -> ``{"normal": softmax(alpha_normal) (14x8), "reduce": ...}``.
- ``genotype()`` -> :class:`DartsGenotype` derived by the mode's reference rule (below).
- ``forward(x)`` -> logits (no tuple, no auxiliary head in search).
- mode ``"darts"``: every edge is the MixedOp sum_o softmax(alpha)_o * o(x); non-affine BN (batch
  statistics always, as AutoDL's search models), an extra non-affine BN after each pool. Genotype:
  per node the 2 incoming edges with the largest non-``none`` weight, argmax non-``none`` op on each.
- mode ``"pcdarts"`` (PC-DARTS): the ops see the first C/K channels (``partial_k`` = K, default 4), the
  other channels bypass (2x2 max-pool stride 2 on reduction edges), then a channel shuffle with K
  groups; node = sum_j softmax_node(beta)_j * MixedOp_j(h_j), the softmax over each node's own
  incoming edges. ``edge_weights()`` -> ``{"normal": (14,) normalised betas, "reduce": ...}``.
  Genotype: as darts but edges ranked by max non-``none`` softmax(alpha)*beta_hat.
- mode ``"gdas"`` (GDAS): per forward one Gumbel sample per edge, shared by all cells of a type:
  p = softmax((log_softmax(alpha) + g) / tau), k = argmax p, h = onehot(k) - p.detach() + p;
  only op_k is computed on each edge, times h_k (straight-through gradient to alpha); resampled if
  anything is inf/NaN. ``set_tau(tau)`` sets the temperature (default 10); ``last_sample`` holds the
  sampled op index per edge and cell type. As AutoDL's ``NASNetworkGDAS.forward``, eval mode samples
  too (there is no argmax path in the reference). Genotype: GDAS's NASNet rule - per node pool every
  (non-``none`` op, input) candidate of its incoming edges, sort by softmax(alpha), keep the top 2.

Speed (the supernet is every DARTS-space search's hot loop): the default ``fused`` path gives the
same numbers as the reference-style per-edge ``plain`` path (tests check it) but computes, per
source state, one ReLU, one max pool and one average pool (each followed by its non-affine BN),
shared by all outgoing edges; skips ``none`` (its output is w*0); folds each op's mixing weight
into the op's last non-affine BN as the BN scale. PC-DARTS (:meth:`SearchCell.forward_pc`) goes further,
since its ops see only C/K channels (too few for channels-last kernels to run well one edge at a time):
the ops of all edges leaving a state run as one call each over the edges' stacked channels (depthwise
convs over E*C/K channels, 1x1 convs as one product with a block-diagonal weight, one BN), pools, skip
and the beta-weighted bypass enter each open node through products with kron(weights, I), and each
node is shuffled with its bypass in one copy. On top: 1x1 convs as matrix products over the
channels-last view; dilated depthwise convs as undilated ones on the four parity sub-images (shared
per source state; stride-2 ones read the even pixels only); with ``recompute`` (default) the second
depthwise conv of each separable op is re-run in backward rather than kept. channels_last is the
faster layout for the supernet (bench/bench_darts_space.py). Stand-alone network: see
:class:`DartsNetwork`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nas_core.errors import ConfigError, GenotypeError
from nas_core.spaces.base import CELL_SPACE_STRATEGIES, SearchSpace
from nas_core.spaces.darts_genotype import (
    DEFAULT_CONCAT,
    EDGE_PAIRS,
    EDGES,
    NODE_SLICES,
    OPS,
    PARAM_FREE,
    PRESETS,
    STEPS,
    DartsGenotype,
    format_genotype,
    genotype_dot,
    genotype_from_json,
    genotype_to_json,
    mutate_genotype,
    parse_genotype,
    random_genotype,
)
from nas_core.spaces.darts_ops import (
    AuxiliaryHead,
    DilConv,
    FactorizedReduce,
    Identity,
    ReLUConvBN,
    SepConv,
    channel_shuffle,
    drop_path,
    make_op,
    shifted,
)
from nas_core.spaces.growers import DartsGrower

MODES = ("darts", "pcdarts", "gdas")
STEM_MULTIPLIER = 3
AUX_MIN_SIZE = 8  # the auxiliary head: 5x5 pool stride 3, then a 2x2 conv (needs a 2x2 pool output)
_NONE, _MAX, _AVG, _SKIP, _S3, _S5, _D3, _D5 = range(len(OPS))


def default_layers(cells_per_stage: int) -> int:
    return 3 * cells_per_stage + 2


def reduction_indices(layers: int) -> tuple[int, int]:
    return layers // 3, 2 * layers // 3


def _check_layers(layers: int) -> None:
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ConfigError("layers", f"must be an integer >= 1, got {layers!r}")


def _check_channels(channels: int) -> None:
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ConfigError("channels", f"must be an integer >= 1, got {channels!r}")


# --------------------------------------------------------------------------------------------------
# evaluation network


class EvalCell(nn.Module):
    """A fixed cell: node = op_a(input_a) + op_b(input_b); drop path on every non-identity op output."""

    def __init__(
        self,
        pairs: tuple[tuple[str, int], ...],
        concat: tuple[int, ...],
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        self._ops = nn.ModuleList(make_op(op, c, 2 if reduction and idx < 2 else 1, affine=True) for op, idx in pairs)
        self._indices = [idx for _, idx in pairs]
        self._identity = [isinstance(m, Identity) for m in self._ops]
        self._concat = list(concat)
        self.multiplier = len(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self._indices) // 2):  # 4 nodes, or fewer in a cell grown node by node
            total = None
            for n in (2 * i, 2 * i + 1):
                h = self._ops[n](states[self._indices[n]])
                if drop_prob > 0.0 and not self._identity[n]:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self._concat], dim=1)


def _spatial_after(size: int, reductions: int) -> int:
    for _ in range(reductions):
        size = math.ceil(size / 2)
    return size


class DartsNetwork(nn.Module):
    """Stand-alone DARTS network (``cnn/model.py`` NetworkCIFAR), affine BN.

    Conventions: ``drop_path_prob`` (float attribute, default 0) is set by the trainer each epoch and
    used only in training mode. With ``auxiliary=True`` the head after cell ``2*layers//3`` runs only in
    training mode, and ``forward`` then returns ``(logits, aux_logits)``; otherwise (and always in eval
    mode) it returns ``logits``. Parameters of ``auxiliary_head`` are excluded from the reported count.
    """

    def __init__(
        self,
        genotype: DartsGenotype,
        c: int = 36,
        layers: int = 20,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        auxiliary: bool = False,
    ) -> None:
        super().__init__()
        _check_layers(layers)
        _check_channels(c)
        self.genotype = genotype
        self.layers = layers
        self.auxiliary = bool(auxiliary)
        self.drop_path_prob = 0.0
        red = reduction_indices(layers)
        self._aux_index = red[1]
        in_ch, height, width = input_shape
        c_curr = STEM_MULTIPLIER * c
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        c_aux = c_p
        n_reductions = 0
        aux_reductions = 0
        for i in range(layers):
            reduction = i in red
            if reduction:
                c_curr *= 2
                n_reductions += 1
            pairs, concat = genotype.cell("reduce" if reduction else "normal")
            cell = EvalCell(pairs, concat, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self._aux_index:
                c_aux, aux_reductions = c_p, n_reductions
        if self.auxiliary:
            h, w = _spatial_after(height, aux_reductions), _spatial_after(width, aux_reductions)
            if min(h, w) < AUX_MIN_SIZE:
                need = AUX_MIN_SIZE
                for _ in range(aux_reductions):
                    need = 2 * need - 1
                raise ConfigError(
                    "auxiliary",
                    f"the auxiliary head needs at least {AUX_MIN_SIZE}x{AUX_MIN_SIZE} features after cell "
                    f"{self._aux_index}, but a {height}x{width} input gives {h}x{w} there; use inputs of at least "
                    f"{need}x{need} or train without the auxiliary head",
                )
            self.auxiliary_head: AuxiliaryHead | None = AuxiliaryHead(c_aux, num_classes)
        else:
            self.auxiliary_head = None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    @property
    def build_options(self) -> dict[str, Any]:
        """Options beyond (channels, cells_per_stage) that rebuild this network (saved in exports)."""
        return {"layers": self.layers, "auxiliary": self.auxiliary}

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        s0 = s1 = self.stem(x)
        drop = float(self.drop_path_prob) if self.training else 0.0
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop)
            if i == self._aux_index and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        if aux is not None:
            return logits, aux
        return logits


# --------------------------------------------------------------------------------------------------
# search supernet


class MixedOp(nn.Module):
    """The 8 candidate ops of one edge (search flavour: non-affine BN, BN after pools)."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self._ops = nn.ModuleList(make_op(op, c, stride, affine=False, search=True) for op in OPS)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self._ops))  # type: ignore[return-value]


_AVG_SCALE: dict[tuple, torch.Tensor] = {}


def avg_pool_3x3(x: torch.Tensor, stride: int) -> torch.Tensor:
    """3x3 average pool, padding 1, padding excluded from the count (padding-inclusive pool x cached 9/count)."""
    h, w = x.shape[-2:]
    key = (h, w, stride, x.dtype, x.device)
    scale = _AVG_SCALE.get(key)
    if scale is None:
        ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        scale = 1.0 / F.avg_pool2d(ones, 3, stride, 1, count_include_pad=True)
        _AVG_SCALE[key] = scale
    return F.avg_pool2d(x, 3, stride, 1, count_include_pad=True) * scale


def _bn(x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Non-affine batch-statistics BN; ``scale`` (0-dim) is an op weight folded in: w*BN(x) == BN_w(x).

    The weight is materialised: CPU batch_norm's backward returned a wrong input gradient for a
    stride-0 (expanded) weight on 1x1 feature maps (torch 2.13; the tests compare with the per-edge path).
    """
    weight = None if scale is None else scale.expand(x.shape[1]).contiguous()
    return F.batch_norm(x, None, None, weight, None, True, 0.0, 1e-5)


def _pw(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1x1 convolution as a matrix product over the channel axis (on CPU ~3x faster than conv2d here)."""
    return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1)).permute(0, 3, 1, 2)


def _phase(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (4N, C, H/2, W/2): the four (row, column) parity sub-images stacked on the batch axis.

    A dilation-2 stride-1 convolution only mixes pixels of one parity, so it equals an undilated
    convolution of each sub-image (padding halved); oneDNN's undilated depthwise kernels are several
    times faster. Done once per source state and shared by its edges; H and W must be even.
    """
    n, c, h, w = x.shape
    t = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2, c).permute(2, 4, 0, 1, 3, 5)
    return t.reshape(4 * n, h // 2, w // 2, c).permute(0, 3, 1, 2)


def _unphase(y: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`_phase`."""
    _, c, h2, w2 = y.shape
    t = y.permute(0, 2, 3, 1).reshape(2, 2, n, h2, w2, c).permute(2, 3, 0, 4, 1, 5)
    return t.reshape(n, 2 * h2, 2 * w2, c).permute(0, 3, 1, 2)


def _dwpw(x: torch.Tensor, w_dw: torch.Tensor, w_pw: torch.Tensor, stride: int, pad: Any, dil: Any = 1):
    return _pw(F.conv2d(x, w_dw, None, stride, pad, dil, x.shape[1]), w_pw)


def _dwpw_ckpt(x: torch.Tensor, w_dw: torch.Tensor, w_pw: torch.Tensor, stride: int, pad: Any, dil: Any = 1):
    """Depthwise then 1x1 conv, recomputing the depthwise output in backward instead of keeping it."""
    if not torch.is_grad_enabled():
        return _dwpw(x, w_dw, w_pw, stride, pad, dil)
    return checkpoint(_dwpw, x, w_dw, w_pw, stride, pad, dil, use_reentrant=False)


def _sep(m: SepConv, r: torch.Tensor, stride: int, w: torch.Tensor, recompute: bool = False) -> torch.Tensor:
    """Separable conv op; ``recompute`` re-runs the second depthwise conv in backward instead of keeping
    its output (about 7% less peak memory for 8% more time at the bench settings)."""
    seq = m.op
    dw1, pw1, dw2, pw2 = seq[1], seq[2], seq[5], seq[6]
    y = F.relu_(_bn(_dwpw(r, dw1.weight, pw1.weight, stride, dw1.padding)))
    second = _dwpw_ckpt if recompute else _dwpw
    return _bn(second(y, dw2.weight, pw2.weight, 1, dw2.padding), w)


def _dil(m: DilConv, r: torch.Tensor, how: str, stride: int, w: torch.Tensor) -> torch.Tensor:
    """Dilated conv op; ``how``: "direct" (as built), "phase" (``r`` phase-split, stride 1) or "sub"
    (``r`` = input[::2, ::2], stride 2: a dilation-2 stride-2 conv only reads even pixels)."""
    dw, pw = m.op[1], m.op[2]
    c = r.shape[1]
    if how == "direct":
        return _bn(_pw(F.conv2d(r, dw.weight, None, stride, dw.padding, dw.dilation, c), pw.weight), w)
    y = F.conv2d(r, dw.weight, None, 1, dw.kernel_size[0] // 2, 1, c)
    if how == "phase":
        y = _unphase(y, y.shape[0] // 4)  # before the 1x1 conv, so the phased map is not kept for backward
    return _bn(_pw(y, pw.weight), w)


# ---- PC-DARTS fused path: the partial-channel ops of all edges leaving one state as one wide call each.
# Layout: channels-last throughout; the E edges' channels sit edge-major ([edge][channel]) in one tensor,
# so per-edge depthwise convs are one depthwise conv over E*c channels, per-edge 1x1 convs one matrix
# product with a block-diagonal weight, per-edge non-affine BNs one BN (BN is per channel).


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) channels-last -> its (N, H, W, C) view."""
    return x.permute(0, 2, 3, 1)


def _rep(x: torch.Tensor, e: int) -> torch.Tensor:
    """(N, c, H, W) -> (N, e*c, H, W) channels-last: the input once per edge, edge-major."""
    if e == 1:
        return x
    n, c, h, w = x.shape
    return _nhwc(x).unsqueeze(3).expand(n, h, w, e, c).reshape(n, h, w, e * c).permute(0, 3, 1, 2)


def _bn_vec(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Non-affine BN times a per-channel op weight (each edge's mixing weight, folded in as the BN scale)."""
    return F.batch_norm(x, None, None, weight, None, True, 0.0, 1e-5)


def _pc_sep(mods: list[SepConv], rr: torch.Tensor, stride: int, wvec: torch.Tensor, recompute: bool) -> torch.Tensor:
    """One separable-conv op on E edges at once; ``rr`` = ReLU(x) repeated per edge."""
    dw1 = torch.cat([m.op[1].weight for m in mods])
    pw1 = torch.block_diag(*[m.op[2].weight.flatten(1) for m in mods])
    dw2 = torch.cat([m.op[5].weight for m in mods])
    pw2 = torch.block_diag(*[m.op[6].weight.flatten(1) for m in mods])
    pad = mods[0].op[1].padding
    y = F.relu_(_bn(_dwpw(rr, dw1, pw1, stride, pad)))
    second = _dwpw_ckpt if recompute else _dwpw
    return _bn_vec(second(y, dw2, pw2, 1, pad), wvec)


def _pc_dil(mods: list[DilConv], rd: torch.Tensor, how: str, stride: int, wvec: torch.Tensor) -> torch.Tensor:
    """One dilated-conv op on E edges at once; ``rd`` is prepared as for :func:`_dil`, repeated per edge."""
    dw = torch.cat([m.op[1].weight for m in mods])
    pw = torch.block_diag(*[m.op[2].weight.flatten(1) for m in mods])
    conv = mods[0].op[1]
    if how == "direct":
        y = F.conv2d(rd, dw, None, stride, conv.padding, conv.dilation, rd.shape[1])
    else:
        kk = conv.kernel_size[0]
        if kk > min(rd.shape[-2:]):  # kernel wider than the map: oneDNN's backward is ~2x faster unpadded
            p = kk // 2
            y = F.conv2d(F.pad(rd, (p, p, p, p)), dw, None, 1, 0, 1, rd.shape[1])
        else:
            y = F.conv2d(rd, dw, None, 1, kk // 2, 1, rd.shape[1])
        if how == "phase":
            y = _unphase(y, y.shape[0] // 4)
    return _bn_vec(_pw(y, pw), wvec)


def _pc_reduce(mods: list[FactorizedReduce], r: torch.Tensor, wvec: torch.Tensor) -> torch.Tensor:
    """The stride-2 skip (factorized reduce) of E edges: one product of [even pixels, shifted even pixels]
    with each edge's [[conv_1, 0], [0, conv_2]] block."""
    ab = torch.cat([r[:, :, ::2, ::2], shifted(r)[:, :, ::2, ::2]], dim=1)
    w = torch.cat([torch.block_diag(m.conv_1.weight.flatten(1), m.conv_2.weight.flatten(1)) for m in mods])
    return _bn_vec(_pw(ab, w), wvec)


class SearchCell(nn.Module):
    """One supernet cell; 14 MixedOps over ``c_op`` channels (C, or C/K in PC-DARTS)."""

    def __init__(
        self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, mode: str, partial_k: int
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.mode = mode
        self.k = partial_k if mode == "pcdarts" else 1
        self.c = c
        self.c_op = c // self.k
        self.recompute = True  # set by the supernet
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=False)
        self._ops = nn.ModuleList(MixedOp(self.c_op, 2 if reduction and j < 2 else 1) for (_i, j) in EDGE_PAIRS)
        self._out_edges = [[k for k, (_, j) in enumerate(EDGE_PAIRS) if j == src] for src in range(STEPS + 1)]

    def _stride(self, src: int) -> int:
        return 2 if self.reduction and src < 2 else 1

    # ---- reference-style path: every op of every edge, as quark0/darts and PC-DARTS compute it
    def forward_plain(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, betas: torch.Tensor | None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(STEPS):
            lo, hi = NODE_SLICES[i]
            terms = []
            for k in range(lo, hi):
                h = states[EDGE_PAIRS[k][1]]
                m = self._ops[k]
                if self.mode == "pcdarts":
                    xt, xt2 = h[:, : self.c_op], h[:, self.c_op :]
                    t = m(xt, weights[k])
                    if self.k == 1:  # no bypass channels (an empty max pool would fail); the shuffle is the identity
                        out = t
                    else:
                        byp = xt2 if m.stride == 1 else F.max_pool2d(xt2, 2, 2, ceil_mode=True)
                        out = channel_shuffle(torch.cat([t, byp], dim=1), self.k)
                    terms.append(betas[k] * out)  # type: ignore[index]
                else:
                    terms.append(m(h, weights[k]))
            states.append(sum(terms))  # type: ignore[arg-type]
        return torch.cat(states[-STEPS:], dim=1)

    # ---- fused path (darts; pcdarts hands over to forward_pc): shared per-source work, folded weights, none skipped
    def forward_fused(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, betas: torch.Tensor | None):
        """``weights`` are the per-edge op weights (14x8), already multiplied by beta_hat in PC-DARTS."""
        if self.mode == "pcdarts":
            return self.forward_pc(s0, s1, weights, betas)  # type: ignore[arg-type]
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        acc: dict[int, torch.Tensor] = {}

        def add(tgt: int, t: torch.Tensor) -> None:
            if tgt in acc:
                acc[tgt] = acc[tgt].add_(t)
            else:
                acc[tgt] = t

        for src in range(STEPS + 1):
            h = states[src]
            stride = self._stride(src)
            ks = self._out_edges[src]
            x = h
            r = F.relu(x)
            n_max = _bn(F.max_pool2d(x, 3, stride, 1))
            n_avg = _bn(avg_pool_3x3(x, stride))
            r_shift = shifted(r) if stride == 2 else None
            if stride == 2:
                how, r_dil = "sub", r[:, :, ::2, ::2]
            elif x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:
                how, r_dil = "phase", _phase(r)
            else:
                how, r_dil = "direct", r
            for k in ks:
                tgt = EDGE_PAIRS[k][0]
                w = weights[k]
                ops = self._ops[k]._ops
                add(tgt, _sep(ops[_S3], r, stride, w[_S3], self.recompute))
                add(tgt, _sep(ops[_S5], r, stride, w[_S5], self.recompute))
                add(tgt, _dil(ops[_D3], r_dil, how, stride, w[_D3]))
                add(tgt, _dil(ops[_D5], r_dil, how, stride, w[_D5]))
                acc[tgt].addcmul_(n_max, w[_MAX])
                acc[tgt].addcmul_(n_avg, w[_AVG])
                if stride == 1:
                    acc[tgt].addcmul_(x, w[_SKIP])
                else:
                    fr = ops[_SKIP]
                    y1 = F.conv2d(r[:, :, ::2, ::2], fr.conv_1.weight)  # see FactorizedReduce: no strided conv
                    y = torch.cat([y1, F.conv2d(r_shift[:, :, ::2, ::2], fr.conv_2.weight)], 1)
                    add(tgt, _bn(y, w[_SKIP]))
            if src >= 1:
                node = src + 1  # all inputs of node src+1 (states 0..src) are in
                states.append(acc.pop(node))
        return torch.cat(states[-STEPS:], dim=1)

    # ---- fused PC-DARTS path
    def forward_pc(
        self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, betas: torch.Tensor
    ) -> torch.Tensor:
        """PC-DARTS cell, the same maths as :meth:`forward_plain` in fewer, wider calls (channels-last).

        ``weights`` (14x8) are softmax(alpha) already times beta_hat, ``betas`` beta_hat (14,). Per source
        state, the ops of its E outgoing edges run together (see :func:`_pc_sep`). The op sums and the
        beta-weighted bypass sums of the nodes still open are kept as (pixels, E * channels) matrices,
        edges in target-node order: each source adds to them in one call (the pools, the identity skip
        and the bypass as products with ``kron(per-edge weights, I)``, which also keeps their backward
        a matrix product rather than a broadcast reduction), and a node is complete when its last source
        is in; it is then split off and shuffled with its bypass in one copy.
        """
        c, big, k = self.c_op, self.c, self.k
        cb = big - c  # bypass channels
        states = [_cl(self.preprocess0(s0)), _cl(self.preprocess1(s1))]
        acc: torch.Tensor | None = None  # (pixels, E*c): op sums of the open nodes
        bacc: torch.Tensor | None = None  # (pixels, E*cb): their bypass sums
        for src in range(STEPS + 1):
            h = states[src]
            stride = self._stride(src)
            ks = self._out_edges[src]
            e = len(ks)
            w = weights[ks]
            if k > 1:
                x, byp = h.split([c, cb], dim=1)
                x = _cl(x)
                if stride == 2:
                    byp = F.max_pool2d(byp, 2, 2, ceil_mode=True)
                kb = torch.kron(betas[ks].view(e, 1), torch.eye(cb, dtype=w.dtype, device=w.device)).t()
                byp2 = _nhwc(byp).reshape(-1, cb)
                bacc = byp2.mm(kb) if bacc is None else torch.addmm(bacc, byp2, kb)
            else:
                x = h
            mods = [self._ops[j]._ops for j in ks]

            def vec(o: int) -> torch.Tensor:
                return w[:, o].repeat_interleave(c)  # noqa: B023 - used within this iteration

            r = F.relu(x)
            if stride == 2:
                how, rd = "sub", r[:, :, ::2, ::2]
            elif x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0:
                how, rd = "phase", _phase(r)
            else:
                how, rd = "direct", r
            rr, rd = _rep(r, e), _rep(rd, e)
            t = _pc_sep([m[_S3] for m in mods], rr, stride, vec(_S3), self.recompute)
            t.add_(_pc_sep([m[_S5] for m in mods], rr, stride, vec(_S5), self.recompute))
            t.add_(_pc_dil([m[_D3] for m in mods], rd, how, stride, vec(_D3)))
            t.add_(_pc_dil([m[_D5] for m in mods], rd, how, stride, vec(_D5)))
            if stride == 2:
                t.add_(_pc_reduce([m[_SKIP] for m in mods], r, vec(_SKIP)))
            n, _, ho, wo = t.shape
            if acc is not None:
                t.add_(acc.view(n, ho, wo, e * c).permute(0, 3, 1, 2))
            pools = _bn(torch.cat([F.max_pool2d(x, 3, stride, 1), avg_pool_3x3(x, stride)], dim=1))
            eye = torch.eye(c, dtype=w.dtype, device=w.device)
            kp = torch.kron(w[:, _MAX:_SKIP], eye).t()
            acc = torch.addmm(_nhwc(t).reshape(-1, e * c), _nhwc(pools).reshape(-1, 2 * c), kp)
            if stride == 1:
                acc.addmm_(_nhwc(x).reshape(-1, c), torch.kron(w[:, _SKIP : _SKIP + 1], eye).t())
            if src == 0:
                continue
            # node src+1 has all its inputs: split it off, shuffle [op sum, bypass sum] into one tensor
            ops, acc = acc.split([c, (e - 1) * c], dim=1) if e > 1 else (acc, None)
            if k > 1:
                bnode, bacc = bacc.split([cb, (e - 1) * cb], dim=1) if e > 1 else (bacc, None)  # type: ignore[union-attr]
                parts = [ops.view(n, ho, wo, c, 1), bnode.view(n, ho, wo, k - 1, c).transpose(-1, -2)]
                node = torch.cat(parts, dim=-1).view(n, ho, wo, big)
            else:
                node = ops.reshape(n, ho, wo, c)
            states.append(node.permute(0, 3, 1, 2))
        return torch.cat(states[-STEPS:], dim=1)

    # ---- GDAS: only the sampled op of each edge
    def forward_gdas(self, s0: torch.Tensor, s1: torch.Tensor, hardwts: torch.Tensor, index: list[int]):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(STEPS):
            lo, hi = NODE_SLICES[i]
            total = None
            for k in range(lo, hi):
                o = index[k]
                if o == _NONE:
                    continue  # its output is 0 * h_k: nothing to add, no gradient to alpha either
                h = states[EDGE_PAIRS[k][1]]
                t = self._ops[k]._ops[o](h) * hardwts[k, o]
                total = t if total is None else total + t
            if total is None:
                ref = states[1]
                hh, ww = ref.shape[-2:]
                if self.reduction:
                    hh, ww = math.ceil(hh / 2), math.ceil(ww / 2)
                total = ref.new_zeros(ref.shape[0], self.c, hh, ww)
            states.append(total)
        return torch.cat(states[-STEPS:], dim=1)


def normalise_betas(beta: torch.Tensor) -> torch.Tensor:
    """PC-DARTS edge normalisation: softmax of beta over each node's own incoming edges."""
    return torch.cat([F.softmax(beta[lo:hi], dim=-1) for lo, hi in NODE_SLICES])


def gumbel_hard(alpha: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GDAS sample per edge: (hard one-hot weights with straight-through gradient, index)."""
    while True:
        gumbels = -torch.empty_like(alpha).exponential_().log()
        logits = (alpha.log_softmax(dim=-1) + gumbels) / tau
        probs = F.softmax(logits, dim=-1)
        index = probs.max(-1, keepdim=True)[1]
        one_h = torch.zeros_like(logits).scatter_(-1, index, 1.0)
        hardwts = one_h - probs.detach() + probs
        if torch.isinf(gumbels).any() or torch.isinf(probs).any() or torch.isnan(probs).any():
            continue
        return hardwts, index.squeeze(-1)


def _best_op(row: list[float]) -> int:
    best = None
    for o in range(len(OPS)):
        if o != _NONE and (best is None or row[o] > row[best]):
            best = o
    return best  # type: ignore[return-value]


def derive_cell(weights: torch.Tensor, rule: str = "darts", edge_scale: torch.Tensor | None = None) -> list:
    """(op, input) pairs of one cell from its 14x8 op weights.

    ``rule="darts"``: top-2 incoming edges by max non-none weight (times ``edge_scale``, PC-DARTS's
    normalised betas, if given), argmax non-none op on each. ``rule="gdas"``: GDAS's NASNet rule.
    Ties resolve as the reference code does (stable sort, first maximum).
    """
    w = weights.detach().cpu().double()
    if edge_scale is not None:
        w = w * edge_scale.detach().cpu().double()[:, None]
    rows = w.tolist()
    gene: list[tuple[str, int]] = []
    for i, (lo, hi) in enumerate(NODE_SLICES):
        node_rows = rows[lo:hi]
        if rule == "gdas":
            cands = [(OPS[o], j, node_rows[j][o]) for j in range(i + 2) for o in range(len(OPS)) if o != _NONE]
            cands.sort(key=lambda c: -c[2])
            gene.extend((op, j) for op, j, _ in cands[:2])
        else:
            order = sorted(range(i + 2), key=lambda j: -max(v for o, v in enumerate(node_rows[j]) if o != _NONE))
            gene.extend((OPS[_best_op(node_rows[j])], j) for j in order[:2])
    return gene


class DartsSuperNet(nn.Module):
    """Weight-sharing DARTS-space network; see the module docstring for the mode contract."""

    def __init__(
        self,
        c: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        in_ch: int = 3,
        mode: str = "darts",
        partial_k: int = 4,
        fused: bool = True,
        recompute: bool = True,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError("mode", f"unknown DARTS supernet mode {mode!r}; choose one of {', '.join(MODES)}")
        _check_layers(layers)
        _check_channels(c)
        if mode == "pcdarts":
            if isinstance(partial_k, bool) or not isinstance(partial_k, int) or partial_k < 1:
                raise ConfigError("partial_k", f"must be an integer >= 1, got {partial_k!r}")
            if c % partial_k or (2 * c // partial_k) % 2:
                raise ConfigError(
                    "partial_k",
                    f"channels {c} must be divisible by K={partial_k}, and 2C/K even (the reduction edges' "
                    "factorized reduce halves it)",
                )
        self.mode = mode
        self.partial_k = partial_k
        self.fused = fused
        self.recompute = recompute
        self.layers = layers
        self.tau = 10.0
        self.last_sample: dict[str, list[int]] = {}
        c_curr = STEM_MULTIPLIER * c
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, c
        red = reduction_indices(layers)
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in red
            if reduction:
                c_curr *= 2
            self.cells.append(SearchCell(c_pp, c_p, c_curr, reduction, reduction_prev, mode, partial_k))
            self.cells[-1].recompute = recompute
            reduction_prev = reduction
            c_pp, c_p = c_p, STEPS * c_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        n_e, n_o = len(EDGES), len(OPS)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(n_e, n_o))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(n_e, n_o))
        if mode == "pcdarts":
            self.beta_normal = nn.Parameter(1e-3 * torch.randn(n_e))
            self.beta_reduce = nn.Parameter(1e-3 * torch.randn(n_e))

    # ---- the strategies' interface
    def arch_parameters(self) -> list[nn.Parameter]:
        ps = [self.alpha_normal, self.alpha_reduce]
        if self.mode == "pcdarts":
            ps += [self.beta_normal, self.beta_reduce]
        return ps

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_weights(self) -> dict[str, torch.Tensor]:
        return {"normal": F.softmax(self.alpha_normal, dim=-1), "reduce": F.softmax(self.alpha_reduce, dim=-1)}

    def edge_weights(self) -> dict[str, torch.Tensor]:
        """PC-DARTS normalised betas per cell type (14,)."""
        if self.mode != "pcdarts":
            raise RuntimeError(f"edge_weights() exists in pcdarts mode only (this supernet is {self.mode})")
        return {"normal": normalise_betas(self.beta_normal), "reduce": normalise_betas(self.beta_reduce)}

    def set_tau(self, tau: float) -> None:
        """GDAS Gumbel-softmax temperature."""
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def genotype(self) -> DartsGenotype:
        aw = self.arch_weights()
        if self.mode == "pcdarts":
            ew = self.edge_weights()
            n = derive_cell(aw["normal"], "darts", ew["normal"])
            r = derive_cell(aw["reduce"], "darts", ew["reduce"])
        else:
            rule = "gdas" if self.mode == "gdas" else "darts"
            n, r = derive_cell(aw["normal"], rule), derive_cell(aw["reduce"], rule)
        return DartsGenotype(tuple(n), DEFAULT_CONCAT, tuple(r), DEFAULT_CONCAT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        if self.mode == "gdas":
            hn, idx_n = gumbel_hard(self.alpha_normal, self.tau)
            hr, idx_r = gumbel_hard(self.alpha_reduce, self.tau)
            ln, lr = idx_n.tolist(), idx_r.tolist()
            self.last_sample = {"normal": ln, "reduce": lr}
            for cell in self.cells:
                s0, s1 = s1, cell.forward_gdas(s0, s1, hr if cell.reduction else hn, lr if cell.reduction else ln)
        else:
            wn, wr = F.softmax(self.alpha_normal, dim=-1), F.softmax(self.alpha_reduce, dim=-1)
            bn_, br = None, None
            if self.mode == "pcdarts":
                bn_, br = normalise_betas(self.beta_normal), normalise_betas(self.beta_reduce)
            if self.fused and self.mode == "pcdarts":
                wn, wr = wn * bn_[:, None], wr * br[:, None]  # type: ignore[index]
            for cell in self.cells:
                w, b = (wr, br) if cell.reduction else (wn, bn_)
                if self.fused:
                    s0, s1 = s1, cell.forward_fused(s0, s1, w, b)
                else:
                    s0, s1 = s1, cell.forward_plain(s0, s1, w, b)
        return self.classifier(self.global_pooling(s1).flatten(1))


# --------------------------------------------------------------------------------------------------
# the space


class DartsSpace(SearchSpace):
    name = "darts"
    label = "DARTS cells (normal + reduction)"
    ops = OPS
    edges = EDGES
    cell_types = ("normal", "reduce")
    param_free_ops = PARAM_FREE
    strategies = CELL_SPACE_STRATEGIES
    #: the paper's CIFAR evaluation network: C=36, 20 layers (3 x 6 + 2)
    profile_defaults = (36, 6)
    #: TE-NAS on DARTS/CIFAR-10 (the reference's settings): NTK batch 14, three ops pruned per edge per round,
    #: then each node's incoming edges pruned to two
    tenas_ntk_batch = 14
    tenas_prune_per_round = 3
    tenas_edge_groups = NODE_SLICES
    derives_top2_inputs = True

    def grower(self, size: Any) -> DartsGrower:
        return DartsGrower(self, size)

    def supernet_device_options(self, device: torch.device) -> dict[str, Any]:
        """Recompute the separable ops' second depthwise conv in backward on the CPU only. There it takes
        about 8% off the peak memory at the same speed (2 threads, C=16, 8 cells, batch 64: 4.8 against 5.2
        GB, 9.1-12.2 against 8.9-10.7 s per step; ``bench/bench_darts_space.py --impls ours-cl ours-cl-keep``).
        On a GPU, whose step is bound by kernel launches, it doubled them: 0.94-1.0 s against 0.43 s per
        forward and backward on an H200 (``--device cuda --impls ours ours-keep``)."""
        return {"recompute": device.type == "cpu"}

    def parse(self, text: str) -> DartsGenotype:
        return parse_genotype(text)

    def sample(self, rng: random.Random, input_shape: Sequence[int] | None = None) -> DartsGenotype:
        return random_genotype(rng)

    def mutate(self, genotype: Any, rng: random.Random) -> DartsGenotype:
        return mutate_genotype(self.coerce(genotype), rng)

    def format(self, genotype: Any) -> str:
        return format_genotype(self.coerce(genotype))

    def to_json(self, genotype: Any) -> dict[str, Any]:
        return genotype_to_json(self.coerce(genotype))

    def from_json(self, doc: dict[str, Any]) -> DartsGenotype:
        return genotype_from_json(doc)

    def to_dot(self, genotype: Any) -> str:
        return genotype_dot(self.coerce(genotype))

    def presets(self) -> dict[str, str]:
        """Published genotypes by name, in canonical text."""
        return {name: format_genotype(g) for name, g in PRESETS.items()}

    def coerce(self, genotype: Any) -> DartsGenotype:
        g = super().coerce(genotype)
        if not isinstance(g, DartsGenotype):
            raise GenotypeError(f"not a DARTS genotype: {type(g).__name__}")
        return g

    def build_network(
        self,
        genotype: Any,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        channels: int = 36,
        cells_per_stage: int = 6,
        *,
        layers: int | None = None,
        auxiliary: bool = False,
    ) -> DartsNetwork:
        """Stand-alone network; ``layers`` defaults to 3*cells_per_stage+2 (N=6 -> 20, the paper's)."""
        if layers is None:
            layers = default_layers(cells_per_stage)
        return DartsNetwork(self.coerce(genotype), channels, layers, num_classes, tuple(input_shape), auxiliary)

    def build_supernet(
        self,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        channels: int = 16,
        cells_per_stage: int = 2,
        *,
        mode: str = "darts",
        partial_k: int = 4,
        layers: int | None = None,
        fused: bool = True,
        recompute: bool = True,
        **options: Any,
    ) -> DartsSuperNet:
        """Search supernet (C=16, N=2 -> 8 layers is the paper's); see the module docstring for modes."""
        if options:
            raise ConfigError("supernet", f"unknown option(s) {', '.join(options)} for the darts space")
        if layers is None:
            layers = default_layers(cells_per_stage)
        return DartsSuperNet(channels, layers, num_classes, input_shape[0], mode, partial_k, fused, recompute)
