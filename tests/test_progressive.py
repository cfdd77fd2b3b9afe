"""Pareto-aware progressive search: NSGA-II selection, partial NB201 cells, edge costs, the predictor, the strategy."""

from __future__ import annotations

import json
import multiprocessing
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from nas_core.config import ExperimentConfig
from nas_core.errors import ConfigError
from nas_core.metrics import count_macs, count_params
from nas_core.pareto import crowding_distance, hypervolume_2d, nondominated_ranks, select_by_fronts
from nas_core.pipeline import run_experiment
from nas_core.reporting import MemoryReporter
from nas_core.spaces import darts_partial, get_space
from nas_core.spaces.growers import DartsGrower, EdgeCosts
from nas_core.spaces.nb201_arch import EDGE_PAIRS, OPS
from nas_core.spaces.nb201_partial import expand, first_stage, node_edges, output_connected, padded, tokens
from nas_core.stats import rank_correlations
from nas_core.surrogate import LSTMEnsemble
from storage import repo

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY = {"dataset": "synthetic", "epochs": 1, "final_epochs": 1, "channels": 2, "final_channels": 2,
        "cells_per_stage": 1, "batch_size": 64, "threads": 1}  # fmt: skip
OBJ = [("acc", "max"), ("cost", "min")]


def test_fronts_and_crowding_follow_nsga2() -> None:
    # A, B, E are the front; A dominates C, B dominates D; C dominates F; G lacks its cost
    df = pd.DataFrame({"acc": [0.9, 0.8, 0.85, 0.7, 0.95, 0.6, 0.99], "cost": [10, 5, 12, 6, 30, 40, np.nan]})
    assert list(nondominated_ranks(df, OBJ)) == [0, 0, 1, 1, 0, 2, 3]
    front = df.iloc[[0, 1, 4]]
    dist = crowding_distance(front, OBJ)
    assert np.isinf(dist[1]) and np.isinf(dist[2]) and dist[0] == pytest.approx(2.0)
    assert list(select_by_fronts(df, OBJ, 2)) == [1, 4]  # the front's two extremes: A is the most crowded
    assert list(select_by_fronts(df, OBJ, 4)) == [0, 1, 2, 4]  # the whole front, then C (tie with D: earlier)
    assert list(select_by_fronts(df, OBJ, 6)) == [0, 1, 2, 3, 4, 5]  # G (no cost) comes last
    assert list(select_by_fronts(df, OBJ, 10)) == list(range(7))
    # the union of [0, acc] x [cost, 50] over the front: E's 0.95 x 20, then A's 0.9 x 20 more, then B's 0.8 x 5
    assert hypervolume_2d(df, OBJ, [0.0, 50.0]) == pytest.approx(0.95 * 20 + 0.9 * 20 + 0.8 * 5)
    assert hypervolume_2d(df, OBJ, [0.0, 5.0]) == 0.0  # nothing is cheaper than the reference


def test_partial_cells_grow_node_by_node() -> None:
    sp = get_space("nb201")
    stage1 = first_stage()
    assert [g.ops[0] for g in stage1] == [o for o in OPS if o != "none"]
    assert sp.format(stage1[2]) == "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|"
    for parent in stage1:
        grown = expand(parent, 2)
        assert len(grown) == 24  # 5 x 5 op pairs into node 2, less the one that leaves it unconnected
        for g in grown:
            assert g.ops[0] == parent.ops[0] and g.ops[3:] == ("none", "none", "skip_connect")
        grown3 = expand(grown[0], 3)
        assert len(grown3) == 124 and all(g.ops[:3] == grown[0].ops[:3] for g in grown3)
    assert [len(tokens(g, b)) for g, b in ((stage1[0], 1), (grown[0], 2), (grown3[0], 3))] == [1, 3, 6]
    assert tokens(stage1[2], 1) == [OPS.index("nor_conv_3x3")]
    dead = padded(["nor_conv_3x3", "none", "none", "none", "none", "skip_connect"], 3)  # node 2 gets nothing
    assert not output_connected(dead) and output_connected(padded(["none", "skip_connect", "none"] + ["none"] * 3, 2))
    assert node_edges(3) == [k for k, (t, _) in enumerate(EDGE_PAIRS) if t == 3] == [3, 4, 5]
    with pytest.raises(ValueError, match="node 1"):
        expand(stage1[0], 1)


