"""TE-NAS on the DARTS space: the proxy networks, their fused path against the plain one, the edge stage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nas_core.config import ExperimentConfig
from nas_core.data import load_dataset
from nas_core.errors import ConfigError, GenotypeError
from nas_core.pipeline import run_experiment
from nas_core.proxies import (
    ProxyEvaluator,
    genotype_proxies,
    init_proxy,
    linear_regions,
    ntk_condition_number_reference,
    region_inputs,
)
from nas_core.proxies.darts import (
    DartsProxyNet,
    genotype_weights,
    linear_regions_grouped,
    masked_softmax,
    ntk_condition_number_batched,
    ntk_net,
    region_net,
)
from nas_core.reporting import MemoryReporter
from nas_core.spaces import get_space
from nas_core.spaces.darts_genotype import EDGES, NODE_SLICES, OPS, PRESETS, DartsGenotype
from nas_core.strategies import STRATEGIES
from nas_core.strategies.tenas import PRUNED, active_mask, choose_edges, planned_evaluations

SEP3 = OPS.index("sep_conv_3x3")


pytestmark = pytest.mark.usefixtures("one_thread")


def _alphas(seed: int) -> torch.Tensor:
    """Supernet alphas with `none` gone, ~40% of the other ops pruned and edge 3 removed altogether."""
    g = torch.Generator().manual_seed(seed)
    a = torch.zeros(len(EDGES), len(OPS))
    a[:, 0] = PRUNED
    a[torch.rand(a.shape, generator=g) < 0.4] = PRUNED
    a[1, SEP3] = 0.0  # keep one separable conv on edge 1 (the tests prune it by hand)
    a[3, :] = PRUNED
    return a


def _nets(seed: int = 0) -> tuple[DartsProxyNet, DartsProxyNet]:
    torch.manual_seed(seed)
    ntk, reg = ntk_net(10, 1), region_net(10)
    init_proxy(ntk, "kaiming", "fan_out")
    init_proxy(reg, "kaiming", "fan_in")
    return ntk, reg


def test_proxy_nets_are_built_as_the_reference() -> None:
    ntk, reg = _nets()
    # depth 2 of the N=1 layout: a normal cell (C=1) then a reduction cell (C=2); stem multiplier 1
    assert [c.reduction for c in ntk.cells] == [False, True] and [c.c for c in ntk.cells] == [1, 2]
    assert ntk.stem is not None and ntk.stem[0].out_channels == 1 and reg.stem is None
    assert ntk.classifier.in_features == 8 and isinstance(ntk.lastact[1], torch.nn.ReLU)
    w = masked_softmax(_alphas(0))
    assert ntk(torch.randn(5, 1, 8, 8), w, w).shape == (5, 10)
    assert reg(torch.randn(7, 1, 3, 3), w, w).shape == (7, 10)  # the region net takes one-channel 3x3 crops


@pytest.mark.parametrize("fused", [True, False])
def test_pruned_ops_and_removed_edges_get_no_gradient(fused: bool) -> None:
    ntk, _ = _nets(1)
    ntk.fused = fused
    wn, wr = masked_softmax(_alphas(1)), masked_softmax(_alphas(2))
    wn_pruned = wn.clone()
    wn_pruned[1, SEP3] = 0.0  # sep_conv_3x3 of the normal cell's edge 1 pruned (weight <= 0.01: skipped)
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    normal = ntk.cells[0]
    sep_params = list(normal.edges[1][SEP3].parameters())
    removed = [p for op in normal.edges[3] for p in op.parameters()]
    grads = torch.autograd.grad(ntk(x, wn, wr).sum(), sep_params + removed, allow_unused=True)
    assert all(g is not None for g in grads[: len(sep_params)])  # active: takes part
    assert all(g is None for g in grads[len(sep_params) :])  # the removed edge computes nothing
    grads = torch.autograd.grad(ntk(x, wn_pruned, wr).sum(), sep_params, allow_unused=True)
    assert all(g is None for g in grads)


def test_a_removed_edge_contributes_zero() -> None:
    a = _alphas(3)
    a[0, :] = a[1, :] = PRUNED  # both inputs of node 2
    w = masked_softmax(a)
    assert torch.equal(w[0], torch.zeros(len(OPS))) and not bool(active_mask(a)[0].any())
    ntk, _ = _nets(2)
    s = torch.randn(4, 1, 8, 8)
    for fused in (True, False):
        ntk.fused = fused
        out = ntk.cells[0](s, s, w)
        assert out.shape == (4, 4, 8, 8)
        assert torch.equal(out[:, 0], torch.zeros(4, 8, 8))  # node 2 (the first concatenated node) is 0
        assert out[:, 1:].abs().sum() > 0


def test_fused_path_equals_the_reference_style_path() -> None:
    data = load_dataset("digits", 0)
    ntk, reg = _nets(4)
    x = data.x_train[:8].float()
    batches = region_inputs(data.x_train, 40, 3, torch.Generator().manual_seed(0))
    for wn, wr in [(masked_softmax(_alphas(5)), masked_softmax(_alphas(6))), (masked_softmax(_alphas(7)),) * 2]:
        out = {}
        for fused in (True, False):
            ntk.fused = reg.fused = fused
            out[fused] = (
                ntk(x, wn, wr),
                ntk_condition_number_reference(ntk, x, wn, wr),
                linear_regions(reg, batches, wn, wr),
            )
        assert torch.allclose(out[True][0], out[False][0], atol=1e-5)
        assert out[True][1] == pytest.approx(out[False][1], rel=1e-3)
        assert out[True][2] == out[False][2]
        # the batched NTK and the one-forward region count: the same numbers as the plain formulations
        assert ntk_condition_number_batched(ntk, x, wn, wr) == pytest.approx(out[False][1], rel=1e-3)
        assert linear_regions_grouped(reg, batches, wn, wr) == out[False][2]


def test_evaluator_and_genotype_proxies_on_darts() -> None:
    data = load_dataset("digits", 0)
    ev = ProxyEvaluator(data.x_train, data.num_classes, region_samples=20, seed=1, space="darts")
    assert ev.settings()["ntk_batch"] == 14  # the reference's DARTS/CIFAR-10 batch by default
    w = {"normal": masked_softmax(_alphas(8)), "reduce": masked_softmax(_alphas(9))}
    a = ev.evaluate([w, (w["normal"], w["reduce"])], seed=3)
    assert a[0] == a[1] and math.isfinite(a[0][0]) and a[0][0] > 1 and a[0][1] >= 1
    with ProxyEvaluator(data.x_train, data.num_classes, region_samples=20, seed=1, space="darts", workers=2) as pooled:
        assert pooled.evaluate_repeats([w, (w["normal"], w["reduce"])], [3]) == [a]  # the same on worker processes
    with pytest.raises(ValueError, match="reduce"):
        ev.evaluate([{"normal": w["normal"]}], seed=3)
    with pytest.raises(ValueError, match="14x8"):
        ev.evaluate([(w["normal"], w["reduce"][:5])], seed=3)
    g = PRESETS["DARTS_V2"]
    gw = genotype_weights(g)
    assert int(gw["normal"].sum()) == 8 and int((gw["normal"].sum(1) > 0).sum()) == 8  # 8 distinct edges
    out = genotype_proxies(g, data.x_train, data.num_classes, repeats=2, ntk_batch=6, region_samples=20)
    assert len(out["ntk_cond_repeats"]) == 2 and math.isfinite(out["ntk_cond"]) and out["linear_regions"] >= 1
    odd = DartsGenotype(g.normal, (2, 3, 4), g.reduce, g.reduce_concat)
    with pytest.raises(GenotypeError, match="concat"):
        genotype_weights(odd)


def test_edge_stage_choice_and_plan() -> None:
    d_kappa = {((0, 2), 4): 0.5, ((0, 3), 1): 0.1, ((0, 4), 6): 0.3}
    d_regions = {((0, 2), 4): 0.2, ((0, 3), 1): 0.0, ((0, 4), 6): -0.1}
    # kappa ranks (desc): e2 0, e4 1, e3 2; region ranks (asc): e4 0, e3 1, e2 2 -> sums e2 2, e4 1, e3 3
    assert choose_edges(d_kappa, d_regions) == [(((0, 4), 6), 1, 0)]
    assert choose_edges(d_kappa, d_regions, keep=3) == []
    # 28 edges of 7 ops, 6 pruned per round: one round; then 2 x (3 + 4 + 5) edge candidates in 6 groups
    assert planned_evaluations([7] * 28, 6, [2, 3, 4, 5] * 2) == (1 + 196) + 2 * ((1 + 3) + (1 + 4) + (1 + 5)) + 1
    assert planned_evaluations([7] * 28, 3) == (1 + 196) + (1 + 112) + 1


def test_registered_for_both_spaces_with_space_defaults() -> None:
    s = STRATEGIES["tenas"]
    assert s.spaces == ("nb201", "darts")
    defaults = {p.name: p.default for p in s.params}
    assert defaults["ntk_batch"] == 0 and defaults["prune_per_round"] == 0  # 0 = the space's reference value
    with pytest.raises(ConfigError, match="ntk_batch"):
        ExperimentConfig(strategy="tenas", space="darts", dataset="digits", params={"ntk_batch": 1}).validated()


@pytest.mark.slow  # ~230 proxy evaluations (28 edges x 7 ops, then the edge stage): 35-55 s on 2 busy cores
def test_tiny_darts_search_end_to_end(tmp_path: Path) -> None:
    params = {"ntk_batch": 4, "repeats": 1, "region_samples": 8, "prune_per_round": 6}
    cfg = ExperimentConfig(
        strategy="tenas", space="darts", dataset="digits", final_epochs=0, threads=1, final_channels=2,
        cells_per_stage=1, params=params,
    )  # fmt: skip
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    g = get_space("darts").parse(res.genotype)
    assert rep.genotypes[-1][2] == res.genotype
    last = max(r[0] for r in rep.alpha_rows)
    alive: dict[tuple[str, str], list[str]] = {}
    for step, _, cell, edge, op, w in rep.alpha_rows:
        if step == last and w > 0:
            alive.setdefault((cell, edge), []).append(op)
    for cell in ("normal", "reduce"):
        pairs, _ = g.cell(cell)
        for i, (lo, hi) in enumerate(NODE_SLICES):
            node = pairs[2 * i : 2 * i + 2]
            assert node[0][1] != node[1][1]  # two distinct incoming edges
            kept = [e for e in EDGES[lo:hi] if (cell, e) in alive]
            assert len(kept) == 2 and all(len(alive[(cell, e)]) == 1 for e in kept)  # one op on each
            assert sorted(f"{i + 2}<-{j}" for _, j in node) == sorted(kept)
            assert sorted(op for op, _ in node) == sorted(alive[(cell, e)][0] for e in kept)
    events = [d for kind, _, d in rep.events if kind == "prune"]
    ops_stage = [d for d in events if d["stage"] == "ops"]
    edge_stage = [d for d in events if d["stage"] == "edges"]
    assert len(ops_stage) == 2 * 14 * 6  # 7 ops per edge (none removed up front), 6 pruned in one round
    assert {d["cell"] for d in ops_stage} == {"normal", "reduce"}
    # per cell: nodes 3, 4, 5 drop 1, 2 and 3 of their 3, 4, 5 incoming edges; node 2 keeps both
    expected = sorted((c, n) for c in ("normal", "reduce") for n, k in (("3", 1), ("4", 2), ("5", 3)) for _ in range(k))
    assert sorted((d["cell"], d["edge"].split("<-")[0]) for d in edge_stage) == expected
    for d in events:
        assert d["rank_sum"] == d["kappa_rank"] + d["regions_rank"] and math.isfinite(d["d_kappa"])
        assert (d["cell"], d["edge"]) not in alive or d["stage"] == "ops"
    series: dict[str, list[tuple[int, float]]] = {}
    for step, _, name, value in rep.series_points:
        series.setdefault(name, []).append((step, value))
    assert [s for s, _ in series["kappa"]] == list(range(last + 1)) and last == 1 + 6
    assert [v for _, v in series["edges/active"]][-1] == 2 * 8
    assert [v for _, v in series["ops/active"]][:2] == [2 * 14 * 7, 2 * 14]
    assert all(math.isfinite(v) for _, v in series["kappa"]) and all(v >= 1 for _, v in series["regions"])
    (arch,) = rep.architectures
    assert arch.ntk_cond == series["kappa"][-1][1] and res.accuracy is None
    assert rep.progresses[-1][0] == pytest.approx(1.0)
