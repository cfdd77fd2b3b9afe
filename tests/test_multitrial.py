"""Random search and regularized evolution: sampling and mutation, aging tournaments, real runs (in process and
on a pool of worker processes), cancel, config checks, the Monitor's trial table."""

from __future__ import annotations

import json
import multiprocessing
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from nas_core.config import ExperimentConfig
from nas_core.errors import Cancelled, ConfigError
from nas_core.pipeline import run_experiment
from nas_core.reporting import MemoryReporter
from nas_core.spaces import get_space
from nas_core.spaces.darts_genotype import STEPS
from nas_core.spaces.mobilenet_arch import block_options, get_preset
from nas_core.strategies.multitrial import Trial, evolve, mnas_reward, population_of
from storage import repo

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY = {"dataset": "synthetic", "epochs": 1, "final_epochs": 1, "channels": 2, "final_channels": 2,
        "cells_per_stage": 1, "batch_size": 64, "threads": 1}  # fmt: skip


def _choices(space_name: str, g) -> list:  # noqa: ANN001
    if space_name == "nb201":
        return list(g.ops)
    if space_name == "mobilenet":
        return [b.name for b in g.blocks]
    return list(g.normal) + list(g.reduce)


@pytest.mark.parametrize("space_name", ["nb201", "darts", "mobilenet"])
def test_samples_are_valid_and_mutations_change_exactly_one_choice(space_name: str) -> None:
    sp, rng = get_space(space_name), random.Random(0)
    seen = set()
    for _ in range(200):
        g = sp.sample(rng)
        assert sp.parse(sp.format(g)) == g  # a valid genotype that round-trips
        seen.add(sp.format(g))
        m = sp.mutate(g, rng)
        assert sp.parse(sp.format(m)) == m
        diff = [(a, b) for a, b in zip(_choices(space_name, g), _choices(space_name, m)) if a != b]
        assert len(diff) == 1, diff
        if space_name == "darts":
            ((old, new),) = diff
            assert old[0] == new[0] or old[1] == new[1]  # an op or an input changes, not both
            for cell in (m.normal, m.reduce):  # every node keeps two distinct inputs
                assert all(cell[2 * k][1] != cell[2 * k + 1][1] for k in range(STEPS))
    assert len(seen) > 190  # uniform draws over a large space rarely repeat


@pytest.mark.parametrize(
    ("shape", "preset"), [((1, 8, 8), "digits"), ((3, 32, 32), "cifar-search"), ((3, 224, 224), "imagenet-search")]
)
def test_mobilenet_samples_are_proxylessnas_networks_of_the_search_table(shape: tuple, preset: str) -> None:
    sp, rng = get_space("mobilenet"), random.Random(0)
    options = block_options(preset)
    drawn = [sp.sample(rng, shape) for _ in range(300)]
    assert {g.preset for g in drawn} == {preset} and all(len(g.blocks) == len(options) for g in drawn)
    for i, opts in enumerate(options):  # each block takes every choice it may, and no other
        assert {g.blocks[i].name for g in drawn} == set(opts)
    assert any("zero" in o for o in options) and any("zero" not in o for o in options)
    net = sp.build_network(drawn[0], 10, shape)  # builds at that input size
    assert net(torch.zeros(2, *shape)).shape == (2, 10)
    table = get_preset(preset).table_genotype()  # a hand-written genotype mutates too, into a valid network
    m = sp.mutate(table, rng)
    assert sp.parse(sp.format(m)) == m and sum(a != b for a, b in zip(table.blocks, m.blocks)) == 1