def test_edge_costs_add_up_to_the_whole_networks_counts() -> None:
    sp, shape = get_space("nb201"), (1, 8, 8)
    costs = EdgeCosts.count(sp, 10, shape, 4, 1)
    for k in range(len(EDGE_PAIRS)):  # the padding of partial cells is free
        assert costs.per_edge[k]["skip_connect"] == {"macs": 0, "params": 0} == costs.per_edge[k]["none"]
    rng = random.Random(3)
    for g in [sp.sample(rng) for _ in range(4)] + [expand(first_stage()[1], 2)[7]]:
        net = sp.build_network(sp.format(g), 10, shape, 4, 1)
        assert costs.of(g, "macs") == count_macs(net, shape) and costs.of(g, "params") == count_params(net)


def test_predictor_learns_a_ranking_and_is_deterministic() -> None:
    rng = random.Random(0)

    def acc(seq: list[int]) -> float:  # more 3x3 convs and fewer `none` = better, as on NB201
        return 0.5 + 0.4 * (seq.count(3) - seq.count(0)) / len(seq)

    train = [[rng.randrange(5) for _ in range(n)] for n in (1, 1, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3)]
    test = [[rng.randrange(5) for _ in range(3)] for _ in range(30)]
    a = LSTMEnsemble(vocab=5, seed=1).fit(train, [acc(s) for s in train])
    b = LSTMEnsemble(vocab=5, seed=1).fit(train, [acc(s) for s in train])
    pa = a.predict(test)
    assert pa == b.predict(test)  # same seed and data: same predictions
    assert rank_correlations(pa, [acc(s) for s in test])[0] > 0.6
    assert all(0.0 < p < 1.0 for p in pa) and len(a.predict([[1] * 6])) == 1  # any length
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LSTMEnsemble(vocab=5).fit([[1]], [1.5])
    with pytest.raises(RuntimeError, match="fit"):
        LSTMEnsemble(vocab=5).predict([[1]])


