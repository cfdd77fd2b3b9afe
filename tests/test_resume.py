"""Resuming a multi-trial search: the finished trials of the attempt before are reused, not trained again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from streamlit.testing.v1 import AppTest

from nas_core.cli import main
from nas_core.jobs import run_job
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


@pytest.mark.slow
def test_a_resumed_search_reuses_its_finished_trials_and_trains_the_rest(db: str, capsys) -> None:
    cfg = {"strategy": "random", "space": "nb201", **TINY, "params": {"trials": 4}}
    exp_id = repo.create_experiment(cfg, name="resume")
    assert run_job(exp_id, heartbeat=False)["status"] == "succeeded"
    first = _trials(exp_id)
    _interrupt_after(db, exp_id, 2)

    # The Monitor offers Resume beside Run again; the CLI does the same with `retry --resume`.
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page("views/monitor.py")
    at.query_params["id"] = str(exp_id)
    at.run()
    assert not at.exception and [b.label for b in at.button if b.key == "resume"] == ["Resume (2 trials done)"]
    assert main(["retry", str(exp_id), "--resume", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "queued" and out["message"] == "resumed with 2 finished trial(s)"
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