def _trial(i: int, acc: float, genotype: str = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|") -> Trial:
    return Trial(i, genotype, acc, 0, 0.0)


def test_evolution_fills_the_population_at_random_then_mutates_tournament_winners() -> None:
    sp, rng = get_space("nb201"), random.Random(1)
    for submitted in range(4):
        assert evolve(rng, submitted, [], sp, 4, 2)[1] is None
    best = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    done = [_trial(0, 0.9, best), _trial(1, 0.1), _trial(2, 0.2), _trial(3, 0.3)]
    parents = [evolve(rng, 4, done, sp, 4, 4) for _ in range(20)]
    assert {p for _, p in parents} == {0}  # tournament over the whole population: always the best
    assert all(sum(a != b for a, b in zip(sp.parse(best).ops, g.ops)) == 1 for g, _ in parents)
    # aging: once four younger trials have finished, trial 0 is dead however good it was
    done += [_trial(4, 0.4), _trial(5, 0.5), _trial(6, 0.6), _trial(7, 0.7)]
    assert [t.index for t in population_of(done, 4)] == [4, 5, 6, 7]
    assert {evolve(rng, 8, done, sp, 4, 4)[1] for _ in range(20)} == {7}
    assert {evolve(rng, 8, done, sp, 4, 1)[1] for _ in range(50)} == {4, 5, 6, 7}  # size 1: random member


def test_mnas_reward_is_the_papers_soft_and_hard_constraint() -> None:
    assert mnas_reward(0.8, 100, 100, -0.07, -0.07) == 0.8  # on target: the accuracy
    assert mnas_reward(0.8, 200, 100, -0.07, -0.07) == pytest.approx(0.8 * 2**-0.07)  # 2x cost: -4.7%
    assert mnas_reward(0.8, 50, 100, -0.07, -0.07) == pytest.approx(0.8 * 0.5**-0.07)  # cheaper: rewarded
    assert mnas_reward(0.8, 50, 100, 0.0, -1.0) == 0.8 and mnas_reward(0.8, 200, 100, 0.0, -1.0) == 0.4  # hard
    sp, rng = get_space("nb201"), random.Random(0)
    done = [Trial(0, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 0.9, 0, 0.0, score=0.1), _trial(1, 0.2)]
    assert {evolve(rng, 2, done, sp, 2, 2)[1] for _ in range(10)} == {1}  # the tournament ranks by the score


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"trials": 5, "population": 6}, "params.population"),
        ({"trials": 10, "population": 3, "sample_size": 4}, "params.sample_size"),
        ({"trials": 2, "workers": 3}, "params.workers"),
        ({"trials": 4, "population": 2, "objective": "mnas"}, "params.target_mmacs"),
    ],
)
def test_settings_that_cannot_run_are_refused_by_name(params: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(strategy="evolution", **TINY, params=params).validated()
    assert err.value.field == field


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "workers"), [("random", 1), ("evolution", 2)])
def test_search_trains_every_trial_and_keeps_the_best_by_validation(strategy: str, workers: int, tmp_path) -> None:
    params = {"trials": 6, "workers": workers}
    if strategy == "evolution":
        params |= {"population": 3, "sample_size": 2}
    cfg = ExperimentConfig(strategy=strategy, space="nb201", **TINY, params=params)
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    trials = [d for kind, _, d in rep.events if kind == "trial"]
    assert len(trials) == 6 and len({d["genotype"] for d in trials}) > 1
    best = max(trials, key=lambda d: d["val_acc"])
    assert res.genotype == best["genotype"] and res.supernet_accuracy == best["val_acc"]
    assert all(0.0 <= d["val_acc"] <= 1.0 and d["params"] > 0 and d["seconds"] > 0 for d in trials)
    if strategy == "evolution":  # by trial index: pool trials finish in any order
        parent = {step: d["parent"] for kind, step, d in rep.events if kind == "trial"}
        assert [parent[i] for i in range(3)] == [None] * 3 and all(parent[i] is not None for i in range(3, 6))
    series = {name for _, _, name, _ in rep.series_points}
    assert {"trial/val_acc", "best/val_acc"} <= series
    assert not multiprocessing.active_children()  # the pool is gone


def test_random_search_ranks_by_mnas_reward(tmp_path) -> None:
    params = {"trials": 4, "objective": "mnas", "target_mmacs": 0.05, "mnas_alpha": 0.0, "mnas_beta": -1.0}
    cfg = ExperimentConfig(strategy="random", space="mobilenet", **TINY, params=params)
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    trials = {step: d for kind, step, d in rep.events if kind == "trial"}
    for d in trials.values():
        assert d["reward"] == pytest.approx(mnas_reward(d["val_acc"], d["macs"], 0.05e6, 0.0, -1.0))
    best = max(trials.values(), key=lambda d: d["reward"])
    assert res.genotype == best["genotype"] and res.supernet_accuracy == best["val_acc"]
    assert any("ranked by MnasNet's reward" in m for _, _, m in rep.logs)
    assert {"trial/reward", "best/reward"} <= {name for _, _, name, _ in rep.series_points}


