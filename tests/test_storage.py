"""Storage against a real SQLite file and a real PostgreSQL server: migrations, atomic claims (threads and
processes), batched writes, the DataFrame contract. Every test taking ``db`` or ``backend`` runs on both."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import inspect, text, update

from storage import repo
from storage.db import dispose_engines, get_engine, session
from storage.models import Base, Job

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"strategy": "darts", "space": "nb201", "dataset": "synthetic", "epochs": 3, "name": "cfg-name"}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a fresh SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nas.db'}"
        return
    url = request.getfixturevalue("postgres_server").url(f"t_{uuid.uuid4().hex[:12]}")
    yield url
    dispose_engines()  # this process's pooled connections to it


@pytest.fixture
def db(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NAS_DB_URL", backend)
    monkeypatch.setenv("NAS_RUNS_DIR", str(tmp_path / "runs"))
    repo.init_db()
    return backend


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = os.environ.copy()
    env.update(
        NAS_DB_URL=url,
        NAS_RUNS_DIR=str(tmp_path / "runs"),
        NAS_NO_AUTOSTART="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def _run_parallel(script: str, tmp_path: Path, url: str, args: list[list[str]], timeout: float = 60) -> list[str]:
    """Run one process per argument list, released together once all have imported; return their stdout.

    Each script gets ``sys.argv[1]`` (a folder): it must create ``ready-<pid>`` there, then wait for ``go``.
    """
    gate = tmp_path / f"gate-{time.monotonic_ns()}"
    gate.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BARRIER + script, str(gate), *a],
            env=_env(tmp_path, url),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    try:
        deadline = time.monotonic() + timeout
        while len(list(gate.glob("ready-*"))) < len(procs):
            assert time.monotonic() < deadline, "processes did not start"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.02)
        (gate / "go").touch()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


BARRIER = """
import os, sys, time
from pathlib import Path
from storage import repo
_gate = Path(sys.argv[1])
(_gate / f"ready-{os.getpid()}").touch()
while not (_gate / "go").exists():
    time.sleep(0.001)
"""


# --------------------------------------------------------------------------------------------------
# migrations


def test_init_db_creates_schema_and_is_idempotent(db: str, tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    repo.init_db()  # second run: nothing to do, no error
    tables = set(inspect(get_engine(db)).get_table_names())
    expected = {
        "experiments",
        "jobs",
        "workers",
        "epoch_logs",
        "alpha_snapshots",
        "genotype_snapshots",
        "log_lines",
        "architectures",
        "artifacts",
        "alembic_version",
    }
    assert expected <= tables
    head = ScriptDirectory(str(repo.MIGRATIONS_DIR)).get_current_head()
    with get_engine(db).connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head
        if conn.dialect.name != "sqlite":
            return
        assert (tmp_path / "nas.db").exists()
        assert conn.scalar(text("PRAGMA journal_mode")) == "wal"
        assert conn.scalar(text("PRAGMA foreign_keys")) == 1
        assert conn.scalar(text("PRAGMA busy_timeout")) == 30000


def test_migration_matches_models(db: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with get_engine(db).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_default_location_is_runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.settings import db_url, runs_dir

    monkeypatch.delenv("NAS_DB_URL", raising=False)
    monkeypatch.setenv("NAS_RUNS_DIR", str(tmp_path / "fresh" / "runs"))
    assert runs_dir() == (tmp_path / "fresh" / "runs").resolve()
    assert runs_dir().is_dir()
    assert db_url() == f"sqlite:///{(tmp_path / 'fresh' / 'runs' / 'nas.db').resolve()}"


INIT_AND_CLAIM_SCRIPT = """
repo.init_db()
created = [repo.create_experiment({"strategy": "darts"}) for _ in range(6)]
got = []
while (job := repo.claim_job(sys.argv[2])) is not None:
    got.append(job["job_id"])
