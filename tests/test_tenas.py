"""TE-NAS: the two proxies against plain formulations and hand counts, the prune loop, the CLI, the worker."""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from test_worker import TINY, procs  # noqa: F401  (fixture for the worker test)
from torch import nn

from nas_core.config import ExperimentConfig
from nas_core.data import load_dataset
from nas_core.errors import Cancelled
from nas_core.pipeline import run_experiment
from nas_core.proxies import (
    NTKNet,
    ProxyEvaluator,
    RegionNet,
    activation_patterns,
    count_distinct_rows,
    count_regions_reference,
    genotype_weights,
    init_proxy,
    linear_regions,
    ntk_condition_number,
    ntk_condition_number_reference,
    region_inputs,
)
from nas_core.reporting import MemoryReporter
from nas_core.spaces import get_space
from nas_core.spaces.nb201_arch import EDGES, OPS
from nas_core.strategies import STRATEGIES
from nas_core.strategies.tenas import choose_prunes, dense_ranks, planned_evaluations
from nas_service.cli import main as cli_main
from storage import repo

TINY_PARAMS = {"ntk_batch": 12, "repeats": 1, "region_samples": 100}
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"


pytestmark = pytest.mark.usefixtures("one_thread")


def _partly_pruned() -> torch.Tensor:
    """Supernet op weights with `none` gone and a few ops pruned, as softmax(alpha) gives them."""
    alpha = torch.zeros(len(EDGES), len(OPS))
    alpha[:, 0] = -1000.0
    alpha[0, 3] = alpha[2, 1] = alpha[4, 2] = alpha[5, 4] = -1000.0
    return torch.softmax(alpha, dim=-1)


def _ntk_net(seed: int = 0, fused: bool = True) -> NTKNet:
    torch.manual_seed(seed)
    net = NTKNet(num_classes=10, in_ch=3)
    init_proxy(net, "kaiming", "fan_out")
    for cell in net.cells:
        if hasattr(cell, "fused"):
            cell.fused = fused
    return net


# --------------------------------------------------------------------------------------------------
# NTK


def test_ntk_equals_the_plain_per_sample_loop() -> None:
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    w = _partly_pruned()
    net = _ntk_net()
    fast = ntk_condition_number(net, x, w)
    ref = ntk_condition_number_reference(net, x, w)
    assert math.isfinite(fast) and fast > 1.0
    assert fast == pytest.approx(ref, rel=1e-4)