@pytest.mark.slow
def test_evolution_on_the_mobilenet_space(tmp_path) -> None:
    params = {"trials": 3, "population": 2, "sample_size": 2}
    cfg = ExperimentConfig(strategy="evolution", space="mobilenet", **TINY, params=params)
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    sp = get_space("mobilenet")
    trials = {step: d for kind, step, d in rep.events if kind == "trial"}
    assert len(trials) == 3 and trials[2]["parent"] in (0, 1)
    child, parent = sp.parse(trials[2]["genotype"]), sp.parse(trials[trials[2]["parent"]]["genotype"])
    assert child.preset == "digits" and sum(a != b for a, b in zip(child.blocks, parent.blocks)) == 1
    assert sp.parse(res.genotype).preset == "digits" and res.accuracy_kind == "test" and res.accuracy is not None
    assert any("on the 'digits' table" in m for _, _, m in rep.logs)


def test_cancel_stops_the_pool_and_its_workers(tmp_path) -> None:
    cfg = ExperimentConfig(strategy="random", space="nb201", **TINY | {"epochs": 200},
                           params={"trials": 4, "workers": 2})  # fmt: skip
    with pytest.raises(Cancelled):
        run_experiment(cfg, MemoryReporter(workdir=tmp_path, stop_after_steps=3))
    assert not multiprocessing.active_children()


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["accuracy", "mnas"])
def test_monitor_lists_the_trials(db: str, objective: str) -> None:
    from nas_service.jobs import run_job

    params = {"trials": 4, "population": 2, "sample_size": 2, "objective": objective, "target_mmacs": 0.01}
    cfg = {"strategy": "evolution", "space": "nb201", **TINY, "params": params}
    exp_id = repo.create_experiment(cfg, name="evolution-pages")
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded", repo.get_experiment(exp_id)["traceback"]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/monitor.py")
    at.query_params["id"] = str(exp_id)
    at.run()
    assert not at.exception and not at.error
    subheaders = [s.value for s in at.subheader]
    assert "Trials" in subheaders and "Alpha evolution" not in subheaders and "Search signals" in subheaders
    (table,) = [d.value for d in at.dataframe if "val_acc" in d.value.columns]
    key = "reward" if objective == "mnas" else "val_acc"
    assert len(table) == 4 and list(table[key]) == sorted(table[key], reverse=True)
    assert ("reward" in table.columns) == (objective == "mnas")
    assert table["parent"].notna().sum() == 2  # the two mutants
    assert (table["macs"] > 0).all() and (table["params"] > 0).all()
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (pareto,) = [c for c in charts if "Pareto front" in json.dumps(c)]  # accuracy vs MACs of the trials
    assert "MACs" in pareto["layout"]["xaxis"]["title"]["text"]
    drawn = sum(len(t["x"]) for t in pareto["data"] if t.get("mode") == "markers")
    assert drawn == 4


def test_trial_points_mark_the_accuracy_macs_front() -> None:
    from nas_core import viz

    trials = pd.DataFrame(
        {
            "step": [0, 1, 2, 3],
            "val_acc": [0.5, 0.9, 0.8, 0.95],
            "params": [10, 30, 20, 50],
            "macs": [100, 300, 400, 500],
            "parent": [None, None, 1, 1],
            "genotype": list("abcd"),
        }
    )
    points, x = viz.trial_points(trials)
    assert x == "macs" and list(points["origin"]) == ["random draw", "random draw", "mutant", "mutant"]
    info = viz.pareto_info(points, x=x, color_by="origin")
    assert sorted(info.points.loc[info.points["on_front"], "id"]) == [0, 1, 3]  # trial 2 is dominated by 1
    points, x = viz.trial_points(trials.drop(columns=["macs"]))  # recorded before MACs were
    assert x == "params"


def test_launch_page_offers_evolution_refuses_a_bad_population_and_queues_a_good_one(db: str) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.selectbox(key="strategy").set_value("evolution").run()
    at.selectbox(key="dataset").set_value("synthetic")
    for name, value in (("trials", 12), ("population", 20), ("sample_size", 3), ("workers", 2)):
        at.number_input(key=f"p_evolution_{name}").set_value(value)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    assert any("params.population" in e.value for e in at.error), [e.value for e in at.error]
    assert repo.list_experiments().empty  # nothing queued

    at.number_input(key="p_evolution_population").set_value(6)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception and not at.error
    exp = repo.get_experiment(at.session_state["launched"])
    assert exp["status"] == "queued" and exp["strategy"] == "evolution"
    assert exp["config"]["params"] == {"trials": 12, "workers": 2, "executor": "process", "population": 6,
                                       "sample_size": 3, "objective": "accuracy", "target_mmacs": 0.0,
                                       "mnas_alpha": -0.07, "mnas_beta": -0.07, "latency": False}  # fmt: skip
    repo.request_cancel(exp["id"])


