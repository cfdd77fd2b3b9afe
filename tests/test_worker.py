"""Jobs and workers against a real SQLite file and real worker processes running the real pipeline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nas_core.errors import Cancelled
from nas_core.reporting import ArchitectureRecord
from nas_service import jobs
from nas_service.worker import Worker, _pid_alive, ensure_local_worker
from storage import repo

ROOT = Path(__file__).resolve().parents[1]

#: The smallest real run: one search epoch and one final epoch on a few hundred synthetic images.
TINY = {
    "strategy": "darts",
    "space": "nb201",
    "dataset": "synthetic",
    "epochs": 1,
    "final_epochs": 1,
    "batch_size": 64,
    "channels": 2,
    "final_channels": 2,
    "threads": 1,
    "val_fraction": 0.35,
    "test_fraction": 0.35,
}
#: A run long enough to be caught while running (cancel, kill).
LONG = TINY | {"epochs": 500}


@pytest.fixture
def procs() -> Iterator[Callable[..., subprocess.Popen]]:
    """Start processes for a test and make sure every one of them (and its job child) is gone after."""
    started: list[subprocess.Popen] = []
    extra_pids: list[int] = []

    def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-m", "nas_core", *args],
            cwd=ROOT,
            env=env or _env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(p)
        return p

    start.extra_pids = extra_pids  # type: ignore[attr-defined]
    yield start
    for p in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    for pid in extra_pids:
        _kill_pid(pid)


def _kill_pid(pid: int | None) -> None:
    if pid and _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: not _pid_alive(pid), 10, f"pid {pid} to exit")


def _env(**extra: str) -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _wait_for(cond: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}:\n{proc.stdout.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _status(exp_id: int) -> str:
    return repo.get_experiment(exp_id)["status"]


# --------------------------------------------------------------------------------------------------
# DBReporter


def test_db_reporter_buffers_until_flush(db: str, tmp_path: Path) -> None:
    exp_id = repo.create_experiment(TINY)
    rep = jobs.DBReporter(exp_id, flush_interval=3600)
    assert rep.workdir == tmp_path / "runs" / f"exp_{exp_id:05d}"
    rep.log("hello")
    rep.progress(0.25, "search", 1, 4)
    rep.epoch("search", 0, {"train_loss": 1.0, "val_acc": 0.5})
    rep.alphas(3, 0, [("cell", "1<-0", "none", 0.2), ("cell", "1<-0", "skip_connect", 0.8)])
    rep.genotype(3, 0, "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    rep.architecture(ArchitectureRecord("g", "nb201", 0.5, "supernet-val", params=3, macs=4, extra={"k": 1}))
    rep.artifact("checkpoint", "/tmp/x.pt", "abc")
    assert repo.logs_df(exp_id).empty and repo.alphas_df(exp_id).empty  # nothing written yet
    rep.flush()
    assert rep.flushes == 1
    assert repo.logs_df(exp_id)["message"].tolist() == ["hello"]
    assert len(repo.epochs_df(exp_id)) == 1 and len(repo.alphas_df(exp_id)) == 2
    assert len(repo.genotypes_df(exp_id)) == 1 and len(repo.artifacts_df(exp_id)) == 1
    arch = repo.architectures_df([exp_id])
    assert arch[["accuracy", "params", "macs"]].values.tolist() == [[0.5, 3.0, 4.0]]
    exp = repo.get_experiment(exp_id)
    assert (exp["progress"], exp["phase"], exp["epoch"], exp["total_epochs"]) == (0.25, "search", 1, 4)
    rep.flush()
    assert rep.flushes == 1  # nothing new: no transaction


def test_db_reporter_writes_at_most_about_once_a_second(db: str) -> None:
    exp_id = repo.create_experiment(TINY)
    rep = jobs.DBReporter(exp_id, flush_interval=0.3)
    calls = 0
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        rep.alphas(calls, 0, [("cell", "1<-0", "none", 0.5)])
        calls += 1
        time.sleep(0.002)
    rep.flush()
    assert calls > 20
    assert rep.flushes <= 6  # ~1 s / 0.3 s, plus the final flush
    assert len(repo.alphas_df(exp_id)) == calls


def test_should_stop_polls_the_database_at_most_once_per_interval(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exp_id = repo.create_experiment(TINY)
    rep = jobs.DBReporter(exp_id, cancel_interval=0.3)
    checks = []
    real = repo.is_cancel_requested
    monkeypatch.setattr(repo, "is_cancel_requested", lambda *a, **k: checks.append(1) or real(*a, **k))
    assert not any(rep.should_stop() for _ in range(1000))
    assert len(checks) == 1
    repo.request_cancel(exp_id)
    assert _wait_for(rep.should_stop, 5, "should_stop to see the cancel")
    assert rep.should_stop()  # stays True


# --------------------------------------------------------------------------------------------------
# run_job outcomes (the pipeline is replaced only to force each outcome)


def _claimed(config: dict[str, Any] = TINY) -> int:
    exp_id = repo.create_experiment(config)
    assert repo.claim_job("test")["experiment_id"] == exp_id
    return exp_id


def test_run_job_failure_keeps_traceback_and_one_line_message(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas_core.pipeline

    def broken(cfg: Any, reporter: Any, replay: Any = None, resume: bool = False) -> None:
        reporter.log("about to fail")
        raise RuntimeError("shape mismatch\nsecond line of detail")

    monkeypatch.setattr(nas_core.pipeline, "run_experiment", broken)
    exp_id = _claimed()
    out = jobs.run_job(exp_id)
    assert out["status"] == "failed"
    exp = repo.get_experiment(exp_id)
    assert exp["status"] == "failed" and exp["job_status"] == "failed"
    assert exp["error"].startswith("RuntimeError: shape mismatch (at test_worker.py:")
    assert "\n" not in exp["error"]
    assert "Traceback (most recent call last)" in exp["traceback"] and "second line of detail" in exp["traceback"]
    assert repo.logs_df(exp_id)["message"].tolist()[:1] == ["about to fail"]


def test_run_job_invalid_config_fails_with_field_name(db: str) -> None:
    exp_id = _claimed(TINY | {"epochs": 0})
    assert jobs.run_job(exp_id)["status"] == "failed"
    assert "epochs" in repo.get_experiment(exp_id)["error"]


def test_run_job_cancelled(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import nas_core.pipeline

    def waits_for_cancel(cfg: Any, reporter: Any, replay: Any = None, resume: bool = False) -> None:
        while not reporter.should_stop():
            time.sleep(0.05)
        raise Cancelled("cancel requested")

    monkeypatch.setattr(nas_core.pipeline, "run_experiment", waits_for_cancel)
    exp_id = _claimed()
    threading.Timer(0.3, repo.request_cancel, args=(exp_id,)).start()
    assert jobs.run_job(exp_id)["status"] == "cancelled"
    assert _status(exp_id) == "cancelled"


def test_run_job_unknown_experiment(db: str) -> None:
    with pytest.raises(KeyError):
        jobs.run_job(404)


# --------------------------------------------------------------------------------------------------
# the worker's process handling (targets are stand-ins for the job process; no pipeline involved)


def _sleep_forever(experiment_id: int, job_id: int, url: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        time.sleep(1)


def _crash(experiment_id: int, job_id: int, url: str) -> None:
    os._exit(3)


def _cancel_once_running(exp_id: int) -> threading.Thread:
    def run() -> None:
        _wait_for(lambda: repo.get_experiment(exp_id)["pid"], 60, "the job process")
        repo.request_cancel(exp_id)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_worker_terminates_a_job_that_ignores_cancel(db: str) -> None:
    exp_id = repo.create_experiment(TINY)
    worker = Worker(once=True, poll=0.1, cancel_grace_s=1.0, target=_sleep_forever)
    canceller = _cancel_once_running(exp_id)
    t0 = time.monotonic()
    worker.run()
    canceller.join(5)
    exp = repo.get_experiment(exp_id)
    assert exp["status"] == "cancelled" and "terminated" in exp["message"]
    assert not _pid_alive(exp["pid"])
    assert time.monotonic() - t0 < 30


def test_worker_survives_a_crashing_job(db: str) -> None:
    first = repo.create_experiment(TINY)
    second = repo.create_experiment(TINY)
    worker = Worker(idle_exit=0.5, poll=0.1, target=_crash)
    worker.run()
    assert worker.jobs_run == 2
    for exp_id in (first, second):
        exp = repo.get_experiment(exp_id)
        assert exp["status"] == "failed" and "exit code 3" in exp["error"]


# --------------------------------------------------------------------------------------------------
# end to end: real worker processes, real pipeline


@pytest.mark.slow
def test_submit_then_worker_runs_it_to_success(db: str, procs: Callable[..., subprocess.Popen]) -> None:
    exp_id = repo.create_experiment(TINY, name="e2e")
    worker = procs("worker", "--once", "--poll", "0.2")
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out
    exp = repo.get_experiment(exp_id)
    assert exp["status"] == "succeeded", (exp["error"], exp["traceback"], out)
    assert exp["progress"] == 1.0 and exp["genotype"].count("~") == 6
    assert 0.0 <= exp["best_accuracy"] <= 1.0 and exp["accuracy_kind"] == "test"
    assert exp["macs"] > 0 and exp["params"] > 0 and exp["latency_ms"] > 0
    assert exp["device"] and exp["attempts"] == 1
    epochs = repo.epochs_df(exp_id)
    assert set(epochs["phase"]) == {"search", "train"}
    alphas = repo.alphas_df(exp_id)
    assert len(alphas) > 0 and alphas["op"].nunique() == 5 and alphas["edge"].nunique() == 6
    arch = repo.architectures_df([exp_id])
    assert len(arch) == 1 and arch["genotype"].iloc[0] == exp["genotype"]
    assert arch["latency_threads"].iloc[0] == 1 and arch["experiment_name"].iloc[0] == "e2e"
    kinds = set(repo.artifacts_df(exp_id)["kind"])
    assert {"genotype_json", "checkpoint", "torchscript"} <= kinds
    assert all(Path(p).is_file() for p in repo.artifacts_df(exp_id)["path"])
    assert not repo.genotypes_df(exp_id).empty and not repo.logs_df(exp_id).empty
    assert repo.alive_workers().empty  # it unregistered on exit


@pytest.mark.slow
def test_cancel_a_running_job(db: str, procs: Callable[..., subprocess.Popen]) -> None:
    exp_id = repo.create_experiment(LONG)
    worker = procs("worker", "--poll", "0.2", env=_env(NAS_CANCEL_GRACE_S="60"))
    _wait_for(lambda: not repo.logs_df(exp_id).empty, 90, "the run to start", worker)
    procs.extra_pids.append(repo.get_experiment(exp_id)["pid"])  # type: ignore[attr-defined]
    assert repo.request_cancel(exp_id)
    _wait_for(lambda: _status(exp_id) == "cancelled", 30, "the job to be cancelled", worker)
    exp = repo.get_experiment(exp_id)
    assert exp["message"] == "cancelled on request"  # the job stopped itself, no termination needed
    assert exp["job_status"] == "cancelled"
    _wait_for(lambda: not _pid_alive(exp["pid"]), 10, "the job process to exit")
    assert worker.poll() is None  # the worker keeps serving
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0, out


@pytest.mark.slow
def test_killed_worker_leaves_its_job_interrupted(db: str, procs: Callable[..., subprocess.Popen]) -> None:
    exp_id = repo.create_experiment(LONG)
    doomed = procs("worker", "--poll", "0.2")
    exp = _wait_for(
        lambda: (e := repo.get_experiment(exp_id))["status"] == "running" and e["pid"] and e, 60, "the job", doomed
    )
    procs.extra_pids.append(exp["pid"])  # type: ignore[attr-defined]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    # the job process notices that its parent died and exits, so the job's heartbeat stops
    _wait_for(lambda: not _pid_alive(exp["pid"]), 15, "the orphaned job process to exit")
    assert _status(exp_id) == "running"
    rescuer = procs("worker", "--poll", "0.2", "--idle-exit", "60", env=_env(NAS_STALE_S="3"))
    _wait_for(lambda: _status(exp_id) == "interrupted", 45, "the job to be marked interrupted", rescuer)
    exp = repo.get_experiment(exp_id)
    assert exp["job_status"] == "interrupted" and "stopped responding" in exp["error"]
    rescuer.send_signal(signal.SIGTERM)
    out, _ = rescuer.communicate(timeout=20)
    assert rescuer.returncode == 0, out


# --------------------------------------------------------------------------------------------------
# autostart


def test_ensure_local_worker(db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ensure_local_worker() is None  # NAS_NO_AUTOSTART=1
    monkeypatch.delenv("NAS_NO_AUTOSTART")
    pid = ensure_local_worker()
    assert pid is not None
    try:
        assert ensure_local_worker() is None  # still starting: no second worker
        _wait_for(lambda: not repo.alive_workers().empty, 60, "the autostarted worker to register")
        assert repo.alive_workers()["pid"].tolist() == [pid]
        assert ensure_local_worker() is None
        assert (tmp_path / "runs" / "worker.log").exists()
    finally:
        if _pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        _wait_for(lambda: not _pid_alive(pid), 20, "the autostarted worker to exit")
        os.waitpid(pid, 0)
    assert repo.alive_workers().empty


@pytest.mark.slow
def test_two_workers_share_one_postgresql(
    postgres_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, procs: Callable[..., subprocess.Popen]
) -> None:
    """The multi-machine set-up (many workers, one PostgreSQL), here on one machine: two real worker processes
    drain one queue of real runs; each run is claimed once (``FOR UPDATE SKIP LOCKED``), both workers take part,
    and every run lands whole: result, epochs, architecture row, artifacts."""
    url = postgres_server.url("workers")
    monkeypatch.setenv("NAS_DB_URL", url)
    monkeypatch.setenv("NAS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("NAS_NO_AUTOSTART", "1")
    repo.init_db()
    ids = [repo.create_experiment(TINY, name=f"pg-{i}") for i in range(3)]
    workers = [procs("worker", "--poll", "0.2", "--idle-exit", "2") for _ in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=600)
        assert w.returncode == 0, out
    ran_by = set()
    for exp_id in ids:
        exp = repo.get_experiment(exp_id)
        assert exp["status"] == "succeeded", (exp["error"], exp["traceback"])
        assert exp["attempts"] == 1 and exp["genotype"].count("~") == 6
        assert not repo.epochs_df(exp_id).empty and not repo.alphas_df(exp_id).empty
        assert {"genotype_json", "checkpoint"} <= set(repo.artifacts_df(exp_id)["kind"])
        ran_by.add(exp["worker_id"])
    assert len(ran_by) == 2  # both workers ran jobs
    arch = repo.architectures_df(ids)
    assert sorted(arch["experiment_id"]) == ids
    assert repo.alive_workers().empty  # both unregistered on exit
    from storage.db import dispose_engines

    dispose_engines()
