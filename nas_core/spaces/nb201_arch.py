"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), built exactly as the benchmark's code builds it.

A cell has nodes 0 (input) to 3 (output) and an edge j->i for every j < i (6 edges), each carrying
one of 5 ops. Genotype strings use the benchmark's own format so results can be looked up there:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. The stand-alone skeleton (stem, 3 stages of N cells joined
by ResNet blocks, BN-ReLU, pooling, classifier) reproduces the benchmark's parameter and MAC counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_core.errors import GenotypeError
from nas_core.spaces.base import check_document, json_document

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (target, source) pairs in the benchmark's order: node 1, then node 2, then node 3.
EDGE_PAIRS: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
EDGES: tuple[str, ...] = tuple(f"{i}<-{j}" for i, j in EDGE_PAIRS)
PARAM_FREE = frozenset({"none", "skip_connect", "avg_pool_3x3"})
NUM_NODES = 4


@dataclass(frozen=True)
class NB201Genotype:
    """One op per edge, in :data:`EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise GenotypeError(f"an NB201 genotype has {len(EDGES)} edges, got {len(self.ops)}")
        for edge, op in zip(EDGES, self.ops):
            if op not in OPS:
                raise GenotypeError(f"edge {edge}: unknown op {op!r}; NB201 ops are {', '.join(OPS)}")

    def __str__(self) -> str:
        return format_genotype(self)


def random_genotype(rng: random.Random) -> NB201Genotype:
    """Every edge's op drawn uniformly from the 5 ops (``none`` included, as NB201's 15,625 cells)."""
    return NB201Genotype(tuple(rng.choice(OPS) for _ in EDGES))


def mutate_genotype(g: NB201Genotype, rng: random.Random) -> NB201Genotype:
    """One edge, drawn uniformly, gets a different op (the NB201 paper's REA mutation)."""
    ops = list(g.ops)
    k = rng.randrange(len(ops))
    ops[k] = rng.choice([o for o in OPS if o != ops[k]])
    return NB201Genotype(tuple(ops))


def format_genotype(g: NB201Genotype) -> str:
    """The benchmark's arch string."""
    parts, k = [], 0
    for i in range(1, NUM_NODES):
        items = []
        for j in range(i):
            items.append(f"{g.ops[k]}~{j}")
            k += 1
        parts.append("|" + "|".join(items) + "|")
    return "+".join(parts)


def parse_genotype(text: str) -> NB201Genotype:
    """Parse the benchmark's arch string, naming the first thing that is wrong."""
    text = (text or "").strip()
    if not text:
        raise GenotypeError("empty NB201 genotype; expected e.g. |nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+...")
    if text.startswith("{"):
        return genotype_from_json(json_document(text))
    nodes = text.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise GenotypeError(f"an NB201 arch string has {NUM_NODES - 1} nodes joined by '+', found {len(nodes)}")
    ops: list[str] = []
    for i, node in enumerate(nodes, start=1):
        node = node.strip()
        if not (node.startswith("|") and node.endswith("|")):
            raise GenotypeError(f"node {i}: expected '|op~j|...|', got {node!r}")
        items = [s for s in node[1:-1].split("|")]
        if len(items) != i:
            raise GenotypeError(f"node {i}: expected {i} incoming edge(s), got {len(items)} in {node!r}")
        for j, item in enumerate(items):
            if "~" not in item:
                raise GenotypeError(f"node {i}: edge {item!r} lacks '~source'")
            op, src = item.rsplit("~", 1)
            if src.strip() != str(j):
                raise GenotypeError(f"node {i}: edge {item!r} must come from node {j}")
            op = op.strip()
            if op not in OPS:
                raise GenotypeError(f"node {i}: unknown op {op!r}; NB201 ops are {', '.join(OPS)}")
            ops.append(op)
    return NB201Genotype(tuple(ops))


def genotype_to_json(g: NB201Genotype) -> dict[str, Any]:
    return {
        "space": "nb201",
        "format": 1,
        "arch": format_genotype(g),
        "edges": {edge: op for edge, op in zip(EDGES, g.ops)},
    }


def genotype_from_json(doc: Any) -> NB201Genotype:
    doc = check_document(doc, "nb201")
    if "arch" in doc:
        g = parse_genotype(str(doc["arch"]))
        edges = doc.get("edges")
        if isinstance(edges, dict) and edges and tuple(edges.get(e) for e in EDGES) != g.ops:
            raise GenotypeError("genotype JSON: 'edges' disagrees with 'arch'")
        return g
    edges = doc.get("edges")
    if not isinstance(edges, dict):
        raise GenotypeError("genotype JSON needs 'arch' (string) or 'edges' (object)")
    missing = [e for e in EDGES if e not in edges]
    if missing:
        raise GenotypeError(f"genotype JSON: missing edge(s) {', '.join(missing)}")
    return NB201Genotype(tuple(str(edges[e]) for e in EDGES))


# --------------------------------------------------------------------------- building blocks


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class ResNetBlock(nn.Module):
    """The benchmark's stride-2 reduction block between stages."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _make_op(op: str, c: int, affine: bool) -> nn.Module | None:
    if op == "none":
        return None
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0, affine)
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1, affine)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise GenotypeError(f"unknown op {op!r}")


class InferCell(nn.Module):
    """A fixed cell: node_i = sum over j<i of op_ij(node_j); `none` edges are not computed at all."""

    def __init__(self, genotype: NB201Genotype, c: int) -> None:
        super().__init__()
        self.genotype = genotype
        self.edge_ops = nn.ModuleDict()
        for (i, j), op in zip(EDGE_PAIRS, genotype.ops):
            mod = _make_op(op, c, affine=True)
            if mod is not None:
                self.edge_ops[f"{i}_{j}"] = mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for i in range(1, NUM_NODES):
            total: torch.Tensor | None = None
            for j in range(i):
                key = f"{i}_{j}"
                if key in self.edge_ops:
                    out = self.edge_ops[key](nodes[j])
                    total = out if total is None else total + out
            nodes.append(total if total is not None else torch.zeros_like(x))
        return nodes[-1]


class Skeleton(nn.Module):
    """Stem, three stages of cells joined by ResNet blocks, BN-ReLU, pooling, classifier."""

    def __init__(self, make_cell, c: int, n: int, num_classes: int, in_ch: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        layers: list[nn.Module] = []
        c_prev = c
        for stage, c_curr in enumerate((c, 2 * c, 4 * c)):
            if stage > 0:
                layers.append(ResNetBlock(c_prev, c_curr))
            layers.extend(make_cell(c_curr) for _ in range(n))
            c_prev = c_curr
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def features(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights) if isinstance(cell, SearchCell) else cell(x)
        return self.lastact(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.global_pooling(self.features(x)).flatten(1)
        return self.classifier(out)


class NB201Network(Skeleton):
    """Stand-alone NAS-Bench-201 network for one genotype (C=16, N=5 is the benchmark's)."""

    def __init__(self, genotype: NB201Genotype, c: int = 16, n: int = 5, num_classes: int = 10, in_ch: int = 3):
        super().__init__(lambda cc: InferCell(genotype, cc), c, n, num_classes, in_ch)
        self.genotype = genotype


# --------------------------------------------------------------------------- supernet


class SearchEdge(nn.Module):
    """Parameters of one mixed edge: the two conv ops (their BN is non-affine, as in DARTS search)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.conv3 = nn.Conv2d(c, c, 3, padding=1, bias=False)


_INV_COUNT: dict[tuple, torch.Tensor] = {}


def avg_pool_3x3_exclude_pad(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that excludes padding from the count, as NAS-Bench-201's pool does.

    The same numbers as ``F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)`` (up to float rounding), and
    several times faster on CPU, forward and backward: channels-last input takes the padding-inclusive
    kernel (vectorised over channels) rescaled by a cached 9/count map; contiguous input (few channels, e.g.
    TE-NAS's C=3 proxy nets) takes a 3x3 box sum of the zero-padded input (shifted adds) times the cached
    1/count map, and its backward is the same box sum of the gradient times that map (the zero-padded box
    sum is its own adjoint), about half the cost of autograd's way through the shifted slices.
    """
    inv_count = exclude_pad_inv_count(x)
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=True) * (9.0 * inv_count)
    return _ExcludePadPool.apply(x, inv_count)


def exclude_pad_inv_count(x: torch.Tensor) -> torch.Tensor:
    """1 / (pixels of each 3x3 window inside ``x``'s planes), (1, 1, H, W), cached per size, dtype and device."""
    h, w = x.shape[-2:]
    key = (h, w, x.dtype, x.device)
    inv_count = _INV_COUNT.get(key)
    if inv_count is None:
        ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        inv_count = 1.0 / (9.0 * F.avg_pool2d(ones, 3, 1, 1, count_include_pad=True))
        _INV_COUNT[key] = inv_count
    return inv_count


def box_sum_3x3(x: torch.Tensor) -> torch.Tensor:
    """Sum over each 3x3 window of the zero-padded input (same size out), as separable shifted adds."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :-2] + p[..., 1:-1]
    rows += p[..., 2:]
    out = rows[..., :-2, :] + rows[..., 1:-1, :]
    out += rows[..., 2:, :]
    return out


class _ExcludePadPool(torch.autograd.Function):
    """The exclude-pad pool as box sum times 1/count, with the same box sum for its backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inv_count: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(inv_count)
        return box_sum_3x3(x).mul_(inv_count)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        (inv_count,) = ctx.saved_tensors
        return box_sum_3x3(g * inv_count), None


def _bn(x: torch.Tensor) -> torch.Tensor:
    # Non-affine BN from batch statistics (track_running_stats=False in the search network).
    return F.batch_norm(x, None, None, training=True, eps=1e-5)


_I_NONE, _I_SKIP, _I_C1, _I_C3, _I_POOL = range(len(OPS))  # positions in OPS

#: Supernet modes: DARTS mixed edges, GDAS hard Gumbel samples, PC-DARTS partial channels + edge betas.
SUPERNET_MODES: tuple[str, ...] = ("darts", "gdas", "pcdarts")
#: Edge indices (into EDGES) entering each intermediate node 1..3: the groups edge betas normalise over.
NODE_EDGE_SLICES: tuple[slice, ...] = (slice(0, 1), slice(1, 3), slice(3, 6))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """PC-DARTS channel shuffle: view channels as (groups, C/groups), swap the two axes, flatten."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SearchCell(nn.Module):
    """Mixed cell: edge output = sum_o w_o * o(x) over the 5 ops, weights given per forward.

    Two forward paths with identical results (tests check it): ``plain`` evaluates each edge on its
    own, as the reference does; ``fused`` (the default) evaluates, per source node, one shared ReLU,
    one pooling, and one convolution per kernel size whose output channels hold every outgoing edge.
    The ``none`` op contributes w*0 = 0 and is skipped (its alpha still gets gradient via softmax).
    With ``partial_k`` > 1 (PC-DARTS) the edge ops are built for C/K channels: see :meth:`forward_pcdarts`.
    """

    def __init__(self, c: int, fused: bool = True, partial_k: int = 1) -> None:
        super().__init__()
        if partial_k < 1 or c % partial_k:
            raise ValueError(f"partial_k={partial_k} must be >= 1 and divide the cell's {c} channels")
        self.c = c
        self.k = partial_k
        self.fused = fused
        self.edges = nn.ModuleList(SearchEdge(c // partial_k) for _ in EDGE_PAIRS)
        # outgoing edge indices per source node
        self._out_edges = [[k for k, (_, j) in enumerate(EDGE_PAIRS) if j == src] for src in range(NUM_NODES - 1)]

    def _edge_plain(self, k: int, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        e = self.edges[k]
        r = F.relu(x)
        pool = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return w[_I_SKIP] * x + w[_I_C1] * _bn(e.conv1(r)) + w[_I_C3] * _bn(e.conv3(r)) + w[_I_POOL] * pool

    def _mixed_fused(self, h: torch.Tensor, ks: list[int], weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Mixed outputs of the edges ``ks`` leaving one node, computed with one conv per kernel size."""
        c = h.shape[1]
        r = F.relu(h)
        w1 = torch.cat([self.edges[k].conv1.weight for k in ks])
        w3 = torch.cat([self.edges[k].conv3.weight for k in ks])
        # The op weight is folded into the non-affine BN as its per-channel scale: w*BN(y) == BN_w(y).
        s1 = weights[ks, _I_C1].repeat_interleave(c)
        s3 = weights[ks, _I_C3].repeat_interleave(c)
        y = F.batch_norm(F.conv2d(r, w1), None, None, s1, None, True, 0.0, 1e-5) + F.batch_norm(
            F.conv2d(r, w3, padding=1), None, None, s3, None, True, 0.0, 1e-5
        )
        p = avg_pool_3x3_exclude_pad(h)
        return tuple(yk + weights[k, _I_SKIP] * h + weights[k, _I_POOL] * p for k, yk in zip(ks, y.split(c, dim=1)))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if not self.fused:
            nodes = [x]
            for i in range(1, NUM_NODES):
                nodes.append(
                    sum(self._edge_plain(k, nodes[j], weights[k]) for k, (ii, j) in enumerate(EDGE_PAIRS) if ii == i)
                )
            return nodes[-1]
        partial: dict[int, torch.Tensor] = {}
        nodes = [x]
        for src in range(NUM_NODES - 1):
            ks = self._out_edges[src]
            for k, out in zip(ks, self._mixed_fused(nodes[src], ks, weights)):
                tgt = EDGE_PAIRS[k][0]
                partial[tgt] = out if tgt not in partial else partial[tgt] + out
            nodes.append(partial.pop(src + 1))
        return nodes[-1]

    def forward_pcdarts(self, x: torch.Tensor, weights: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """PC-DARTS cell: each edge mixes only its input's first C/K channels, the rest bypass.

        Edge output = shuffle_K(cat[mixed(x[:, :C/K]), x[:, C/K:]]); node = sum_j beta_j * edge_j, with
        ``betas`` already normalised over each node's incoming edges. ``plain`` does exactly that per
        edge; ``fused`` uses linearity: the beta is folded into the op weights, mixed parts and bypasses
        are summed per node first, and the node is shuffled once (same numbers, fewer copies).
        """
        cp = self.c // self.k
        nodes = [x]
        if not self.fused:
            for i in range(1, NUM_NODES):
                total = None
                for k, (ii, j) in enumerate(EDGE_PAIRS):
                    if ii != i:
                        continue
                    h = nodes[j]
                    edge = channel_shuffle(
                        torch.cat([self._edge_plain(k, h[:, :cp], weights[k]), h[:, cp:]], 1), self.k
                    )
                    total = betas[k] * edge if total is None else total + betas[k] * edge
                nodes.append(total)
            return nodes[-1]
        eff = weights * betas[:, None]
        proc: dict[int, torch.Tensor] = {}
        byp: dict[int, torch.Tensor] = {}
        for src in range(NUM_NODES - 1):
            h = nodes[src]
            ks = self._out_edges[src]
            rest = h[:, cp:]
            for k, yk in zip(ks, self._mixed_fused(h[:, :cp], ks, eff)):
                tgt = EDGE_PAIRS[k][0]
                proc[tgt] = yk if tgt not in proc else proc[tgt] + yk
                bk = betas[k] * rest
                byp[tgt] = bk if tgt not in byp else byp[tgt] + bk
            nodes.append(channel_shuffle(torch.cat([proc.pop(src + 1), byp.pop(src + 1)], 1), self.k))
        return nodes[-1]

    def candidate(self, k: int, o: int, x: torch.Tensor) -> torch.Tensor:
        """Op ``o`` of edge ``k`` on ``x``, alone: the only op GDAS computes on a sampled edge."""
        if o == _I_NONE:
            return x.mul(0.0)
        if o == _I_SKIP:
            return x
        if o == _I_POOL:
            return avg_pool_3x3_exclude_pad(x)
        e = self.edges[k]
        return _bn((e.conv1 if o == _I_C1 else e.conv3)(F.relu(x)))

    def forward_gdas(self, x: torch.Tensor, hard: torch.Tensor, index: list[int]) -> torch.Tensor:
        """GDAS on NB201 (as the benchmark's GDAS code): edge = h_o * op_o(x) + sum_{j != o} h_j.

        ``hard`` holds straight-through one-hot weights (value one-hot, gradient of the Gumbel softmax),
        ``index`` the sampled op per edge. The other ops are never computed; their h_j are zero-valued
        scalars kept in the sum so their alphas still get the straight-through gradient.
        """
        nodes = [x]
        for i in range(1, NUM_NODES):
            total = None
            for k, (ii, j) in enumerate(EDGE_PAIRS):
                if ii != i:
                    continue
                o = index[k]
                hk = hard[k]
                out = hk[o] * self.candidate(k, o, nodes[j]) + torch.cat([hk[:o], hk[o + 1 :]]).sum()
                total = out if total is None else total + out
            nodes.append(total)
        return nodes[-1]


def gumbel_hard_sample(alpha: torch.Tensor, tau: float) -> tuple[torch.Tensor, list[int]]:
    """GDAS's per-forward sample: straight-through one-hot weights and the argmax index, per row of ``alpha``.

    logits = (log_softmax(alpha) + g) / tau with g = -log(E), E ~ Exp(1); h = onehot(argmax) - sg(p) + p.
    Resampled while the draw gives inf/NaN, as the reference does.
    """
    logp = F.log_softmax(alpha, dim=-1)
    while True:
        gumbels = -torch.empty_like(alpha).exponential_().log()
        probs = F.softmax((logp + gumbels) / tau, dim=-1)
        if torch.isinf(gumbels).any() or not torch.isfinite(probs).all():
            continue
        index = probs.argmax(dim=-1, keepdim=True)
        one_hot = torch.zeros_like(probs).scatter_(-1, index, 1.0)
        return one_hot - probs.detach() + probs, index.flatten().tolist()


class NB201SuperNet(Skeleton):
    """Weight-sharing NB201 network; one alpha matrix (6 edges x 5 ops) shared by all cells.

    ``mode`` picks the search relaxation: ``darts`` (softmax-mixed edges), ``gdas`` (one hard Gumbel
    sample per edge per forward, shared by all cells; temperature from :meth:`set_tau`) or ``pcdarts``
    (ops on C/``partial_k`` channels, channel shuffle, and edge-normalisation betas, as NASLib's PC-DARTS
    on NB201). Every mode derives the genotype as argmax alpha per edge.
    """

    def __init__(
        self, c: int = 16, n: int = 5, num_classes: int = 10, in_ch: int = 3, fused: bool = True,
        mode: str = "darts", partial_k: int = 4,
    ):  # fmt: skip
        if mode not in SUPERNET_MODES:
            raise ValueError(f"unknown NB201 supernet mode {mode!r}; choose one of {', '.join(SUPERNET_MODES)}")
        k = int(partial_k) if mode == "pcdarts" else 1
        if k < 1 or c % k:
            raise ValueError(f"partial_k={partial_k} must be >= 1 and divide the channels C={c}")
        super().__init__(lambda cc: SearchCell(cc, fused=fused, partial_k=k), c, n, num_classes, in_ch)
        self.mode = mode
        self.partial_k = k
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)))
        if mode == "pcdarts":
            self.beta = nn.Parameter(1e-3 * torch.randn(len(EDGES)))
        self.tau = 10.0
        self.last_sample: list[int] = []  # gdas: the op index sampled per edge by the latest forward

    # The strategies see alphas under one cell-type name so spaces with several cell types fit too.
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha, self.beta] if self.mode == "pcdarts" else [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name not in ("alpha", "beta")]

    def arch_weights(self) -> dict[str, torch.Tensor]:
        return {"normal": F.softmax(self.alpha, dim=-1)}

    def edge_weights(self) -> dict[str, torch.Tensor]:
        """PC-DARTS edge normalisation: softmax of beta over each node's incoming edges, shape (6,)."""
        if self.mode != "pcdarts":
            raise ValueError(f"edge weights (betas) exist only in pcdarts mode, not {self.mode!r}")
        return {"normal": torch.cat([F.softmax(self.beta[s], dim=-1) for s in NODE_EDGE_SLICES])}

    def set_tau(self, tau: float) -> None:
        """Gumbel-softmax temperature of the GDAS samples (the strategy anneals it per epoch)."""
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = float(tau)

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "darts":
            if weights is None:
                weights = F.softmax(self.alpha, dim=-1)
            out = self.global_pooling(self.features(x, weights)).flatten(1)
            return self.classifier(out)
        if self.mode == "pcdarts":
            w = F.softmax(self.alpha, dim=-1) if weights is None else weights
            b = self.edge_weights()["normal"]
            run = lambda cell, h: cell.forward_pcdarts(h, w, b)  # noqa: E731
        else:
            hard, index = gumbel_hard_sample(self.alpha, self.tau)  # one sample shared by all cells
            self.last_sample = index
            run = lambda cell, h: cell.forward_gdas(h, hard, index)  # noqa: E731
        h = self.stem(x)
        for cell in self.cells:
            h = run(cell, h) if isinstance(cell, SearchCell) else cell(h)
        return self.classifier(self.global_pooling(self.lastact(h)).flatten(1))

    def genotype(self) -> NB201Genotype:
        """Argmax op per edge over all five ops, `none` included, as the benchmark's DARTS and GDAS code derive it.

        PC-DARTS keeps every NB201 edge, so betas cannot change the choice (argmax is unaffected by them).
        """
        idx = self.alpha.detach().argmax(dim=-1).tolist()
        return NB201Genotype(tuple(OPS[i] for i in idx))