print(" ".join(map(str, created)), "|", " ".join(map(str, got)))
"""


def test_two_processes_migrate_create_and_claim_at_once(backend: str, tmp_path: Path) -> None:
    """Both migrate a fresh database at the same moment (SQLite's write lock, PostgreSQL's advisory lock), then
    race to queue and claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL): every job runs once."""
    outs = _run_parallel(INIT_AND_CLAIM_SCRIPT, tmp_path, backend, [["a"], ["b"]])
    created = [int(x) for o in outs for x in o.split("|")[0].split()]
    claimed = [int(x) for o in outs for x in o.split("|")[1].split()]
    assert sorted(created) == list(range(1, 13))
    assert sorted(claimed) == list(range(1, 13))  # each job claimed exactly once, by one of the two


# --------------------------------------------------------------------------------------------------
# experiments and jobs


def test_create_list_get(db: str) -> None:
    exp_id = repo.create_experiment(CONFIG)
    df = repo.list_experiments()
    assert list(df.columns) == repo.EXPERIMENT_COLUMNS
    row = df.iloc[0]
    assert (row["id"], row["name"], row["strategy"], row["status"]) == (exp_id, "cfg-name", "darts", "queued")
    assert row["total_epochs"] == 3
    assert str(df["created_at"].dt.tz) == "UTC"
    exp = repo.get_experiment(exp_id)
    assert exp is not None
    assert set(repo.EXPERIMENT_COLUMNS) | {"config", "traceback", "message"} <= set(exp)
    assert exp["config"] == CONFIG
    assert exp["created_at"].tzinfo is not None and exp["created_at"].utcoffset() == timedelta(0)
    assert repo.get_experiment(999) is None
    assert list(repo.list_experiments(url=db).columns) == repo.EXPERIMENT_COLUMNS


def test_empty_frames_have_contract_columns(db: str) -> None:
    assert list(repo.epochs_df(1).columns) == repo.EPOCH_COLUMNS
    assert list(repo.alphas_df(1).columns) == repo.ALPHA_COLUMNS
    assert list(repo.genotypes_df(1).columns) == repo.GENOTYPE_COLUMNS
    assert list(repo.logs_df(1).columns) == repo.LOG_COLUMNS
    assert list(repo.architectures_df().columns) == repo.ARCHITECTURE_COLUMNS
    assert list(repo.artifacts_df(1).columns) == repo.ARTIFACT_COLUMNS
    assert list(repo.alive_workers().columns) == repo.WORKER_COLUMNS
    assert repo.list_experiments().empty


def test_claim_is_atomic_between_threads(db: str) -> None:
    exp_id = repo.create_experiment(CONFIG)
    barrier = threading.Barrier(6)
    results: list[dict | None] = []

    def claim(i: int) -> None:
        barrier.wait()
        results.append(repo.claim_job(f"w{i}"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if r is not None]
    assert len(won) == 1
    assert won[0]["experiment_id"] == exp_id and won[0]["attempts"] == 1
    assert repo.get_experiment(exp_id)["status"] == "running"
    assert repo.claim_job("late") is None


def test_request_cancel(db: str) -> None:
    queued = repo.create_experiment(CONFIG)
    running = repo.create_experiment(CONFIG)
    assert repo.claim_job("w")["experiment_id"] == queued  # oldest first
    # `queued` is now running; make a fresh queued one to cancel before it starts
    waiting = repo.create_experiment(CONFIG)
    assert repo.request_cancel(waiting) is True
    exp = repo.get_experiment(waiting)
    assert exp["status"] == "cancelled" and exp["finished_at"] is not None
    assert repo.request_cancel(queued) is True
    assert repo.get_experiment(queued)["status"] == "running"  # the worker stops it at its next step
    assert repo.is_cancel_requested(queued)
    assert not repo.is_cancel_requested(running)
    repo.finish_job(queued, "cancelled")
    assert repo.request_cancel(queued) is False  # already finished
    assert repo.request_cancel(12345) is False
    assert repo.claim_job("w")["experiment_id"] == running  # the cancelled job is never claimed
    assert repo.claim_job("w") is None


def test_finish_job_stores_result_and_failure(db: str) -> None:
    ok = repo.create_experiment(CONFIG)
    bad = repo.create_experiment(CONFIG)
    repo.claim_job("w")
    repo.claim_job("w")
    result = {
        "genotype": "|a~0|",
        "accuracy": 0.9,
        "accuracy_kind": "test",
        "params": 10,
        "macs": 20,
        "latency_ms": 1.5,
        "device": "CPU (x)",
    }
    assert repo.finish_job(ok, "succeeded", result=result)
    assert repo.finish_job(bad, "failed", error="RuntimeError: boom", traceback="Traceback...\nRuntimeError: boom")
    e = repo.get_experiment(ok)
    assert (e["status"], e["best_accuracy"], e["macs"], e["genotype"], e["progress"]) == (
        "succeeded",
        0.9,
        20,
        "|a~0|",
        1.0,
    )
    assert e["duration_s"] is not None and e["duration_s"] >= 0
    assert e["job_status"] == "succeeded"
    b = repo.get_experiment(bad)
    assert (b["status"], b["error"]) == ("failed", "RuntimeError: boom")
    assert "Traceback" in b["traceback"]
    # the parent's late report must not overwrite the child's
    assert repo.finish_job(ok, "failed", only_if_running=True, error="late") is False
    assert repo.get_experiment(ok)["status"] == "succeeded"
    with pytest.raises(ValueError):
        repo.finish_job(ok, "running")


def test_mark_stale_interrupted(db: str) -> None:
    stale = repo.create_experiment(CONFIG)
    fresh = repo.create_experiment(CONFIG)
    job = repo.claim_job("dead-worker")
    repo.claim_job("live-worker")
    with session(db, write=True) as s:
        s.execute(
            update(Job).where(Job.id == job["job_id"]).values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=60))
        )
    assert repo.mark_stale_interrupted(20) == [stale]
    e = repo.get_experiment(stale)
    assert e["status"] == "interrupted" and "dead-worker" in e["error"]
    assert e["job_status"] == "interrupted"
    assert repo.get_experiment(fresh)["status"] == "running"
    assert "interrupted" in repo.logs_df(stale)["message"].iloc[-1]
    assert repo.mark_stale_interrupted(20) == []
    # an interrupted experiment can be queued again, from scratch
    repo.write_batch(stale, alphas=[{"step": 0, "epoch": 0, "cell": "c", "edge": "e", "op": "o", "weight": 1.0}],
                     series=[{"step": 0, "epoch": 0, "name": "trial/val_acc", "value": 0.5}],
                     events=[{"step": 0, "kind": "trial", "data": {"val_acc": 0.5}}])  # fmt: skip
    assert not repo.events_df(stale).empty and not repo.series_df(stale).empty
    assert repo.retry_experiment(fresh) is None  # still running: refused
    new_job = repo.retry_experiment(stale)
    e = repo.get_experiment(stale)
    assert new_job is not None and (e["status"], e["error"], e["progress"]) == ("queued", None, 0.0)
    assert repo.alphas_df(stale).empty
    assert repo.events_df(stale).empty and repo.series_df(stale).empty  # the new attempt's charts start empty
    claimed = repo.claim_job("w2")
    assert claimed == {"job_id": new_job, "experiment_id": stale, "attempts": 2}


def test_heartbeat_keeps_job_alive_and_workers_listed(db: str) -> None:
    exp_id = repo.create_experiment(CONFIG)
    repo.register_worker("w1", "host", 123)
    job = repo.claim_job("w1")
    with session(db, write=True) as s:
        s.execute(update(Job).values(heartbeat_at=datetime.now(UTC) - timedelta(seconds=60)))
    repo.heartbeat_worker("w1", job["job_id"])
    assert repo.mark_stale_interrupted(20) == []
    workers = repo.alive_workers()
    assert list(workers["id"]) == ["w1"] and workers["current_job"].iloc[0] == job["job_id"]
    assert repo.alive_workers(max_age_s=-1).empty
    repo.unregister_worker("w1")
    assert repo.alive_workers().empty
    assert repo.get_experiment(exp_id)["worker_id"] == "w1"


def test_create_claimed_experiment_is_not_claimable(db: str) -> None:
    exp_id = repo.create_experiment(CONFIG, claimed_by="cli-host-1")
    assert repo.get_experiment(exp_id)["status"] == "running"
    assert repo.claim_job("w") is None


def test_write_batch_and_frames(db: str) -> None:
    exp_id = repo.create_experiment(CONFIG, name="explicit")
    other = repo.create_experiment(CONFIG)
    t0 = datetime.now(UTC)
    repo.write_batch(
        exp_id,
        logs=[{"ts": t0 + timedelta(seconds=i), "level": "info", "message": f"line {i}"} for i in range(5)],
        epochs=[
            {"phase": "search", "epoch": 0, "train_loss": 2.0, "train_acc": 0.1, "val_acc": float("nan"), "lr": 0.1},
            {"phase": "train", "epoch": 0, "train_loss": 1.0, "seconds": 3.0},
        ],
        alphas=[
            {"step": s, "epoch": 0, "cell": "cell", "edge": "1<-0", "op": op, "weight": 0.5}
            for s in range(3)
            for op in ("none", "skip_connect")
        ],
        genotypes=[{"step": 2, "epoch": 0, "genotype": "|skip_connect~0|"}],
        architectures=[
            {
                "genotype": "|skip_connect~0|",
                "space": "nb201",
                "accuracy": 0.5,
                "accuracy_kind": "supernet-val",
                "params": 100,
                "macs": 1000,
                "latency_ms": 0.5,
                "latency_threads": 1,
                "latency_device": "cpu",
                "origin": "search",
                "checkpoint_path": None,
                "extra": {"note": 1},
            },
            {
                "genotype": "|nor_conv_3x3~0|",
                "space": "nb201",
                "accuracy": 0.7,
                "accuracy_kind": "test",
                "params": 200,
                "macs": 3000,
                "latency_ms": None,
                "origin": "final",
            },
        ],
        artifacts=[{"kind": "checkpoint", "path": "/x/model.pt", "checksum": "abc"}],
        progress={"fraction": 0.5, "phase": "search", "epoch": 1, "total_epochs": 3},
    )
    repo.write_batch(
        other, architectures=[{"genotype": "g", "space": "nb201", "accuracy": 0.1, "accuracy_kind": "val"}]
    )

    ep = repo.epochs_df(exp_id)
    assert list(ep.columns) == repo.EPOCH_COLUMNS and len(ep) == 2
    assert pd.isna(ep["val_acc"].iloc[0]) and ep["train_loss"].tolist() == [2.0, 1.0]
    al = repo.alphas_df(exp_id)
    assert list(al.columns) == repo.ALPHA_COLUMNS and len(al) == 6 and al["step"].tolist() == [0, 0, 1, 1, 2, 2]
    assert repo.genotypes_df(exp_id)["genotype"].tolist() == ["|skip_connect~0|"]
    logs = repo.logs_df(exp_id, tail=2)
    assert logs["message"].tolist() == ["line 3", "line 4"] and str(logs["ts"].dt.tz) == "UTC"
    assert len(repo.logs_df(exp_id, tail=None)) == 5
    arch = repo.architectures_df([exp_id])
    assert list(arch.columns) == repo.ARCHITECTURE_COLUMNS and len(arch) == 2
    assert set(arch["experiment_name"]) == {"explicit"} and set(arch["dataset"]) == {"synthetic"}
    assert len(repo.architectures_df()) == 3
    art = repo.artifacts_df(exp_id)
    assert art[["kind", "path", "checksum"]].values.tolist() == [["checkpoint", "/x/model.pt", "abc"]]
    e = repo.get_experiment(exp_id)
    assert (e["progress"], e["phase"], e["epoch"], e["message"]) == (0.5, "search", 1, "line 4")
    # best so far while running comes from the architectures
    assert (e["best_accuracy"], e["accuracy_kind"], e["macs"]) == (0.7, "test", 3000)


def test_delete_experiment_cascades(db: str, tmp_path: Path) -> None:
    exp_id = repo.create_experiment(CONFIG)
    assert repo.delete_experiment(exp_id) is False  # active: refused
    repo.claim_job("w")
    repo.write_batch(
        exp_id,
        logs=[{"message": "x"}],
        alphas=[{"step": 0, "epoch": 0, "cell": "c", "edge": "e", "op": "o", "weight": 1}],
    )
    repo.finish_job(exp_id, "failed", error="x")
    workdir = repo.experiment_workdir(exp_id)
    workdir.mkdir(parents=True)
    assert repo.delete_experiment(exp_id, remove_files=True) is True
    assert repo.get_experiment(exp_id) is None
    assert repo.alphas_df(exp_id).empty and repo.logs_df(exp_id).empty
    assert not workdir.exists()