def test_launch_page_queues_random_search_on_the_mobilenet_space(db: str) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.selectbox(key="strategy").set_value("random").run()
    assert "MobileNetV2-style blocks" in at.selectbox(key="space").options  # labels
    at.selectbox(key="space").set_value("mobilenet").run()
    at.selectbox(key="dataset").set_value("digits")
    at.number_input(key="p_random_trials").set_value(4)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    exp = repo.get_experiment(at.session_state["launched"])
    assert exp["status"] == "queued" and (exp["strategy"], exp["space"]) == ("random", "mobilenet")
    repo.request_cancel(exp["id"])


def test_pareto_tournament_is_nsga2s_front_then_crowding() -> None:
    from nas_core.strategies.multitrial import pareto_keys

    g = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    alive = [Trial(0, g, 0.9, 0, 0.0, macs=100), Trial(1, g, 0.8, 0, 0.0, macs=50),
             Trial(2, g, 0.85, 0, 0.0, macs=70), Trial(3, g, 0.7, 0, 0.0, macs=200)]  # fmt: skip
    keys = pareto_keys(alive)  # A, B, E on the front (E between them), C dominated
    assert keys[0] == keys[1] == (0, float("inf")) and keys[2] == (0, pytest.approx(2.0)) and keys[3][0] == -1
    sp, rng = get_space("nb201"), random.Random(0)
    # the whole population in the tournament: the front's extremes tie, the younger (B) wins; by accuracy: A
    assert evolve(rng, 4, alive, sp, 4, 4, pareto=True)[1] == 1
    assert evolve(rng, 4, alive, sp, 4, 4)[1] == 0


def test_evolution_with_the_pareto_objective_reports_the_front(tmp_path) -> None:
    params = {"trials": 4, "population": 2, "sample_size": 2, "objective": "pareto"}
    cfg = ExperimentConfig(strategy="evolution", space="nb201", **TINY, params=params)
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    trials = {step: d for kind, step, d in rep.events if kind == "trial"}
    top = max(d["val_acc"] for d in trials.values())
    best = min((d for d in trials.values() if d["val_acc"] == top), key=lambda d: d["macs"])
    assert res.genotype == best["genotype"]
    logs = [m for _, _, m in rep.logs]
    assert any("ranked by validation accuracy and MACs (Pareto fronts" in m for m in logs)
    (front,) = [m for m in logs if m.startswith("Pareto front of all trials (val acc against MACs): trials ")]
    listed = [int(i) for i in front.rsplit("trials ", 1)[1].split(", ")]
    for i in listed:  # nothing on the front is dominated by another trial
        a = trials[i]
        assert not any(b["val_acc"] >= a["val_acc"] and b["macs"] <= a["macs"]
                       and (b["val_acc"], b["macs"]) != (a["val_acc"], a["macs"]) for b in trials.values())  # fmt: skip
    assert min(trials, key=lambda i: (-trials[i]["val_acc"], trials[i]["macs"])) in listed


@pytest.mark.slow
def test_trials_can_be_timed_and_charted_against_latency(db: str) -> None:
    from nas_service.jobs import run_job

    cfg = {"strategy": "random", "space": "nb201", **TINY, "params": {"trials": 3, "latency": True}}
    exp_id = repo.create_experiment(cfg, name="timed trials")
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded", repo.get_experiment(exp_id)["traceback"]
    trials = repo.events_df(exp_id, "trial")["data"].tolist()
    assert len(trials) == 3 and all(d["latency_ms"] > 0 for d in trials)
    assert sum(" ms, " in m for m in repo.logs_df(exp_id, tail=None)["message"]) == 3
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/monitor.py")
    at.query_params["id"] = str(exp_id)
    at.run()
    assert not at.exception
    (table,) = [d.value for d in at.dataframe if "val_acc" in d.value.columns]
    assert (table["latency_ms"] > 0).all()
    at.radio(key="trial_axis").set_value("latency_ms").run()
    assert not at.exception
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (pareto,) = [c for c in charts if "Pareto front" in json.dumps(c)]
    assert pareto["layout"]["xaxis"]["title"]["text"] == "Latency (ms)"