def test_ntk_on_worker_threads_equals_the_single_thread_loop() -> None:
    """The per-sample backward passes split over threads give the same Gram matrix, and leave the
    caller's intra-op thread setting alone."""
    x = torch.randn(13, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    w = _partly_pruned()
    net = _ntk_net(7)
    before = torch.get_num_threads()
    one = ntk_condition_number(net, x, w, workers=1)
    for workers in (2, 3):
        assert ntk_condition_number(net, x, w, workers=workers) == pytest.approx(one, rel=1e-4)
    assert torch.get_num_threads() == before


def test_ntk_reference_is_the_gram_matrix_of_per_sample_gradients() -> None:
    """The plain loop against G built one sample at a time with autograd on every 'weight' param."""
    x = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    w = _partly_pruned()
    net = _ntk_net(3)
    logits = net(x, w)
    rows = []
    named = [(n, p) for n, p in net.named_parameters() if "weight" in n]
    for i in range(len(x)):
        g = torch.autograd.grad(logits[i].sum(), [p for _, p in named], retain_graph=True, allow_unused=True)
        rows.append(torch.cat([t.flatten() for t in g if t is not None]))
    # pruned ops' convs take no part: their weights have no gradient and are left out
    assert sum(t is None for t in g) > 0
    eig = torch.linalg.eigvalsh(torch.stack(rows) @ torch.stack(rows).T)
    assert ntk_condition_number_reference(net, x, w) == pytest.approx((eig[-1] / eig[0]).item(), rel=1e-4)


def test_fused_and_plain_proxy_cells_agree() -> None:
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    w = _partly_pruned()
    a, b = _ntk_net(5, fused=True), _ntk_net(5, fused=False)
    assert torch.allclose(a(x, w), b(x, w), atol=1e-5)
    assert ntk_condition_number(a, x, w) == pytest.approx(ntk_condition_number(b, x, w), rel=1e-3)


def test_kappa_is_finite_and_deterministic_for_a_fixed_seed() -> None:
    data = load_dataset("synthetic", 0)
    w = _partly_pruned()
    runs = []
    for _ in range(2):
        ev = ProxyEvaluator(data.x_train, data.num_classes, ntk_batch=12, region_samples=100, seed=3)
        runs.append(ev.evaluate([w, torch.softmax(torch.zeros(6, 5), -1)], seed=11))
    assert runs[0] == runs[1]
    for kappa, regions in runs[0]:
        assert math.isfinite(kappa) and kappa > 1.0 and regions >= 1
    ev = ProxyEvaluator(data.x_train, data.num_classes, ntk_batch=12, region_samples=100, seed=3)
    assert ev.evaluate([w], seed=12) != runs[0][:1]  # another repeat: another init and batch


def test_worker_processes_score_exactly_as_this_process() -> None:
    data = load_dataset("synthetic", 0)
    arch = genotype_weights(get_space("nb201").parse(ARCH))
    settings = [_partly_pruned(), torch.softmax(torch.zeros(6, 5), -1), arch]
    seeds = [5, 6]
    kw = {"ntk_batch": 12, "region_samples": 100, "seed": 3}
    here = ProxyEvaluator(data.x_train, data.num_classes, **kw).evaluate_repeats(settings, seeds)
    calls = []
    with ProxyEvaluator(data.x_train, data.num_classes, workers=2, **kw) as ev:
        pooled = ev.evaluate_repeats(settings, seeds, done=lambda: calls.append(1))
        workers = multiprocessing.active_children()
        assert len(workers) == 2
        assert ev.evaluate(settings[:1], seed=5) == [here[0][0]]
    assert pooled == here and len(calls) == 6  # bit for bit, [repeat][setting]
    assert not any(w.is_alive() for w in workers)  # closed with the evaluator
    with pytest.raises(ValueError, match="workers"):
        ProxyEvaluator(data.x_train, data.num_classes, workers=0)


def test_tenas_on_worker_processes_prunes_as_in_process(tmp_path: Path) -> None:
    rep1, res1 = _run_tenas(tmp_path / "one", repeats=2)
    rep2, res2 = _run_tenas(tmp_path / "two", repeats=2, workers=2)
    assert res2.genotype == res1.genotype
    assert [p for p in rep2.series_points if p[2] in ("kappa", "regions")] == [
        p for p in rep1.series_points if p[2] in ("kappa", "regions")
    ]
    assert [e for e in rep2.events if e[0] == "prune"] == [e for e in rep1.events if e[0] == "prune"]
    assert any("2 worker processes" in m for _, _, m in rep2.logs)
    fractions = [f for f, phase, _, _ in rep2.progresses if phase == "search"]
    assert len(fractions) >= 2 * 58 and fractions == sorted(fractions)  # one step per scored candidate
    assert not multiprocessing.active_children()


def test_cancelled_tenas_stops_its_worker_processes(tmp_path: Path) -> None:
    class StopOnceScoring(MemoryReporter):
        """Asks to stop once the worker processes have scored something."""

        def should_stop(self) -> bool:
            self.seen = getattr(self, "seen", 0) or len(multiprocessing.active_children())
            return bool(self.seen) and any(phase == "search" and f > 0 for f, phase, _, _ in self.progresses)

    cfg = ExperimentConfig(
        strategy="tenas", dataset="synthetic", final_epochs=0, threads=1, params={**TINY_PARAMS, "workers": 2}
    )
    rep = StopOnceScoring(workdir=tmp_path)
    with pytest.raises(Cancelled):
        run_experiment(cfg, rep)
    assert rep.seen == 2 and not multiprocessing.active_children()


def test_both_inits_run_and_differ() -> None:
    data = load_dataset("synthetic", 0)
    w = _partly_pruned()
    out = {
        init: ProxyEvaluator(data.x_train, 10, ntk_batch=12, region_samples=100, init=init).evaluate([w], 1)[0]
        for init in ("kaiming", "pytorch-default")
    }
    assert out["kaiming"][0] != out["pytorch-default"][0]
    with pytest.raises(ValueError, match="unknown init"):
        ProxyEvaluator(data.x_train, 10, init="xavier")


# --------------------------------------------------------------------------------------------------
# linear regions


class _OneLayer(nn.Module):
    """x -> ReLU(Conv1x1(x)): a single ReLU layer on a point, as 4-D tensors so the hooks see it."""

    def __init__(self, weight: list[list[float]], bias: list[float]) -> None:
        super().__init__()
        self.lin = nn.Conv2d(len(weight[0]), len(weight), 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor(weight).view(len(weight), len(weight[0]), 1, 1))
            self.lin.bias.copy_(torch.tensor(bias))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.lin(x))


