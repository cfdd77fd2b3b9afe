"""Training-free proxies of TE-NAS (Chen et al., ICLR 2021): NTK condition number and linear regions.

Both are computed on small "proxy" versions of the NB201 supernet, as the reference code does
(``VITA-Group/TENAS``): the NTK net is the NB201 skeleton with C=3, N=1 (stem kept); the region net is
one cell with C=1 and no stem, fed 3x3 crops of one channel. Mixed edges weight their ops by the given
per-edge weights (softmax of alpha) and skip every op whose weight is <= 0.01, so ops pruned with
alpha = -1000 are not computed at all and their parameters drop out of the NTK. The convs' BNs are
affine (``affine=True`` in the reference's proxy config), so their gammas are NTK weights too.

Initialisation (``init``): ``"kaiming"`` (the default) is what the paper intends: Kaiming-normal
weights, fan-out for the NTK net and fan-in for the region net, BN gamma 1 and beta 0, biases 0.
``"pytorch-default"`` is what the reference effectively runs: its init helper is handed
``kaiming_normal_fanout``/``_fanin`` but only recognises ``kaiming_norm_*``, so weights keep PyTorch's
default init (BN 1/0 and biases 0 are still set).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_core import ntk_conv
from nas_core.spaces.darts_genotype import DartsGenotype
from nas_core.spaces.nb201_arch import (
    EDGE_PAIRS,
    NUM_NODES,
    OPS,
    NB201Genotype,
    SearchCell,
    Skeleton,
)

INITS: tuple[str, ...] = ("kaiming", "pytorch-default")
#: ops whose weight is at or below this are skipped, as the reference's mixed op does
ACTIVE_THRESHOLD = 0.01
#: what a NaN condition number is replaced with (the reference's ``np.nan_to_num(..., nan=1e5)``)
NAN_KAPPA = 1e5

_I_SKIP, _I_C1, _I_C3, _I_POOL = (
    OPS.index(o) for o in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
)


# --------------------------------------------------------------------------------------------------
# proxy networks


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


def init_proxy(model: nn.Module, init: str, mode: str) -> None:
    """Initialise in place; ``mode`` is ``fan_out`` (NTK net) or ``fan_in`` (region net). See module doc."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            else:
                m.reset_parameters()
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def genotype_weights(genotype: NB201Genotype) -> torch.Tensor:
    """One-hot (edges x ops) weights of a fixed architecture: the supernet with every other op pruned."""
    w = torch.zeros(len(EDGE_PAIRS), len(OPS))
    for k, op in enumerate(genotype.ops):
        w[k, OPS.index(op)] = 1.0
    return w


# --------------------------------------------------------------------------------------------------
# NTK condition number


def _kappa(grads: torch.Tensor) -> float:
    theta = grads @ grads.T
    ev = torch.linalg.eigvalsh(theta)
    k = (ev[-1] / ev[0]).item()
    if math.isnan(k):
        return NAN_KAPPA
    if math.isinf(k):  # np.nan_to_num maps +-inf to the largest float, as the reference gets
        return math.copysign(torch.finfo(torch.float64).max, k)
    return k


