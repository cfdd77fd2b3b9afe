"""TE-NAS proxy networks for the NAS-Bench-201 cell, built as the reference (``VITA-Group/TENAS``) builds them.

The NTK net is the NB201 skeleton with C=3, N=1 (stem kept); the region net is one cell with C=1 and no stem,
fed 3x3 crops of one channel. Mixed edges weight their ops by the given per-edge weights (softmax of alpha)
and skip every op whose weight is <= 0.01, so ops pruned with alpha = -1000 are not computed at all and
their parameters drop out of the NTK. The convs' BNs are affine (``affine=True`` in the reference's proxy
config), so their gammas are NTK weights too.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import nas_core.proxies.ntk_conv as ntk_conv
from nas_core.proxies.measures import (
    ACTIVE_THRESHOLD,
    linear_regions,
    ntk_condition_number,
    ntk_condition_number_reference,
)
from nas_core.proxies.networks import ProxyNetworks
from nas_core.spaces.nb201_arch import (
    EDGE_PAIRS,
    NUM_NODES,
    OPS,
    NB201Genotype,
    SearchCell,
    Skeleton,
)

_I_SKIP, _I_C1, _I_C3, _I_POOL = (
    OPS.index(o) for o in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
)


class ProxyCell(SearchCell):
    """NB201 mixed cell that skips ops with weight <= 0.01 and applies its ReLUs as ``nn.ReLU`` modules.

    The supernet's own cell calls ``F.relu`` and computes every op; the proxies need both the skipping
    (pruned ops must vanish from the NTK) and hookable ReLUs (linear regions). One ReLU per source
    node stands for the reference's per-op ReLUs: they see the same input, so the duplicated
    activation patterns of the reference carry no extra information and give the same region count.
    Each conv op has its own affine BN (batch statistics, as in train mode), as the reference's proxy
    supernet; its gamma is a "weight" of the NTK. The op weight scales gamma and beta: w * BN(y).
    """

    def __init__(self, c: int, fused: bool = True) -> None:
        super().__init__(c, fused=fused)
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(NUM_NODES - 1))
        for edge in self.edges:
            edge.bn1 = nn.BatchNorm2d(c, track_running_stats=False)
            edge.bn3 = nn.BatchNorm2d(c, track_running_stats=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w_all = weights.tolist()
        act = [[v > ACTIVE_THRESHOLD for v in row] for row in w_all]
        if not self.fused:
            return self._forward_plain(x, w_all, act)
        # Fused: per source node one ReLU, one pooling and one convolution per kernel size holding the
        # active convs of all its outgoing edges; the op weight is the scale of the non-affine BN.
        c = self.c
        nodes = [x]
        partial: dict[int, list[torch.Tensor]] = {}
        for src in range(NUM_NODES - 1):
            h = nodes[src]
            outs: dict[int, list[torch.Tensor]] = {k: [] for k in self._out_edges[src]}
            convs = [(_I_C1, "conv1", "bn1", 0), (_I_C3, "conv3", "bn3", 1)]
            if any(act[k][i] for k in outs for i, _, _, _ in convs):
                r = self.relus[src](h)
                for i, name, bn_name, pad in convs:
                    ks = [k for k in outs if act[k][i]]
                    if not ks:
                        continue
                    wt = torch.cat([getattr(self.edges[k], name).weight for k in ks])
                    bns = [getattr(self.edges[k], bn_name) for k in ks]
                    scale = torch.cat([bn.weight * w_all[k][i] for k, bn in zip(ks, bns)])
                    shift = torch.cat([bn.bias * w_all[k][i] for k, bn in zip(ks, bns)])
                    y = ntk_conv.batch_norm(ntk_conv.conv2d(r, wt, pad), scale, shift)
                    for k, yk in zip(ks, y.split(c, dim=1)):
                        outs[k].append(yk)
            pool = None
            for k in outs:
                if act[k][_I_SKIP]:
                    outs[k].append(w_all[k][_I_SKIP] * h)
                if act[k][_I_POOL]:
                    if pool is None:
                        pool = ntk_conv.avg_pool_3x3_exclude_pad(h)
                    outs[k].append(w_all[k][_I_POOL] * pool)
                partial.setdefault(EDGE_PAIRS[k][0], []).extend(outs[k])
            terms = partial.pop(src + 1, [])
            nodes.append(_sum(terms) if terms else torch.zeros_like(x))
        return nodes[-1]

    def _forward_plain(self, x: torch.Tensor, w_all: list[list[float]], act: list[list[bool]]) -> torch.Tensor:
        """Edge by edge, op by op, as the reference's mixed op (kept to check the fused path)."""
        nodes = [x]
        relu_cache: dict[int, torch.Tensor] = {}
        for i in range(1, NUM_NODES):
            terms: list[torch.Tensor] = []
            for k, (ii, j) in enumerate(EDGE_PAIRS):
                if ii != i:
                    continue
                w, a, h, e = w_all[k], act[k], nodes[j], self.edges[k]
                if a[_I_SKIP]:
                    terms.append(w[_I_SKIP] * h)
                if a[_I_C1] or a[_I_C3]:
                    if j not in relu_cache:
                        relu_cache[j] = self.relus[j](h)
                    r = relu_cache[j]
                    if a[_I_C1]:
                        terms.append(w[_I_C1] * _bn(e.conv1(r), e.bn1))
                    if a[_I_C3]:
                        terms.append(w[_I_C3] * _bn(e.conv3(r), e.bn3))
                if a[_I_POOL]:
                    terms.append(w[_I_POOL] * F.avg_pool2d(h, 3, 1, 1, count_include_pad=False))
                # `none` adds w * 0: nothing
            nodes.append(_sum(terms) if terms else torch.zeros_like(x))
        return nodes[-1]