def test_linear_regions_of_a_1d_relu_layer() -> None:
    """Units relu(x - b) with breakpoints b = -1, 0.5, 2 cut the line into 4 pieces."""
    net = _OneLayer([[1.0], [1.0], [1.0]], [1.0, -0.5, -2.0])
    x = torch.linspace(-3, 4, 701).view(-1, 1, 1, 1)
    assert linear_regions(net, [x]) == 4
    assert linear_regions(net, [x[x.flatten() < 0.4]]) == 2  # only the first two pieces sampled


def test_linear_regions_of_three_lines_in_the_plane() -> None:
    """Hyperplanes x=0, y=0, x+y=1 in general position: 7 regions (2 units alone: 4 quadrants)."""
    g = torch.linspace(-3, 3, 121)
    pts = torch.cartesian_prod(g, g).view(-1, 2, 1, 1)
    three = _OneLayer([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], [0.0, 0.0, -1.0])
    two = _OneLayer([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    assert linear_regions(three, [pts[:7000], pts[7000:]]) == 7  # split batches are pooled
    assert linear_regions(two, [pts]) == 4


def test_unique_rows_equal_the_reference_sum_of_inverse_counts() -> None:
    gen = torch.Generator().manual_seed(0)
    pats = torch.rand(300, 6, generator=gen) > 0.6  # many repeats among 64 possible rows
    assert count_distinct_rows(pats) == round(count_regions_reference(pats))
    data = load_dataset("digits", 0)
    xs = region_inputs(data.x_train, 200, 3, gen)
    assert [tuple(x.shape) for x in xs] == [(200, 1, 3, 3)] * 3
    net = RegionNet()
    torch.manual_seed(0)
    init_proxy(net, "kaiming", "fan_in")
    w = _partly_pruned()
    pats = activation_patterns(net, xs, w)
    assert pats.shape[0] == 600 and pats.shape[1] > 0
    assert count_distinct_rows(pats) == pytest.approx(count_regions_reference(pats), abs=1e-6)
    # a cell without any conv has no ReLU: a linear map, one region
    skip_only = torch.zeros(6, 5)
    skip_only[:, 1] = 1.0
    assert linear_regions(net, xs, skip_only) == 1


def test_region_crops_come_from_the_data() -> None:
    x = torch.arange(2 * 2 * 5 * 5, dtype=torch.float32).view(2, 2, 5, 5)
    (crops,) = region_inputs(x, 50, 1, torch.Generator().manual_seed(0))
    for c in crops[:, 0]:
        v = int(c[0, 0])
        img, ch, rest = v // 50, (v % 50) // 25, v % 25
        top, left = divmod(rest, 5)
        assert torch.equal(c, x[img, ch, top : top + 3, left : left + 3])


# --------------------------------------------------------------------------------------------------
# pruning


def test_dense_ranks_and_choice_per_edge() -> None:
    assert dense_ranks({(0, 1): 0.5, (0, 2): 0.5, (1, 1): 0.1}, descending=True) == {(0, 1): 0, (0, 2): 0, (1, 1): 1}
    d_kappa = {(0, 1): 0.9, (0, 2): 0.1, (0, 3): 0.5, (1, 1): 0.2, (1, 2): 0.3}
    d_regions = {(0, 1): 0.0, (0, 2): -0.2, (0, 3): 0.4, (1, 1): 0.1, (1, 2): 0.1}
    chosen = choose_prunes(d_kappa, d_regions, {0: 1, 1: 1})
    # kappa ranks (desc): (0,1)0 (0,3)1 (1,2)2 (1,1)3 (0,2)4; region ranks (asc): (0,2)0 (0,1)1 (1,x)2 (0,3)3
    assert chosen == [((0, 1), 0, 1), ((1, 2), 2, 2)]
    assert [c for c, _, _ in choose_prunes(d_kappa, d_regions, {0: 2, 1: 0})] == [(0, 1), (0, 3)]
    assert planned_evaluations([4] * 6, 1) == (1 + 24) + (1 + 18) + (1 + 12) + 1
    assert planned_evaluations([4] * 6, 3) == (1 + 24) + 1


def _run_tenas(tmp_path: Path, **params: object) -> tuple[MemoryReporter, object]:
    cfg = ExperimentConfig(
        strategy="tenas", dataset="synthetic", final_epochs=0, threads=1, params={**TINY_PARAMS, **params}
    )
    rep = MemoryReporter(workdir=tmp_path)
    return rep, run_experiment(cfg, rep)


def _ops_per_edge(rep: MemoryReporter, step: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s, _, _, edge, op, w in rep.alpha_rows:
        if s == step and w > 0:
            out.setdefault(edge, []).append(op)
    return out


def test_tenas_search_prunes_to_one_op_per_edge_and_stores_the_rounds(tmp_path: Path) -> None:
    rep, res = _run_tenas(tmp_path)
    steps = sorted({r[0] for r in rep.alpha_rows})
    assert steps == [0, 1, 2, 3]  # 4 ops per edge (none removed up front), one pruned per round
    assert all(len(v) == 4 and "none" not in v for v in _ops_per_edge(rep, 0).values())
    last = _ops_per_edge(rep, 3)
    assert len(last) == 6 and all(len(v) == 1 for v in last.values())
    g = get_space("nb201").parse(res.genotype)
    assert [last[e][0] for e in EDGES] == list(g.ops)
    series: dict[str, list[tuple[int, float]]] = {}
    for step, _, name, value in rep.series_points:
        series.setdefault(name, []).append((step, value))
    assert [s for s, _ in series["kappa"]] == [0, 1, 2, 3]
    assert all(math.isfinite(v) for _, v in series["kappa"]) and all(v >= 1 for _, v in series["regions"])
    assert [v for _, v in series["ops/active"]] == [24.0, 18.0, 12.0, 6.0]
    pruned = [m for _, _, m in rep.logs if " pruned " in m]
    assert len(pruned) == 18 and all("kappa rank" in m and "regions rank" in m for m in pruned)
    events = [(step, d) for kind, step, d in rep.events if kind == "prune"]
    assert len(events) == 18 and [s for s, _ in events] == sorted(s for s, _ in events)
    for step, d in events:  # each decision names edge and op, and the ranks it was chosen by
        assert d["round"] == step and d["edge"] in EDGES and d["op"] != "none"
        assert d["rank_sum"] == d["kappa_rank"] + d["regions_rank"] and math.isfinite(d["d_kappa"])
        assert d["op"] not in _ops_per_edge(rep, step)[d["edge"]]  # really gone after that round
    assert rep.genotypes[-1][2] == res.genotype
    assert res.accuracy is None and res.accuracy_kind == "none"
    (arch,) = rep.architectures
    assert arch.accuracy is None and arch.extra["kappa"] == series["kappa"][-1][1]
    assert arch.ntk_cond == series["kappa"][-1][1] and arch.linear_regions == series["regions"][-1][1]
    assert rep.progresses[-1][0] == pytest.approx(1.0)


def test_tenas_prunes_several_per_round(tmp_path: Path) -> None:
    rep, _ = _run_tenas(tmp_path, prune_per_round=3)
    assert sorted({r[0] for r in rep.alpha_rows}) == [0, 1]
    assert all(len(v) == 1 for v in _ops_per_edge(rep, 1).values())


def test_tenas_is_registered_with_its_parameters() -> None:
    d = STRATEGIES["tenas"].describe()
    assert d["label"] == "TE-NAS (training-free)" and d["spaces"] == ["nb201", "darts"]
    defaults = {p["name"]: p["default"] for p in d["params"]}
    assert defaults == {
        "ntk_batch": 0,
        "repeats": 3,
        "region_samples": 1000,
        "prune_per_round": 0,
        "init": "kaiming",
        "workers": 1,
    }


# --------------------------------------------------------------------------------------------------
# CLI and worker


def test_cli_proxies(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["proxies", "--genotype", ARCH, "--dataset", "synthetic", "--repeats", "2", "--batch", "12"]
    assert cli_main([*args, "--region-samples", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["genotype"] == ARCH and math.isfinite(out["ntk_cond"]) and out["linear_regions"] >= 1
    assert len(out["ntk_cond_repeats"]) == 2
    assert out["ntk_cond"] == pytest.approx(sum(out["ntk_cond_repeats"]) / 2)
    assert cli_main([*args, "--region-samples", "100", "--json", "--workers", "2"]) == 0
    pooled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert pooled["ntk_cond_repeats"] == out["ntk_cond_repeats"] and not multiprocessing.active_children()
    for bad, what in [
        (["--genotype", "nonsense"], "--genotype"),
        (["--genotype", ARCH, "--repeats", "0"], "--repeats"),
        (["--genotype", ARCH, "--init", "xavier"], "--init"),
        (["--genotype", ARCH, "--workers", "0"], "--workers"),
        (["--genotype", ARCH, "--dataset", "nope"], "dataset"),
    ]:
        assert cli_main(["proxies", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and what in err, err


@pytest.mark.slow
def test_tenas_through_the_worker(db: str, procs: Callable) -> None:  # noqa: F811
    # on 2 worker processes: the job's search process (itself spawned by the worker) starts the pool
    cfg = TINY | {"strategy": "tenas", "final_epochs": 0, "params": TINY_PARAMS | {"workers": 2}}
    exp_id = repo.create_experiment(cfg, name="tenas-e2e")
    worker = procs("worker", "--once", "--poll", "0.2")
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    exp = repo.get_experiment(exp_id)
    assert exp["status"] == "succeeded", (exp["error"], exp["traceback"], out)
    assert exp["progress"] == 1.0 and exp["genotype"].count("~") == 6
    assert exp["best_accuracy"] is None or math.isnan(exp["best_accuracy"])
    series = repo.series_df(exp_id)
    assert list(series.loc[series["name"] == "kappa", "step"]) == [0, 1, 2, 3]
    events = repo.events_df(exp_id, "prune")
    assert len(events) == 18 and all({"edge", "op", "kappa_rank", "regions_rank"} <= set(d) for d in events["data"])
    alphas = repo.alphas_df(exp_id)
    final = alphas[(alphas["step"] == alphas["step"].max()) & (alphas["weight"] > 0)]
    assert len(final) == 6 and final["edge"].nunique() == 6
    logs = repo.logs_df(exp_id, tail=None)
    assert logs["message"].str.contains(" pruned ").sum() == 18
    arch = repo.architectures_df([exp_id])
    assert len(arch) == 1 and arch["genotype"].iloc[0] == exp["genotype"]
    assert math.isfinite(arch["ntk_cond"].iloc[0]) and arch["linear_regions"].iloc[0] >= 1
    assert exp["search_seconds"] > 0 and exp["device"]
    assert logs["message"].str.contains("2 worker processes").any()