@pytest.mark.parametrize(
    ("params", "space", "field"),
    [({"beam": 1, "workers": 7}, "nb201", "params.workers"), ({"beam": 0}, "nb201", "params.beam"),
     ({}, "mobilenet", "space"), ({"beam": 1, "workers": 53}, "darts", "params.workers")],
)  # fmt: skip
def test_settings_that_cannot_run_are_refused_by_name(params: dict, space: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(strategy="progressive", space=space, **TINY, params=params).validated()
    assert err.value.field == field


@pytest.mark.slow
def test_search_trains_the_predicted_fronts_stage_by_stage(tmp_path) -> None:
    cfg = ExperimentConfig(strategy="progressive", space="nb201", **TINY, params={"beam": 2, "predictors": 2})
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    sp = get_space("nb201")
    trials = {step: d for kind, step, d in rep.events if kind == "trial"}
    assert sorted(trials) == list(range(8)) and len({d["genotype"] for d in trials.values()}) == 8
    assert [trials[i]["stage"] for i in range(8)] == [1, 1, 1, 1, 2, 2, 3, 3]
    for i in range(4, 8):  # each later cell grows one trained at the stage before, keeping its decided edges
        d, parent = trials[i], trials[trials[i]["parent"]]
        assert parent["stage"] == d["stage"] - 1 and d["predicted"] is not None
        decided = [k for k, (t, _) in enumerate(EDGE_PAIRS) if t < d["stage"]]
        child_ops, parent_ops = sp.parse(d["genotype"]).ops, sp.parse(parent["genotype"]).ops
        assert [child_ops[k] for k in decided] == [parent_ops[k] for k in decided]
    # Stage 2 trains exactly what NSGA-II's rule picks from the predictions of a predictor fitted on stage 1.
    stage1 = [trials[i] for i in range(4)]
    predictor = LSTMEnsemble(vocab=len(OPS), members=2, seed=cfg.seed)
    predictor.fit([tokens(sp.parse(d["genotype"]), 1) for d in stage1], [d["val_acc"] for d in stage1])
    cells: dict[str, object] = {}
    for d in stage1:
        for g in expand(sp.parse(d["genotype"]), 2):
            if sp.format(g) not in {e["genotype"] for e in stage1}:
                cells.setdefault(sp.format(g), g)
    predicted = predictor.predict([tokens(g, 2) for g in cells.values()])
    costs = EdgeCosts.count(sp, 10, (3, 8, 8), TINY["channels"], TINY["cells_per_stage"])
    table = pd.DataFrame({"predicted": predicted, "cost": [costs.of(g, "macs") for g in cells.values()]})
    picked = {list(cells)[i] for i in select_by_fronts(table, [("predicted", "max"), ("cost", "min")], 2)}
    assert {trials[4]["genotype"], trials[5]["genotype"]} == picked
    best = max(trials.values(), key=lambda d: d["val_acc"])
    assert res.genotype == best["genotype"] and res.supernet_accuracy == best["val_acc"]
    logs = [m for _, _, m in rep.logs]
    assert any("on the predicted front of accuracy against macs; training 2" in m for m in logs)
    assert any(m.startswith("Pareto front of all trials") for m in logs)


@pytest.mark.slow
def test_monitor_draws_a_progressive_run_and_queues_any_trials_final_training(db: str) -> None:
    from nas_service.jobs import run_job

    cfg = {
        "strategy": "progressive",
        "space": "nb201",
        **TINY,
        "params": {"beam": 2, "workers": 2, "cost": "params", "predictors": 2},
    }
    exp_id = repo.create_experiment(cfg, name="progressive-pages")
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded", repo.get_experiment(exp_id)["traceback"]
    assert not multiprocessing.active_children()  # the pool is gone
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/monitor.py")
    at.query_params["id"] = str(exp_id)
    at.run()
    assert not at.exception and not at.error
    (table,) = [d.value for d in at.dataframe if "val_acc" in d.value.columns]
    assert len(table) == 8 and list(table.columns[:4]) == ["trial", "stage", "val_acc", "predicted"]
    assert table["predicted"].notna().sum() == 4 and sorted(table["stage"]) == [1, 1, 1, 1, 2, 2, 3, 3]
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (pareto,) = [c for c in charts if "Pareto front" in json.dumps(c)]
    names = {t.get("name") for t in pareto["data"] if t.get("mode") == "markers"}
    assert {"stage 1", "stage 2", "stage 3"} <= names

    # Any trial, not only the search's pick, can be trained at the final size, stored and exported.
    rows = table.set_index("trial")
    pick = int(rows["val_acc"].idxmin())
    at.selectbox(key="retrain_trial").set_value(pick)
    at.number_input(key="retrain_epochs").set_value(1)
    at.button(key="retrain_queue").click().run()
    assert not at.exception and not at.error
    new_id = at.session_state["retrained"]
    new = repo.get_experiment(new_id)
    assert new["strategy"] == "fixed" and new["config"]["final_epochs"] == 1 and new["dataset"] == "synthetic"
    assert new["config"]["params"] == {"genotype": rows.loc[pick, "genotype"],
                                       "source": f"experiment {exp_id}, trial {pick}"}  # fmt: skip
    assert run_job(new_id, heartbeat=False)["status"] == "succeeded", repo.get_experiment(new_id)["traceback"]
    (arch,) = repo.architectures_df([new_id]).to_dict("records")
    assert arch["genotype"] == rows.loc[pick, "genotype"] and arch["accuracy_kind"] == "test" and arch["macs"] > 0
    at.query_params["id"] = str(new_id)
    at.run()
    assert not at.exception and not at.error
    assert any(f"(experiment {exp_id}, trial {pick})" in c.value for c in at.caption)
    assert "Alpha evolution" not in [h.value for h in at.subheader]


def test_launch_page_queues_a_progressive_search(db: str) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.selectbox(key="strategy").set_value("progressive").run()
    assert len(at.selectbox(key="space").options) == 2 and "NAS-Bench-201 cell" in at.selectbox(key="space").options
    at.selectbox(key="dataset").set_value("digits")
    at.number_input(key="p_progressive_beam").set_value(3)
    at.selectbox(key="p_progressive_cost").set_value("params")
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception and not at.error
    exp = repo.get_experiment(at.session_state["launched"])
    assert exp["status"] == "queued" and exp["strategy"] == "progressive"
    assert exp["config"]["params"]["beam"] == 3 and exp["config"]["params"]["cost"] == "params"
    assert "trials" not in exp["config"]["params"]
    repo.request_cancel(exp["id"])


def test_darts_cells_grow_node_by_node_with_the_reduction_cell_tied() -> None:
    sp = get_space("darts")
    stage1 = darts_partial.first_stage()
    assert len(stage1) == 49 and all(g.normal == g.reduce and g.normal_concat == (2,) for g in stage1)
    assert {tuple(i for _, i in g.normal) for g in stage1} == {(0, 1)}
    grown = darts_partial.expand(stage1[5], 3)
    assert len(grown) == 3 * 49 and all(g.normal[:2] == stage1[5].normal and g.normal_concat == (2, 3) for g in grown)
    grown4 = darts_partial.expand(grown[0], 4)
    assert len(grown4) == 6 * 49 and len(darts_partial.expand(grown4[0], 5)) == 10 * 49
    assert all(a != b for g in grown4 for (_, a), (_, b) in zip(g.normal[::2], g.normal[1::2]))  # distinct inputs
    assert darts_partial.tokens(grown[0]) == [darts_partial.GROWN_OPS.index(op) * 5 + i for op, i in grown[0].normal]
    assert sp.parse(sp.format(grown[0])) == grown[0]  # a partial cell round-trips through the genotype text
    with pytest.raises(ValueError, match="with nodes 2..3"):
        darts_partial.expand(stage1[0], 4)


@pytest.mark.parametrize("stage", [1, 2, 4])
def test_darts_pair_costs_add_up_to_the_whole_networks_counts(stage: int) -> None:
    sp, shape = get_space("darts"), (3, 8, 8)
    grower = DartsGrower(sp, (10, shape, 4, 1))
    rng = random.Random(stage)
    cells = [darts_partial.first_stage()[rng.randrange(49)]]
    for node in range(3, stage + 2):
        cells = [rng.choice(darts_partial.expand(cells[0], node))]
    cells += [darts_partial.tied(cells[0].normal[:-2] + (("skip_connect", 0), ("max_pool_3x3", 1)))]
    for g in cells:
        net = sp.build_network(sp.format(g), 10, shape, 4, 1)
        assert grower.cost(g, stage, "macs") == count_macs(net, shape)
        assert grower.cost(g, stage, "params") == count_params(net)


@pytest.mark.slow
def test_progressive_search_on_the_darts_space(tmp_path) -> None:
    params = {"beam": 1, "first_stage": 3, "predictors": 1}
    cfg = ExperimentConfig(strategy="progressive", space="darts", **TINY, params=params)
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    sp = get_space("darts")
    trials = {step: d for kind, step, d in rep.events if kind == "trial"}
    assert [trials[i]["stage"] for i in range(len(trials))] == [1, 1, 1, 2, 3, 4]
    last = sp.parse(trials[5]["genotype"])
    assert len(last.normal) == 8 and last.normal == last.reduce and last.normal_concat == (2, 3, 4, 5)
    for i in range(3, 6):  # each grows its parent by one node
        child, parent = sp.parse(trials[i]["genotype"]), sp.parse(trials[trials[i]["parent"]]["genotype"])
        assert child.normal[: len(parent.normal)] == parent.normal and len(child.normal) == len(parent.normal) + 2
    assert res.genotype in {d["genotype"] for d in trials.values()} and res.accuracy_kind == "test"
    assert any("441 new cells grown from the 3 of stage 1" in m for _, _, m in rep.logs)  # 3 x 3 x 49