def batched_ntk_rows(s: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """G (n x P): the n backward passes of ``s`` (one output per sample) as one vectorised pass, cotangents
    the rows of an identity. CPU only: on CUDA, cuDNN's convolution and batch-norm backward have no batching
    rule, and with cuDNN off the batched pass took 5.4 s against 0.85 s for :func:`per_sample_ntk_rows` (H100,
    batch 72 of 3x32x32, C=3 N=1; ``bench/bench_tenas.py --device cuda``)."""
    n = s.shape[0]
    eye = torch.eye(n, dtype=s.dtype, device=s.device)
    grads = torch.autograd.grad(s, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
    return torch.cat([g.reshape(n, -1) for g in grads if g is not None], dim=1)


def per_sample_ntk_rows(s: torch.Tensor, params: Sequence[torch.Tensor], workers: int = 1) -> torch.Tensor:
    """G (n x P), one backward pass of ``s[i]`` per sample, asking autograd for ``params``' gradients only.

    On the CPU the passes (independent given the forward graph) run on ``workers`` threads, one core each;
    elsewhere one after the other.
    """
    n = s.shape[0]
    rows: list[torch.Tensor | None] = [None] * n

    def backward(indices: Sequence[int], single_thread: bool) -> None:
        if single_thread:
            torch.set_num_threads(1)  # this worker thread's own setting: one core per worker
        for i in indices:
            g = torch.autograd.grad(s[i], params, retain_graph=True, allow_unused=True)
            rows[i] = torch.cat([t.reshape(-1) for t in g if t is not None])

    workers = min(n, workers)
    if workers <= 1 or s.device.type != "cpu":  # a GPU runs the passes one after the other anyway
        backward(range(n), single_thread=False)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(backward, range(k, n, workers), True) for k in range(workers)]:
                f.result()
    return torch.stack(rows)  # type: ignore[arg-type]


def ntk_condition_number(model: nn.Module, x: torch.Tensor, *args: torch.Tensor, workers: int = 0) -> float:
    """kappa = lambda_max / lambda_min of Theta = G G^T, G[n] = d(sum of sample n's logits)/d(weights).

    As the reference: train mode (BN on batch statistics, so one forward of the whole batch; samples
    are coupled and per-sample forwards would change the numbers), gradients of the parameters whose
    name contains "weight" that take part in the forward. Faster than the reference loop because it
    asks autograd for just those gradients per sample, accumulating nothing in ``.grad``, and because
    the per-sample backward passes (independent given the forward graph) run on ``workers`` threads at
    once, one core each; ``0`` = torch's intra-op thread count. Tiny proxy nets keep the cores busier
    this way than with intra-op threads inside each small kernel (on 2 cores, batch 72 of 3x32x32: 4.1 s
    against 5.4 s; bench/bench_tenas.py --big). On a GPU the passes run one after the other. Extra positional
    ``args`` go to ``model`` (the proxy nets take the op weights). NaN -> 1e5.
    """
    model.train()
    params = [p for name, p in model.named_parameters() if "weight" in name and p.requires_grad]
    s = model(x, *args).sum(dim=1)
    return _kappa(per_sample_ntk_rows(s, params, workers if workers > 0 else torch.get_num_threads()))


def ntk_condition_number_reference(model: nn.Module, x: torch.Tensor, *args: torch.Tensor) -> float:
    """The reference's plain loop (``get_ntk_n``): per sample ``backward`` into ``.grad``, then collect.

    Kept to check :func:`ntk_condition_number` against and as the bench's baseline.
    """
    model.train()
    model.zero_grad()
    logit = model(x, *args)
    grads = []
    for i in range(len(x)):
        logit[i : i + 1].backward(torch.ones_like(logit[i : i + 1]), retain_graph=True)
        grad = [
            w.grad.view(-1).detach() for name, w in model.named_parameters() if "weight" in name and w.grad is not None
        ]
        grads.append(torch.cat(grad, -1))
        model.zero_grad()
    return _kappa(torch.stack(grads, 0))


# --------------------------------------------------------------------------------------------------
# linear regions


def activation_patterns(model: nn.Module, batches: Sequence[torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """Binary ReLU patterns, one row per sample: all ``nn.ReLU`` outputs with 4-D input, flattened.

    Batches are forwarded one at a time (train-mode BN uses each batch's statistics, as the reference).
    A network without any ReLU gives zero-width rows (one region: the network is linear).
    """
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if inputs[0].dim() == 4:
            captured.append((output > 0).flatten(1))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    rows = []
    try:
        model.train()
        with torch.no_grad():
            for xb in batches:
                captured.clear()
                model(xb, *args)
                rows.append(
                    torch.cat(captured, 1) if captured else torch.zeros(len(xb), 0, dtype=torch.bool, device=xb.device)
                )
    finally:
        for h in handles:
            h.remove()
    return torch.cat(rows, 0)


def count_distinct_rows(patterns: torch.Tensor) -> int:
    """Number of distinct binary rows, exactly."""
    if patterns.shape[0] == 0:
        return 0
    if patterns.shape[1] == 0:
        return 1
    return int(torch.unique(patterns.to(torch.uint8), dim=0).shape[0])


def count_regions_reference(patterns: torch.Tensor) -> float:
    """The reference's count: sum over samples of 1/#samples sharing its pattern (Hamming products)."""
    a = patterns.to(torch.float64)
    res = a @ (1 - a).T
    res = res + res.T
    same = (res == 0).to(torch.float64).sum(1)
    return float((1.0 / same).sum())


def linear_regions(model: nn.Module, batches: Sequence[torch.Tensor], *args: torch.Tensor) -> int:
    """Distinct ReLU activation patterns over all samples of ``batches``: the reference's region count."""
    return count_distinct_rows(activation_patterns(model, batches, *args))


def region_inputs(x_train: torch.Tensor, samples: int, batches: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``batches`` batches of ``samples`` random 3x3 crops of one random channel of random images: (n,1,3,3)."""
    n_img, ch, h, w = x_train.shape
    if h < 3 or w < 3:
        raise ValueError(f"linear regions need images of at least 3x3, got {h}x{w}")
    total = samples * batches
    draw = [torch.randint(k, (total,), generator=generator) for k in (n_img, ch, h - 2, w - 2)]  # the CPU stream
    idx, c, top, left = (t.to(x_train.device) for t in draw)
    ar = torch.arange(3, device=x_train.device)
    crops = x_train[
        idx[:, None, None],
        c[:, None, None],
        top[:, None, None] + ar[None, :, None],
        left[:, None, None] + ar[None, None, :],
    ]
    return list(crops.unsqueeze(1).float().split(samples))


# --------------------------------------------------------------------------------------------------
# evaluating many op-weight settings on the same networks, batches and inits


#: spaces the proxies are built for, and the reference's NTK batch on each (NB201: 72; DARTS/CIFAR-10: 14)
PROXY_SPACES: tuple[str, ...] = ("nb201", "darts")
DEFAULT_NTK_BATCH: dict[str, int] = {"nb201": 72, "darts": 14}


@dataclass(frozen=True)
class _ProxySpace:
    """How one space's proxies are built and called: the two nets, the two measures, the weight arguments."""

    build: Callable[[int, int], tuple[nn.Module, nn.Module]]  # (num_classes, in_ch) -> (ntk net, region net)
    ntk: Callable[..., float]
    ntk_reference: Callable[..., float]
    regions: Callable[..., int]
    args: Callable[[Any], tuple[torch.Tensor, ...]]  # one weight setting -> the nets' extra forward arguments


def _nb201_args(weights: Any) -> tuple[torch.Tensor, ...]:
    if not isinstance(weights, torch.Tensor) or tuple(weights.shape) != (len(EDGE_PAIRS), len(OPS)):
        got = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"NB201 op weights must be a {len(EDGE_PAIRS)}x{len(OPS)} tensor, got {got}")
    return (weights,)


def proxy_space(space: str) -> _ProxySpace:
    """The proxy networks and measures of ``space`` (the DARTS ones live in :mod:`nas_core.proxies_darts`)."""
    if space == "nb201":
        return _ProxySpace(
            build=lambda classes, in_ch: (NTKNet(classes, in_ch), RegionNet()),
            ntk=ntk_condition_number,
            ntk_reference=ntk_condition_number_reference,
            regions=linear_regions,
            args=_nb201_args,
        )
    if space == "darts":
        from nas_core import proxies_darts as pdarts  # imports this module: loaded on first use

        return _ProxySpace(
            build=lambda classes, in_ch: (pdarts.ntk_net(classes, in_ch), pdarts.region_net(classes)),
            ntk=pdarts.ntk_condition_number_batched,
            ntk_reference=ntk_condition_number_reference,
            regions=pdarts.linear_regions_grouped,
            args=pdarts.weight_args,
        )
    raise ValueError(f"the TE-NAS proxies are built for the spaces {', '.join(PROXY_SPACES)}, not {space!r}")


@dataclass
class ProxyEvaluator:
    """Scores op-weight settings with both proxies; one repeat = one init and one batch.

    ``evaluate(weights_list, seed)`` initialises both proxy nets and draws the NTK batch from ``seed``,
    then scores every weight setting on those same networks and inputs, so the deltas between a
    supernet and its candidates compare like with like (as the reference copies the weights across).
    The region inputs are drawn once (the reference reseeds its loader with the same seed each time).

    A weight setting is, on ``space="nb201"``, one (6 x 5) matrix; on ``space="darts"``, the (14 x 8)
    matrices of both cell types as ``{"normal": w, "reduce": w}`` or a ``(normal, reduce)`` pair (an
    all-zero row: the edge is removed). ``ntk_batch=None`` takes the reference's batch for the space.

    ``workers`` > 1 scores the settings on that many spawned single-threaded processes (see
    :mod:`nas_core.proxy_pool`), with the same numbers as here; call :meth:`close` (or use ``with``) to
    stop them.
    """

    x_train: torch.Tensor
    num_classes: int
    ntk_batch: int | None = None
    region_samples: int = 1000
    region_batches: int = 3
    init: str = "kaiming"
    seed: int = 0
    fast: bool = True
    space: str = "nb201"
    workers: int = 1
    #: the region-count inputs; None draws them from ``x_train`` (a worker replica is handed the parent's)
    region_x: list[torch.Tensor] | None = None
    #: where the nets run (``x_train`` may live anywhere); inits and draws come from CPU streams, so a setting
    #: is scored on the same weights and inputs on any device. Not the CPU: ``workers`` is taken as 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._space = proxy_space(self.space)
        if self.ntk_batch is None:
            self.ntk_batch = DEFAULT_NTK_BATCH[self.space]
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        if self.ntk_batch < 2:
            raise ValueError("ntk_batch must be >= 2")
        if self.region_samples < 1:
            raise ValueError("region_samples must be >= 1")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self.device = str(torch.device(self.device))  # "cpu", "cuda:0", ...
        if self.device != "cpu":
            self.workers = 1  # processes would share one GPU to no gain
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.ntk_net, self.region_net = self._space.build(self.num_classes, int(self.x_train.shape[1]))
        self.ntk_net.to(self.device)
        self.region_net.to(self.device)
        if self.region_x is None:
            gen = torch.Generator().manual_seed(self.seed + 7919)
            self.region_x = region_inputs(self.x_train, self.region_samples, self.region_batches, gen)
        self.region_x = [x.to(self.device) for x in self.region_x]
        self._pool: Any = None

    def settings(self) -> dict[str, Any]:
        """What the scores depend on besides the architecture, stored beside them so like is compared with like."""
        n = min(int(self.ntk_batch), len(self.x_train))  # type: ignore[arg-type]
        out = {"ntk_batch": n, "region_samples": self.region_samples, "init": self.init, "seed": self.seed}
        if self.device != "cpu":  # same inits and inputs, other float rounding
            out["device"] = torch.device(self.device).type
        return out

    def evaluate(self, weights_list: Sequence[Any], seed: int, check=None) -> list[tuple[float, int]]:
        """(kappa, regions) per weight setting, for one repeat seeded by ``seed``; ``check()`` between items."""
        return self.evaluate_repeats(weights_list, [seed], check)[0]

    def evaluate_repeats(
        self, weights_list: Sequence[Any], seeds: Sequence[int], check=None, done: Callable[[], None] | None = None
    ) -> list[list[tuple[float, int]]]:
        """Per seed (one repeat each), (kappa, regions) per weight setting; ``done()`` after each score.

        With ``workers`` > 1 every (repeat, setting) pair is a task on the process pool, so the repeats
        of a round keep all workers busy to its end; ``check()`` is polled while they run.
        """
        args = [self._space.args(w) for w in weights_list]  # bad settings fail before any work
        if self.workers > 1 and len(args) * len(seeds) > 1:
            if self._pool is None:
                from nas_core.proxy_pool import ProxyPool  # imports this module

                self._pool = ProxyPool(self, self.workers)
            return self._pool.run(args, [(s, self.batch(s)) for s in seeds], check, done)
        out = []
        for seed in seeds:
            xb = self.reinit(seed)
            row = []
            for a in args:
                if check is not None:
                    check()
                row.append(self.score(xb, a))
                if done is not None:
                    done()
            out.append(row)
        return out

    def batch(self, seed: int) -> torch.Tensor:
        """The NTK batch of the repeat seeded by ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        n = min(int(self.ntk_batch), len(self.x_train))  # type: ignore[arg-type]
        idx = torch.randperm(len(self.x_train), generator=gen)[:n].to(self.x_train.device)
        return self.x_train[idx].float().to(self.device)

    def reinit(self, seed: int) -> torch.Tensor:
        """Initialise both nets for the repeat seeded by ``seed``; returns its NTK batch."""
        self.init_nets(seed)
        return self.batch(seed)

    def init_nets(self, seed: int) -> None:
        """Draw the nets' weights on the CPU (the same numbers on any device), then put them on the device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for net, mode in ((self.ntk_net, "fan_out"), (self.region_net, "fan_in")):
                init_proxy(net.cpu(), self.init, mode)
                net.to(self.device)

    def score(self, xb: torch.Tensor, args: tuple[torch.Tensor, ...]) -> tuple[float, int]:
        """(kappa, regions) of one weight setting (its forward arguments) on the nets as initialised."""
        ntk = self._space.ntk if self.fast else self._space.ntk_reference
        args = tuple(a.to(self.device) for a in args)
        return ntk(self.ntk_net, xb, *args), self._space.regions(self.region_net, self.region_x, *args)

    def close(self) -> None:
        """Stop the worker processes, if any (a running task is abandoned)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> ProxyEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def genotype_proxies(
    genotype: NB201Genotype | DartsGenotype,
    x_train: torch.Tensor,
    num_classes: int,
    *,
    repeats: int = 3,
    ntk_batch: int | None = None,
    region_samples: int = 1000,
    init: str = "kaiming",
    seed: int = 0,
    check=None,
    workers: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Both proxies of one stand-alone architecture (NB201 or DARTS), averaged over ``repeats`` inits and batches.

    The architecture is its space's proxy supernet with every other op (and, on DARTS, every other edge)
    pruned. The seeds per repeat are those TE-NAS's first round uses, so an architecture scores the same
    here as when a search reaches it with the same settings. ``ntk_batch=None``: the reference's batch for
    the space (72 on NB201, 14 on DARTS). ``workers`` > 1 scores the repeats on that many processes (on the
    CPU); ``device`` is where the proxy nets run.
    Returns ``ntk_cond``, ``linear_regions``, the per-repeat values and the settings.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    if isinstance(genotype, NB201Genotype):
        space, w = "nb201", genotype_weights(genotype)
    elif isinstance(genotype, DartsGenotype):
        from nas_core.proxies_darts import genotype_weights as darts_genotype_weights

        space, w = "darts", darts_genotype_weights(genotype)
    else:
        raise ValueError(f"proxies need an NB201 or DARTS genotype, got {type(genotype).__name__}")
    seeds = [seed * 100_003 + r for r in range(repeats)]
    with ProxyEvaluator(
        x_train, num_classes, ntk_batch=ntk_batch, region_samples=region_samples, init=init, seed=seed, space=space,
        workers=min(workers, repeats), device=device,
    ) as ev:  # fmt: skip
        per_repeat = [row[0] for row in ev.evaluate_repeats([w], seeds, check=check)]
    kappas, regions = [float(k) for k, _ in per_repeat], [float(r) for _, r in per_repeat]
    return {
        "ntk_cond": sum(kappas) / repeats,
        "linear_regions": sum(regions) / repeats,
        "ntk_cond_repeats": kappas,
        "linear_regions_repeats": regions,
        "settings": {**ev.settings(), "repeats": repeats},
    }
