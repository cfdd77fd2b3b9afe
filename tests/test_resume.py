"""Resuming a multi-trial search: the finished trials of the attempt before are reused, not trained again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from streamlit.testing.v1 import AppTest

from nas_core.config import ExperimentConfig
from nas_core.errors import Cancelled
from nas_core.pipeline import run_experiment
from nas_core.reporting import MemoryReporter
from nas_core.strategies.resume import checkpoint_info
from nas_service.cli import main
from nas_service.jobs import run_job
from storage import repo
from storage.db import session
from storage.models import Event, Experiment

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
TINY = {"dataset": "synthetic", "epochs": 1, "final_epochs": 1, "channels": 2, "final_channels": 2,
        "cells_per_stage": 1, "batch_size": 64, "threads": 1}  # fmt: skip


def _trials(exp_id: int) -> dict[int, dict]:
    df = repo.events_df(exp_id, "trial")
    return {int(step): data for step, data in zip(df["step"], df["data"])} if not df.empty else {}


def _interrupt_after(db: str, exp_id: int, finished: int) -> None:
    """As if the worker had died once ``finished`` trials were stored."""
    with session(db, write=True) as s:
        s.execute(delete(Event).where(Event.experiment_id == exp_id, Event.kind == "trial", Event.step >= finished))
        s.execute(update(Experiment).where(Experiment.id == exp_id).values(status="interrupted"))


def _resume_offered_then_queued(exp_id: int, button: str, message: str, capsys) -> None:
    """The Monitor offers ``button`` beside Run again; the CLI's ``retry --resume`` queues it with ``message``."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("pages/monitor.py")
    at.query_params["id"] = str(exp_id)
    at.run()
    assert not at.exception and [b.label for b in at.button if b.key == "resume"] == [button]
    assert main(["retry", str(exp_id), "--resume", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "queued" and out["message"] == message


@pytest.mark.slow
def test_a_resumed_search_reuses_its_finished_trials_and_trains_the_rest(db: str, capsys) -> None:
    cfg = {"strategy": "random", "space": "nb201", **TINY, "params": {"trials": 4}}
    exp_id = repo.create_experiment(cfg, name="resume")
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded"
    first = _trials(exp_id)
    _interrupt_after(db, exp_id, 2)

    # The Monitor offers Resume beside Run again; the CLI does the same with `retry --resume`.
    _resume_offered_then_queued(exp_id, "Resume (2 trials done)", "resumed with 2 finished trial(s)", capsys)
    assert _trials(exp_id) == {} and sorted(repo.previous_trials(exp_id)) == [(i, first[i]["genotype"]) for i in (0, 1)]

    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded"
    second = _trials(exp_id)
    assert sorted(second) == [0, 1, 2, 3]
    assert all(second[i] == first[i] for i in (0, 1))  # reused as they were: same accuracy, same seconds
    assert [second[i]["genotype"] for i in (2, 3)] == [first[i]["genotype"] for i in (2, 3)]  # same proposals
    assert all(second[i]["seconds"] != first[i]["seconds"] for i in (2, 3))  # trained again
    logs = list(repo.logs_df(exp_id, tail=None)["message"])
    assert any(m.startswith("resuming: 2 trial(s) of the earlier attempt are reused") for m in logs)
    assert sum(", reused)" in m for m in logs) == 2

    # Resuming again carries the last attempt's trials (reused ones included), not older copies.
    _interrupt_after(db, exp_id, 3)
    assert repo.retry_experiment(exp_id, resume=True) is not None
    assert sorted(i for i, _ in repo.previous_trials(exp_id)) == [0, 1, 2]
    # Run again (no resume) starts from nothing.
    with session(db, write=True) as s:
        s.execute(update(Experiment).where(Experiment.id == exp_id).values(status="cancelled"))
    assert repo.retry_experiment(exp_id) is not None and repo.previous_trials(exp_id) == {}


@pytest.mark.slow
def test_a_resumed_progressive_search_replays_its_stages(db: str) -> None:
    cfg = {"strategy": "progressive", "space": "nb201", **TINY, "params": {"beam": 1, "predictors": 2}}
    exp_id = repo.create_experiment(cfg, name="resume progressive")
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded"
    first = _trials(exp_id)
    assert len(first) == 6  # 4 one-node cells, then 1 per stage
    _interrupt_after(db, exp_id, 5)
    assert repo.retry_experiment(exp_id, resume=True) is not None
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded"
    second = _trials(exp_id)
    # the predictor refits to the same picks, so stages 1 and 2 are all reused and the last cell is grown again
    assert all(second[i] == first[i] for i in range(5))
    assert second[5]["genotype"] == first[5]["genotype"] and second[5]["seconds"] != first[5]["seconds"]


def test_retry_refuses_an_experiment_that_did_not_stop(db: str, capsys) -> None:
    exp_id = repo.create_experiment({"strategy": "random", "space": "nb201", **TINY, "params": {"trials": 2}})
    assert main(["retry", str(exp_id)]) == 2
    assert f"experiment {exp_id} is queued: only a failed, cancelled or interrupted one" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# one-shot searches: per-epoch checkpoints

ONESHOT = {"dataset": "synthetic", "epochs": 3, "final_epochs": 0, "channels": 2, "final_channels": 2,
           "cells_per_stage": 1, "batch_size": 64, "threads": 1}  # fmt: skip


def _search_record(rep: MemoryReporter) -> tuple:
    """What a search charted, without wall times: alpha snapshots, series, genotypes, epoch rows."""
    epochs = [(p, e, {k: v for k, v in m.items() if k != "seconds"}) for p, e, m in rep.epochs if p == "search"]
    return rep.alpha_rows, rep.series_points, rep.genotypes, epochs


@pytest.mark.parametrize(
    "strategy, space, params",
    [
        ("darts", "nb201", {}),
        ("darts-2nd", "nb201", {}),
        ("gdas", "nb201", {}),
        ("pc-darts", "darts", {"warmup_epochs": 1, "partial_k": 2}),
        (
            "proxylessnas",
            "mobilenet",
            {
                "resource": "latency",
                "target_latency_ms": 1.0,
                "arch_every": 2,
                "lut_repeats": 3,
                "lut_warmup": 1,
                "lut_seconds": 0,
            },
        ),  # fmt: skip
    ],
)
def test_an_interrupted_one_shot_search_resumes_from_its_checkpoint_as_if_never_stopped(
    strategy, space, params, tmp_path
) -> None:
    over = {}
    if space == "mobilenet":  # its own small sizes; the latency table is measured once and shared by the runs
        over = {"dataset": "digits", "max_train_per_class": 20, "batch_size": 32, "channels": 8}
        params = {**params, "lut_dir": str(tmp_path / "luts")}
    cfg = ExperimentConfig(strategy=strategy, space=space, **{**ONESHOT, **over}, params=params).validated()
    whole = MemoryReporter(workdir=tmp_path / "whole")
    res = run_experiment(cfg, whole)
    assert checkpoint_info(whole.workdir) is None  # a finished run leaves no checkpoint

    steps = whole.genotypes[0][0]  # steps per epoch: the step of the first epoch's genotype
    cut = MemoryReporter(workdir=tmp_path / "cut", stop_after_steps=steps + steps // 2)  # mid epoch 2
    with pytest.raises(Cancelled):
        run_experiment(cfg, cut)
    assert checkpoint_info(cut.workdir) == {"strategy": strategy, "epochs_done": 1, "epochs": 3, "step": steps}

    again = MemoryReporter(workdir=tmp_path / "cut")
    res2 = run_experiment(cfg, again, resume=True)
    assert res2.genotype == res.genotype and res2.supernet_accuracy == res.supernet_accuracy
    assert _search_record(again) == _search_record(whole)  # every alpha, series point and epoch row, exactly
    assert [e[:2] for e in again.events] == [e[:2] for e in whole.events]  # ProxylessNAS's latency table: once
    assert any(m.startswith("resumed from the checkpoint after epoch 1/3 (step") for _, _, m in again.logs)
    assert checkpoint_info(cut.workdir) is None


def test_a_run_that_is_not_a_resume_starts_over_and_a_changed_config_is_not_resumed(tmp_path) -> None:
    cfg = ExperimentConfig(strategy="darts", space="nb201", **ONESHOT).validated()
    cut = MemoryReporter(workdir=tmp_path, stop_after_steps=15)
    with pytest.raises(Cancelled):
        run_experiment(cfg, cut)
    assert checkpoint_info(tmp_path)["epochs_done"] == 1
    other = ExperimentConfig(strategy="darts", space="nb201", **{**ONESHOT, "seed": 1}).validated()
    rep = MemoryReporter(workdir=tmp_path, stop_after_steps=3)
    with pytest.raises(Cancelled):
        run_experiment(other, rep, resume=True)  # another seed: the checkpoint is not this search's
    assert any("no checkpoint of this search was found; it starts over" in m for _, _, m in rep.logs)
    assert checkpoint_info(tmp_path) is None  # and the stale one is gone
    cut = MemoryReporter(workdir=tmp_path, stop_after_steps=15)
    with pytest.raises(Cancelled):
        run_experiment(cfg, cut)
    fresh = MemoryReporter(workdir=tmp_path, stop_after_steps=3)
    with pytest.raises(Cancelled):
        run_experiment(cfg, fresh)  # Run again, not Resume
    assert checkpoint_info(tmp_path) is None and not any("resumed" in m for _, _, m in fresh.logs)


def test_a_failed_one_shot_job_resumes_through_the_monitor_and_the_cli(db: str, monkeypatch, capsys) -> None:
    cfg = {"strategy": "darts", "space": "nb201", **ONESHOT, "final_epochs": 1}
    whole = repo.create_experiment(cfg, name="whole")
    assert run_job(whole, heartbeat=False)["status"] == "succeeded"
    exp_id = repo.create_experiment(cfg, name="dies in epoch 3")

    from nas_core.strategies.oneshot import OneShotStrategy

    original, calls = OneShotStrategy.begin_epoch, []

    def dies_in_epoch_3(self, loop, epoch):  # as if the worker's machine went down
        calls.append(epoch)
        if epoch == 2:
            raise RuntimeError("machine went down")
        return original(self, loop, epoch)

    monkeypatch.setattr(OneShotStrategy, "begin_epoch", dies_in_epoch_3)
    assert run_job(exp_id, heartbeat=False)["status"] == "failed"
    monkeypatch.setattr(OneShotStrategy, "begin_epoch", original)
    assert checkpoint_info(repo.experiment_workdir(exp_id))["epochs_done"] == 2

    _resume_offered_then_queued(exp_id, "Resume from epoch 2/3", "resumed from the search's last checkpoint", capsys)
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded"

    a, b = repo.get_experiment(whole), repo.get_experiment(exp_id)
    assert b["genotype"] == a["genotype"]
    alphas_a, alphas_b = repo.alphas_df(whole), repo.alphas_df(exp_id)
    assert len(alphas_b) == len(alphas_a)
    assert list(alphas_b["weight"]) == list(alphas_a["weight"])  # one unbroken search on the chart
    assert checkpoint_info(repo.experiment_workdir(exp_id)) is None
    logs = list(repo.logs_df(exp_id, tail=None)["message"])
    assert any(m.startswith("resumed from the checkpoint after epoch 2/3") for m in logs)


def test_a_run_stopped_in_final_training_keeps_its_finished_search(tmp_path) -> None:
    cfg = ExperimentConfig(strategy="darts", space="nb201", **{**ONESHOT, "final_epochs": 1}).validated()
    whole = MemoryReporter(workdir=tmp_path / "whole")
    res = run_experiment(cfg, whole)
    steps = whole.genotypes[0][0]
    cut = MemoryReporter(workdir=tmp_path / "cut", stop_after_steps=3 * steps + steps // 2)  # in final training
    with pytest.raises(Cancelled):
        run_experiment(cfg, cut)
    assert checkpoint_info(cut.workdir)["epochs_done"] == 3
    again = MemoryReporter(workdir=tmp_path / "cut")
    res2 = run_experiment(cfg, again, resume=True)
    assert any(m.startswith("resumed from the checkpoint after epoch 3/3") for _, _, m in again.logs)
    assert not [e for _, p, e, _ in again.progresses if p == "search" and e < 3]  # no search step taken again
    assert (res2.genotype, res2.accuracy) == (res.genotype, res.accuracy)