def _sum(terms: list[torch.Tensor]) -> torch.Tensor:
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return ntk_conv.batch_norm(x, bn.weight, bn.bias, 1e-5)


class NTKNet(Skeleton):
    """NB201 search skeleton (stem, 3 stages of N cells, ResNet blocks, classifier) with proxy cells."""

    def __init__(self, num_classes: int, in_ch: int, c: int = 3, n: int = 1) -> None:
        super().__init__(ProxyCell, c, n, num_classes, in_ch)
        ntk_conv.use_fast_convs(self)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = self.global_pooling(self.features(x, weights)).flatten(1)
        return self.classifier(out)


class RegionNet(nn.Module):
    """The reference's "thin" NB201 network for linear regions: one C=1 cell on 1-channel input, no stem."""

    def __init__(self, c: int = 1, cells: int = 1) -> None:
        super().__init__()
        self.cells = nn.ModuleList(ProxyCell(c) for _ in range(cells))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        for cell in self.cells:
            x = cell(x, weights)
        return x


def genotype_weights(genotype: NB201Genotype) -> torch.Tensor:
    """One-hot (edges x ops) weights of a fixed architecture: the supernet with every other op pruned."""
    w = torch.zeros(len(EDGE_PAIRS), len(OPS))
    for k, op in enumerate(genotype.ops):
        w[k, OPS.index(op)] = 1.0
    return w


def weight_args(weights: Any) -> tuple[torch.Tensor, ...]:
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (len(EDGE_PAIRS), len(OPS)):
        got = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"NB201 op weights must be a {len(EDGE_PAIRS)}x{len(OPS)} tensor, got {got}")
    return (weights,)


#: NB201's proxy networks and measures, as :data:`nas_core.proxies.evaluator.PROXY_NETWORKS` registers them
NB201_PROXIES = ProxyNetworks(
    build=lambda classes, in_ch: (NTKNet(classes, in_ch), RegionNet()), args=weight_args,
    ntk=ntk_condition_number, ntk_reference=ntk_condition_number_reference, regions=linear_regions,
    genotype_type=NB201Genotype, genotype_weights=genotype_weights,
)
