"""TE-NAS proxy networks for the DARTS cell space (normal + reduction cells, 14 edges x 8 ops each).

Built as the reference builds them (``VITA-Group/TENAS``, ``prune_tenas.py`` with
``search_space_name == 'darts'`` and ``search_model_darts_nasnet.py``; ../shared/ALGORITHMS.md section 5):

- NTK net: the NASNet-style DARTS search network with C=1, N=1, ``depth=2`` (the first two cells), stem
  multiplier 1, stem kept (3x3 conv + BN), then BN + ReLU ("lastact"), global average pool, linear.
- Region net ("thin"): the same with no stem, fed 3x3 crops of one channel.
- Which cells reduce: the reference lays out N=1 as [normal C, reduction 2C, reduction 4C] and keeps the
  first ``depth`` cells, so with depth 2 cell 0 is a normal cell (C=1) and cell 1 a reduction cell (C=2).
  (Our own supernet's ``layers//3, 2*layers//3`` rule would make both cells of a 2-layer net reduction
  cells; we follow the reference, so both op-weight matrices take part in both proxies.)
- Every BN is affine (the reference's ``affine: True``); pools carry no extra BN (AutoDL's ``POOLING``).
  The ops are this project's DARTS ops (``nas_core.spaces.darts_ops``), which keep every ReLU an
  ``nn.ReLU`` module, so the region hooks see each one (one pattern per op, as the reference).
- Mixed edges: sum of ``w * op(x)`` over the ops whose weight is > 0.01; ops at or below are not computed,
  so pruned ops (alpha = -1000) vanish from the NTK (their parameters get no gradient). An edge whose ops
  are all pruned contributes 0, as the reference's "all alphas masked" branch: pass its row as all zeros
  (:func:`masked_softmax` does that for alphas).

Initialisation is :func:`nas_core.proxies.measures.init_proxy` (the same ``init`` choice as on NB201).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.errors import GenotypeError
from nas_core.proxies.measures import (
    ACTIVE_THRESHOLD,
    activation_patterns,
    batched_ntk_rows,
    count_distinct_rows,
    kappa,
    linear_regions,
    ntk_condition_number_reference,
    per_sample_ntk_rows,
)
from nas_core.proxies.networks import ProxyNetworks
from nas_core.spaces.darts_genotype import DEFAULT_CONCAT, EDGE_PAIRS, NODE_SLICES, OPS, STEPS, DartsGenotype
from nas_core.spaces.darts_ops import FactorizedReduce, ReLUConvBN, make_op, shifted

CELL_TYPES: tuple[str, ...] = ("normal", "reduce")
#: alphas at or below this mark a pruned op (the reference's -INF = -1000)
PRUNED_ALPHA = -1000.0


_MAX, _AVG, _SKIP, _S3, _S5, _D3, _D5 = (
    OPS.index(o)
    for o in ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
              "dil_conv_5x5")
)  # fmt: skip
_SEP, _DIL, _FREE = (_S3, _S5), (_D3, _D5), (_MAX, _AVG, _SKIP)


def _op_params(op: nn.Module) -> tuple[torch.Tensor, ...]:
    """The parameters the fused path reads, in a fixed order (looked up once: module indexing is slow).

    SepConv: dw1, pw1, bn1 gamma, beta, dw2, pw2, bn2 gamma, beta; DilConv: dw, pw, gamma, beta;
    FactorizedReduce: conv_1, conv_2, gamma, beta; parameter-free ops: nothing.
    """
    if isinstance(op, FactorizedReduce):
        return (op.conv_1.weight, op.conv_2.weight, op.bn.weight, op.bn.bias)
    seq = getattr(op, "op", None)
    if seq is None:
        return ()
    return tuple(p for m in seq for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None)


class DartsProxyCell(nn.Module):
    """One DARTS search cell (4 nodes, 14 mixed edges) that skips ops with weight <= 0.01.

    Two forward paths with the same maths and the same parameters. ``plain`` (``fused = False``) runs
    edge by edge and op by op through the op modules, as the reference's mixed op. ``fused`` (the
    default) works per source state, over all its outgoing edges at once: one ReLU; the first depthwise
    conv of every active separable conv in one grouped convolution (3x3 kernels zero-padded to 5x5 when
    a 5x5 is active) and of every dilated conv in another; 1x1 convs as products over the channel axis;
    one BN per stage; the op weight folded into each op's last BN (w * BN(x) == BN with gamma and beta
    times w); pools and identities mixed by one product; the nodes summed with one ``index_add``. On
    these 1- and 2-channel nets each call is mostly fixed overhead, so a few calls per source instead of
    a few dozen per edge is several times faster. ReLUs stay ``nn.ReLU`` modules: one per source where
    the plain path has one per op, all seeing the same input, so the distinct activation patterns (the
    region count) are the same; pruned ops are computed by neither path.
    """

    def __init__(self, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.c = c
        self.fused = True
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c, affine=True)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, affine=True)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, affine=True)
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(op, c, 2 if reduction and j < 2 else 1, affine=True) for op in OPS)
            for _, j in EDGE_PAIRS
        )
        # the fused path's ReLUs: of each source state, and of the separable convs' second stage
        self.relu_in = nn.ModuleList(nn.ReLU() for _ in range(STEPS + 1))
        self.relu_mid = nn.ModuleList(nn.ReLU() for _ in range(STEPS + 1))
        self._out_edges = [[k for k, (_, j) in enumerate(EDGE_PAIRS) if j == src] for src in range(STEPS + 1)]
        self._params = [[_op_params(op) for op in ops] for ops in self.edges]
        self._groups = 1

    def _preprocess(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """ReLUConvBN (1x1) or FactorizedReduce, functionally, with the fused path's BN and 1x1 products."""
        if isinstance(m, FactorizedReduce):
            r = m.relu(x)
            y = _channel_mix(
                torch.cat([r[:, :, ::2, ::2], shifted(r)[:, :, ::2, ::2]], 1),
                torch.block_diag(m.conv_1.weight.flatten(1), m.conv_2.weight.flatten(1)),
            )
            return _batch_norm(y, m.bn.weight, m.bn.bias, self._groups)
        relu, conv, bn = m.op  # type: ignore[attr-defined,misc]
        return _batch_norm(_channel_mix(relu(x), conv.weight.flatten(1)), bn.weight, bn.bias, self._groups)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """``groups``: the batch is that many equal batches, each normalised with its own statistics (fused only)."""
        w_all = weights.tolist()
        if self.fused:
            self._groups = groups
            states = [self._preprocess(self.preprocess0, s0), self._preprocess(self.preprocess1, s1)]
            return self._forward_fused(states, w_all)
        if groups != 1:
            raise ValueError("the plain path normalises one batch at a time: groups must be 1")
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for lo, hi in NODE_SLICES:
            total: torch.Tensor | None = None
            for k in range(lo, hi):
                h = states[EDGE_PAIRS[k][1]]
                for op, w in zip(self.edges[k], w_all[k]):
                    if w > ACTIVE_THRESHOLD:
                        t = w * op(h)
                        total = t if total is None else total + t
            states.append(self._zeros(states) if total is None else total)
        return torch.cat(states[-STEPS:], dim=1)

    def _zeros(self, states: list[torch.Tensor], channels: int | None = None) -> torch.Tensor:
        """A node with every incoming edge removed is 0 (the reference never gets there: it keeps 2 edges)."""
        ref = states[1]
        hh, ww = ref.shape[-2:]
        if self.reduction:
            hh, ww = math.ceil(hh / 2), math.ceil(ww / 2)
        return ref.new_zeros(ref.shape[0], self.c if channels is None else channels, hh, ww)

    def _node_channels(self, edges: list[int], lo: int = 0, hi: int | None = None) -> list[int]:
        """Channels ``lo:hi`` of each edge's target node in the side-by-side accumulator of nodes 2..5."""
        hi = self.c if hi is None else hi
        return [(EDGE_PAIRS[k][0] - 2) * self.c + i for k in edges for i in range(lo, hi)]

    def _forward_fused(self, states: list[torch.Tensor], w_all: list[list[float]]) -> torch.Tensor:
        c = self.c
        acc = self._zeros(states, STEPS * c)
        for src in range(STEPS + 1):
            h = states[src]
            stride = 2 if self.reduction and src < 2 else 1
            ks = self._out_edges[src]
            on = [[(k, o) for k in ks if w_all[k][o] > ACTIVE_THRESHOLD] for o in range(len(OPS))]
            sep, dil = on[_S3] + on[_S5], on[_D3] + on[_D5]
            fr = [k for k, _ in on[_SKIP]] if stride == 2 else []
            parts: list[torch.Tensor] = []
            index: list[int] = []
            if sep or dil or fr:
                r = self.relu_in[src](h)
                if sep or dil:
                    self._convs(src, r, stride, on, w_all, parts, index)
                if fr:
                    self._factorized_reduce(r, fr, w_all, parts, index)
            free = [kind for kind in _FREE if on[kind] and not (kind == _SKIP and stride == 2)]
            if free:
                self._param_free(h, stride, free, on, w_all, parts, index)
            if parts:
                y = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
                acc = acc.index_add(1, torch.tensor(index, device=y.device), y)
            if src >= 1:  # node src+1 has all its inputs (states 0..src) summed in
                states.append(acc[:, (src - 1) * c : src * c])
        return acc

    def _depthwise(
        self, x: torch.Tensor, groups: list[list[tuple[int, int]]], pos: int, stride: int, dilation: int
    ) -> torch.Tensor:
        """One grouped conv: the depthwise kernel ``params[pos]`` of each (edge, op) in ``groups`` (a 3x3
        and a 5x5 list), the 3x3s zero-padded to 5x5 when both occur. ``x`` has ``c`` channels (shared by
        every block: repeated) or one ``c`` slice per block."""
        c = self.c
        blocks = [b for g in groups for b in g]
        size = 5 if groups[1] else 3
        ws = [torch.cat([self._params[k][o][pos] for k, o in g]) for g in groups if g]
        if groups[0] and size == 5:
            ws[0] = F.pad(ws[0], (1, 1, 1, 1))
        w = torch.cat(ws) if len(ws) > 1 else ws[0]
        if x.shape[1] == c and len(blocks) > 1:
            x = x.repeat(1, len(blocks), 1, 1)
        return F.conv2d(x, w, None, stride, dilation * (size // 2), dilation, len(blocks) * c)

    def _pointwise(self, y: torch.Tensor, blocks: list[tuple[int, int]], pos: int) -> torch.Tensor:
        """The 1x1 conv ``params[pos]`` of each block on its own ``c`` channels, as one product over the
        channel axis (a grouped 1x1 convolution with 1 or 2 channels per group is slow in oneDNN)."""
        w = [self._params[k][o][pos].flatten(1) for k, o in blocks]
        if self.c == 1:
            return y * torch.cat(w).view(1, -1, 1, 1)
        return _channel_mix(y, torch.block_diag(*w))

    def _bn(self, y: torch.Tensor, blocks: list[tuple[int, int]], pos: int, scale: list[float]) -> torch.Tensor:
        """Batch-statistics BN with gamma, beta = ``params[pos]``, ``params[pos+1]`` of each block, times its scale."""
        gamma = torch.cat([self._params[k][o][pos] for k, o in blocks])
        beta = torch.cat([self._params[k][o][pos + 1] for k, o in blocks])
        if any(s != 1.0 for s in scale):
            s = torch.tensor(scale, dtype=y.dtype, device=y.device).repeat_interleave(self.c)
            gamma, beta = gamma * s, beta * s
        return _batch_norm(y, gamma, beta, self._groups)

    def _convs(
        self,
        src: int,
        r: torch.Tensor,
        stride: int,
        on: list[list[tuple[int, int]]],
        w_all: list[list[float]],
        parts: list[torch.Tensor],
        index: list[int],
    ) -> None:
        """The separable and dilated convs of one source's outgoing edges: both stages, op weights folded."""
        c = self.c
        sep, dil = on[_S3] + on[_S5], on[_D3] + on[_D5]
        ys = []
        if sep:
            ys.append(self._depthwise(r, [on[_S3], on[_S5]], 0, stride, 1))
        if dil:
            ys.append(self._depthwise(r, [on[_D3], on[_D5]], 0, stride, 2))
        y = self._pointwise(torch.cat(ys, 1) if len(ys) > 1 else ys[0], sep + dil, 1)
        y = self._bn(y, sep + dil, 2, [1.0] * len(sep) + [w_all[k][o] for k, o in dil])
        if dil:
            parts.append(y[:, len(sep) * c :])
            index += self._node_channels([k for k, _ in dil])
        if sep:
            z = self.relu_mid[src](y[:, : len(sep) * c])
            z = self._pointwise(self._depthwise(z, [on[_S3], on[_S5]], 4, 1, 1), sep, 5)
            parts.append(self._bn(z, sep, 6, [w_all[k][o] for k, o in sep]))
            index += self._node_channels([k for k, _ in sep])

    def _factorized_reduce(
        self, r: torch.Tensor, fr: list[int], w_all: list[list[float]], parts: list[torch.Tensor], index: list[int]
    ) -> None:
        """The stride-2 skip_connects (FactorizedReduce) of one source: both 1x1 convs of all edges as one
        block-diagonal product on [even pixels, shifted even pixels], one BN."""
        c, half = self.c, self.c // 2
        x = torch.cat([r[:, :, ::2, ::2], shifted(r)[:, :, ::2, ::2]], 1)
        p = [self._params[k][_SKIP] for k in fr]
        mix = torch.block_diag(torch.cat([q[0] for q in p]).flatten(1), torch.cat([q[1] for q in p]).flatten(1))
        y = _channel_mix(x, mix)  # [conv_1 of every edge, conv_2 of every edge]
        scale = torch.tensor([w_all[k][_SKIP] for k in fr], dtype=y.dtype, device=y.device).repeat_interleave(half)
        gamma = torch.cat([q[2][:half] for q in p] + [q[2][half:] for q in p]) * scale.repeat(2)
        beta = torch.cat([q[3][:half] for q in p] + [q[3][half:] for q in p]) * scale.repeat(2)
        parts.append(_batch_norm(y, gamma, beta, self._groups))
        index += self._node_channels(fr, 0, half) + self._node_channels(fr, half, c)

    def _param_free(
        self,
        h: torch.Tensor,
        stride: int,
        kinds: list[int],
        on: list[list[tuple[int, int]]],
        w_all: list[list[float]],
        parts: list[torch.Tensor],
        index: list[int],
    ) -> None:
        """Pools and identities of one source: per edge their weighted sum, as one fixed channel mix."""
        c = self.c
        maps = []
        for kind in kinds:
            if kind == _MAX:
                maps.append(F.max_pool2d(h, 3, stride, 1))
            elif kind == _AVG:
                maps.append(F.avg_pool2d(h, 3, stride, 1, count_include_pad=False))
            else:
                maps.append(h)
        x = torch.cat(maps, 1) if len(maps) > 1 else maps[0]
        edges = sorted({k for kind in kinds for k, _ in on[kind]})
        mix = [[0.0] * (len(kinds) * c) for _ in range(len(edges) * c)]
        for s, kind in enumerate(kinds):
            for k, _ in on[kind]:
                e = edges.index(k)
                for i in range(c):
                    mix[e * c + i][s * c + i] = w_all[k][kind]
        parts.append(_channel_mix(x, torch.tensor(mix, dtype=x.dtype, device=x.device)))
        index += self._node_channels(edges)


def _batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Batch-statistics BN (train mode, eps 1e-5); with ``groups`` > 1 the batch is that many equal batches,
    each normalised on its own statistics (one call for the region count's batches instead of one forward each)."""
    if groups == 1:
        return F.batch_norm(x, None, None, gamma, beta, True, 0.0, 1e-5)
    n, c = x.shape[0] // groups, x.shape[1]
    rest = x.shape[2:]
    y = x.view(groups, n, c, *rest).transpose(0, 1).reshape(n, groups * c, *rest)
    y = F.batch_norm(y, None, None, gamma.repeat(groups), beta.repeat(groups), True, 0.0, 1e-5)
    return y.view(n, groups, c, *rest).transpose(0, 1).reshape(x.shape)


def _channel_mix(x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution without bias (``mix``: out x in) as a matrix product over the channel axis."""
    return F.linear(x.permute(0, 2, 3, 1), mix).permute(0, 3, 1, 2)


class DartsProxyNet(nn.Module):
    """The reference's NASNet-style DARTS search network (N=1), cut after ``depth`` cells; see module doc.

    ``forward(x, weights_normal, weights_reduce)`` -> logits; each weight matrix is 14 x 8 (op order of
    :data:`nas_core.spaces.darts_genotype.OPS`).
    """

    def __init__(
        self,
        num_classes: int,
        in_ch: int,
        c: int = 1,
        depth: int = 2,
        stem_multiplier: int = 1,
        use_stem: bool = True,
    ) -> None:
        super().__init__()
        if not 1 <= depth <= 3:
            raise ValueError(f"depth must be 1..3 (N=1 has three cells), got {depth}")
        channels = [c, 2 * c, 4 * c][:depth]
        reductions = [False, True, True][:depth]
        if use_stem:
            c_stem = c * stem_multiplier
            self.stem: nn.Module | None = nn.Sequential(
                nn.Conv2d(in_ch, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
            )
            c_pp = c_p = c_stem
        else:
            self.stem = None
            c_pp = c_p = in_ch
        self.cells = nn.ModuleList()
        reduction_prev = False
        for c_cur, reduction in zip(channels, reductions):
            self.cells.append(DartsProxyCell(c_pp, c_p, c_cur, reduction, reduction_prev))
            c_pp, c_p, reduction_prev = c_p, STEPS * c_cur, reduction
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_p), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def train(self, mode: bool = True) -> DartsProxyNet:
        """As ``nn.Module.train``, but a no-op when the whole net is already in that mode.

        The measures call ``train()`` before every evaluation, and this net has ~1,200 modules (8 op modules
        per edge): setting them all each time cost a quarter of a tiny search. Change a submodule's mode
        directly and the next ``train()``/``eval()`` here sets everything again only if the net's own flag differs.
        """
        if getattr(self, "_mode_set", None) == mode and self.training == mode:
            return self
        super().train(mode)
        self._mode_set = mode
        return self

    def ntk_params(self) -> list[torch.Tensor]:
        """The parameters the NTK differentiates (name contains "weight"), looked up once."""
        if getattr(self, "_ntk_params", None) is None:
            self._ntk_params = [p for name, p in self.named_parameters() if "weight" in name and p.requires_grad]
        return self._ntk_params

    @property
    def fused(self) -> bool:
        return all(cell.fused for cell in self.cells)

    @fused.setter
    def fused(self, value: bool) -> None:
        for cell in self.cells:
            cell.fused = bool(value)

    def forward(
        self, x: torch.Tensor, weights_normal: torch.Tensor, weights_reduce: torch.Tensor, groups: int = 1
    ) -> torch.Tensor:
        """Logits; ``groups`` > 1 (fused path only): ``x`` is that many equal batches, each normalised on
        its own batch statistics, exactly as forwarding them one at a time."""
        if groups != 1 and not self.fused:
            raise ValueError("groups > 1 needs the fused path")
        fused = self.fused  # the fused path's BNs are functional: batch statistics, no running-stat updates
        if self.stem is None:
            s0 = s1 = x
        elif not fused:
            s0 = s1 = self.stem(x)
        else:
            conv, bn = self.stem  # type: ignore[misc]
            s0 = s1 = _batch_norm(F.conv2d(x, conv.weight, None, 1, 1), bn.weight, bn.bias, groups)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, weights_reduce if cell.reduction else weights_normal, groups)
        bn, relu = self.lastact  # type: ignore[misc]
        out = relu(_batch_norm(s1, bn.weight, bn.bias, groups) if fused else bn(s1))
        return self.classifier(self.global_pooling(out).flatten(1))


def ntk_net(num_classes: int, in_ch: int) -> DartsProxyNet:
    """The reference's DARTS NTK net: C=1, 2 cells (normal, reduction), stem multiplier 1, stem kept."""
    return DartsProxyNet(num_classes, in_ch, c=1, depth=2, stem_multiplier=1, use_stem=True)


def region_net(num_classes: int) -> DartsProxyNet:
    """The reference's DARTS "thin" net for linear regions: C=1, 2 cells, no stem, 1-channel 3x3 input."""
    return DartsProxyNet(num_classes, 1, c=1, depth=2, stem_multiplier=1, use_stem=False)


def ntk_condition_number_batched(model: nn.Module, x: torch.Tensor, *args: torch.Tensor) -> float:
    """:func:`nas_core.proxies.ntk_condition_number` with the per-sample backward passes batched.

    The same quantity - G[n] = d(sum of sample n's logits)/d(every parameter named "weight" that takes part),
    kappa of G G^T, train mode, NaN -> 1e5 - but the n backward passes are one vectorised pass
    (``is_grads_batched``: the cotangents are the rows of an identity). These proxy nets are hundreds of
    tiny ops, so the cost is the graph walk, not the arithmetic: one walk instead of n is 2-3x faster here
    (measured at batch 4 and 14). Tests check it against the plain per-sample loop.
    """
    model.train()
    if isinstance(model, DartsProxyNet):
        params = model.ntk_params()
    else:
        params = [p for name, p in model.named_parameters() if "weight" in name and p.requires_grad]
    s = model(x, *args).sum(dim=1)
    return kappa(batched_ntk_rows(s, params) if s.device.type == "cpu" else per_sample_ntk_rows(s, params))


def linear_regions_grouped(
    model: DartsProxyNet, batches: Sequence[torch.Tensor], weights_normal: torch.Tensor, weights_reduce: torch.Tensor
) -> int:
    """:func:`nas_core.proxies.linear_regions` with the batches in one forward, each normalised on its own.

    The same patterns (each batch's BN statistics are its own, as when forwarded one by one) and the same
    count; one forward instead of one per batch. Falls back to one forward per batch on the plain path or
    batches of unequal size.
    """
    if not model.fused or len({len(b) for b in batches}) != 1:
        return linear_regions(model, batches, weights_normal, weights_reduce)
    x = torch.cat(list(batches)) if len(batches) > 1 else batches[0]
    return count_distinct_rows(activation_patterns(model, [x], weights_normal, weights_reduce, len(batches)))


def masked_softmax(alpha: torch.Tensor) -> torch.Tensor:
    """softmax(alpha) per edge, with edges whose alphas are all pruned set to 0 (the edge contributes 0).

    The reference tests ``sum(alphas) <= -INF * len(alphas)``: softmax of such a row is uniform, so the
    weights alone would wrongly switch every op back on.
    """
    w = F.softmax(alpha, dim=-1)
    gone = (alpha <= PRUNED_ALPHA).all(dim=-1)
    return w.masked_fill(gone[:, None], 0.0)


def weight_args(weights: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(normal, reduce) from ``{"normal": w, "reduce": w}`` or a pair; each must be 14 x 8."""
    if isinstance(weights, Mapping):
        missing = [c for c in CELL_TYPES if c not in weights]
        if missing:
            raise ValueError(f"DARTS op weights need the cell types {', '.join(CELL_TYPES)}; missing {missing[0]!r}")
        pair = (weights["normal"], weights["reduce"])
    elif isinstance(weights, Sequence) and len(weights) == 2:
        pair = (weights[0], weights[1])
    else:
        raise ValueError("DARTS op weights must be {'normal': w, 'reduce': w} or a (normal, reduce) pair")
    shape = (len(EDGE_PAIRS), len(OPS))
    for cell, w in zip(CELL_TYPES, pair):
        if not isinstance(w, torch.Tensor) or tuple(w.shape) != shape:
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"DARTS {cell} op weights must be a {shape[0]}x{shape[1]} tensor, got {got}")
    return pair[0], pair[1]


def genotype_weights(genotype: DartsGenotype) -> dict[str, torch.Tensor]:
    """Per cell type the (14 x 8) weights of a fixed architecture: 1 for each chosen (op, input), else 0.

    Edges not in the genotype are all-zero rows (they contribute nothing), so the supernet with these
    weights computes exactly node = op_a(input_a) + op_b(input_b); two ops on the same input share a row.
    """
    out = {}
    for cell in CELL_TYPES:
        pairs, concat = genotype.cell(cell)
        if tuple(concat) != DEFAULT_CONCAT:
            raise GenotypeError(
                f"{cell}_concat: the proxy networks concatenate nodes {list(DEFAULT_CONCAT)}, got {list(concat)}"
            )
        w = torch.zeros(len(EDGE_PAIRS), len(OPS))
        for n, (op, j) in enumerate(pairs):
            w[EDGE_PAIRS.index((2 + n // 2, j)), OPS.index(op)] = 1.0
        out[cell] = w
    return out


#: the DARTS space's proxy networks and measures, as :data:`nas_core.proxies.evaluator.PROXY_NETWORKS` registers
DARTS_PROXIES = ProxyNetworks(
    build=lambda classes, in_ch: (ntk_net(classes, in_ch), region_net(classes)), args=weight_args,
    ntk=ntk_condition_number_batched, ntk_reference=ntk_condition_number_reference, regions=linear_regions_grouped,
    genotype_type=DartsGenotype, genotype_weights=genotype_weights,
)
