"""The background worker: claims queued jobs and runs each in a child process.

The parent stays small (no PyTorch import) and does the bookkeeping: it heartbeats itself and the
job it runs, watches the cancel flag, and marks jobs of dead workers interrupted. The job itself
runs in a ``spawn``-ed child, so a crash, an out-of-memory kill or a stuck cancel takes down only
that child. The child exits on its own when the parent dies, so a killed worker stops heartbeating
its job and the job is seen as interrupted.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from storage import repo
from storage.db import resolve_url
from storage.models import ACTIVE_STATES
from storage.settings import runs_dir

log = logging.getLogger("nas_service.worker")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STALE_S = 20.0
DEFAULT_CANCEL_GRACE_S = 10.0
HEARTBEAT_S = 2.0
AUTOSTART_PENDING_S = 60.0  # a worker we started this long ago may still be importing; don't start another


def stale_seconds() -> float:
    """Heartbeat age after which a running job counts as orphaned (env NAS_STALE_S, default 20 s)."""
    return _env_float("NAS_STALE_S", DEFAULT_STALE_S)


def cancel_grace_seconds() -> float:
    """How long a cancelled job may take to stop by itself before it is terminated (NAS_CANCEL_GRACE_S)."""
    return _env_float("NAS_CANCEL_GRACE_S", DEFAULT_CANCEL_GRACE_S)


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


def _child_main(experiment_id: int, job_id: int, url: str) -> None:
    """Entry point of the job process: run the job, and die with the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's to handle
    _exit_with_parent()
    from nas_service.jobs import run_job

    run_job(experiment_id, url, job_id=job_id, heartbeat=False)


def _exit_with_parent() -> None:
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Worker:
    """One worker loop; ``python -m nas_core worker`` builds one and calls :meth:`run`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        poll: float = 1.0,
        idle_exit: float | None = None,
        once: bool = False,
        stale_s: float | None = None,
        cancel_grace_s: float | None = None,
        target: Callable[[int, int, str], Any] = _child_main,
    ) -> None:
        self.url = resolve_url(url)
        self.poll = max(0.05, poll)
        self.idle_exit = idle_exit
        self.once = once
        self.stale_s = stale_s if stale_s is not None else stale_seconds()
        self.cancel_grace_s = cancel_grace_s if cancel_grace_s is not None else cancel_grace_seconds()
        self.heartbeat_s = min(HEARTBEAT_S, max(0.2, self.stale_s / 4))
        self.target = target
        self.host = socket.gethostname()
        self.id = f"{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.jobs_run = 0
        self._stopping = False
        self._current: int | None = None
        self._last_beat = float("-inf")
        self._last_stale_check = float("-inf")

    # -- main loop ---------------------------------------------------------------------------------

    def run(self) -> int:
        """Serve the queue until told to stop (signal, --once, --idle-exit); returns an exit code."""
        repo.init_db(self.url)
        repo.register_worker(self.id, self.host, os.getpid(), url=self.url)
        previous = self._install_signals()
        log.info("worker %s started (db %s)", self.id, _safe_url(self.url))
        idle_since = time.monotonic()
        try:
            self._tick(force_stale=True)
            while not self._stopping:
                try:
                    job = repo.claim_job(self.id, url=self.url)
                except Exception as exc:  # noqa: BLE001 - a locked or unreachable database: wait and retry
                    log.warning("could not poll the queue: %s", exc)
                    job = None
                if job is not None:
                    try:
                        self._run_job(job["job_id"], job["experiment_id"])
                    except Exception as exc:  # noqa: BLE001 - one broken job must not stop the worker
                        log.exception("job %d: the worker failed to run it", job["job_id"])
                        with contextlib.suppress(Exception):
                            repo.finish_job(
                                job["experiment_id"],
                                "failed",
                                job_id=job["job_id"],
                                only_if_running=True,
                                error=f"the worker could not run the job: {type(exc).__name__}: {exc}"[:500],
                                url=self.url,
                            )
                    self.jobs_run += 1
                    idle_since = time.monotonic()
                    if self.once:
                        break
                    continue
                if self.once:
                    log.info("queue empty; --once: exiting")
                    break
                if self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit:
                    log.info("idle for %.0f s; exiting", self.idle_exit)
                    break
                self._sleep(self.poll)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            with contextlib.suppress(Exception):
                repo.unregister_worker(self.id, url=self.url)
            log.info("worker %s stopped after %d job(s)", self.id, self.jobs_run)
        return 0

    def stop(self) -> None:
        self._stopping = True

    def _install_signals(self) -> dict[int, Any]:
        """SIGTERM/SIGINT stop the loop gracefully; returns the previous handlers to restore."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self._stopping = True

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < end:
            self._tick()
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _tick(self, force_stale: bool = False) -> None:
        """Heartbeat and orphan check when due; database hiccups are logged, never fatal."""
        now = time.monotonic()
        try:
            if now - self._last_beat >= self.heartbeat_s:
                self._last_beat = now
                repo.heartbeat_worker(self.id, self._current, url=self.url)
            if force_stale or now - self._last_stale_check >= max(0.5, self.stale_s / 2):
                self._last_stale_check = now
                for exp_id in repo.mark_stale_interrupted(self.stale_s, url=self.url):
                    log.warning("experiment %d: its worker stopped responding; marked interrupted", exp_id)
        except Exception as exc:  # noqa: BLE001 - bookkeeping is retried at the next tick
            log.warning("database unavailable for bookkeeping: %s", exc)

    # -- one job -----------------------------------------------------------------------------------

    def _run_job(self, job_id: int, experiment_id: int) -> None:
        log.info("job %d: running experiment %d", job_id, experiment_id)
        ctx = mp.get_context("spawn")
        proc = ctx.Process(
            target=self.target, args=(experiment_id, job_id, self.url), name=f"nas-job-{job_id}", daemon=False
        )
        self._current = job_id
        self._last_beat = float("-inf")
        proc.start()
        try:
            repo.set_job_pid(job_id, proc.pid or 0, url=self.url)
            cancel_seen: float | None = None
            last_cancel_check = float("-inf")
            while True:
                proc.join(timeout=0.25)
                if not proc.is_alive():
                    break
                self._tick()
                now = time.monotonic()
                if self._stopping:
                    log.warning("job %d: worker stopping; terminating the job", job_id)
                    _terminate(proc)
                    repo.finish_job(
                        experiment_id,
                        "interrupted",
                        job_id=job_id,
                        only_if_running=True,
                        error="the worker was stopped while this job ran",
                        url=self.url,
                    )
                    break
                if cancel_seen is None and now - last_cancel_check >= 1.0:
                    last_cancel_check = now
                    with contextlib.suppress(Exception):
                        if repo.is_cancel_requested(experiment_id, url=self.url):
                            cancel_seen = now
                            log.info("job %d: cancel requested", job_id)
                if cancel_seen is not None and now - cancel_seen >= self.cancel_grace_s:
                    log.warning(
                        "job %d: did not stop within %.0f s of cancel; terminating", job_id, self.cancel_grace_s
                    )
                    _terminate(proc)
                    repo.finish_job(
                        experiment_id,
                        "cancelled",
                        job_id=job_id,
                        only_if_running=True,
                        message=f"cancelled (terminated after {self.cancel_grace_s:.0f} s grace)",
                        url=self.url,
                    )
                    break
            proc.join()
            code = proc.exitcode
            if repo.job_status(job_id, url=self.url) in ACTIVE_STATES:
                how = (
                    f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
                )
                msg = f"the job process ended without reporting a result ({how}); see worker.log"
                repo.finish_job(experiment_id, "failed", job_id=job_id, only_if_running=True, error=msg, url=self.url)
                log.error("job %d: %s", job_id, msg)
            log.info("job %d: finished with status %s", job_id, repo.job_status(job_id, url=self.url))
        finally:
            if proc.is_alive():
                _terminate(proc)
            self._current = None
            self._last_beat = float("-inf")
            self._tick()


def _terminate(proc: Any, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if the process has not exited after ``grace`` seconds."""
    if not proc.is_alive():
        return
    proc.terminate()
    proc.join(grace)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a log line
        return "<db>"


# --------------------------------------------------------------------------------------------------
# autostart (the dashboard calls this)


def _autostart_disabled() -> bool:
    return os.environ.get("NAS_NO_AUTOSTART", "").strip().lower() in ("1", "true", "yes", "on")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def ensure_local_worker(url: str | None = None) -> int | None:
    """Start a detached local worker unless one heartbeated recently; returns the new worker's pid.

    Returns None when autostart is off (env NAS_NO_AUTOSTART=1), when a worker is alive, or when
    one started by an earlier call is still starting up. The worker outlives the caller (new session)
    and writes to ``<runs>/worker.log``.
    """
    if _autostart_disabled():
        return None
    url = resolve_url(url)
    if not repo.alive_workers(max_age_s=max(10.0, stale_seconds()), url=url).empty:
        return None
    folder = runs_dir()
    with _file_lock(folder / "worker.lock"):
        pidfile = folder / "worker.pid"
        try:
            pid_text, started_text = pidfile.read_text().split()[:2]
            if _pid_alive(int(pid_text)) and time.time() - float(started_text) < AUTOSTART_PENDING_S:
                return None
        except (OSError, ValueError):
            pass
        env = os.environ.copy()
        env["NAS_DB_URL"] = url
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
        with open(folder / "worker.log", "ab") as logf:
            proc = subprocess.Popen(
                [sys.executable, "-m", "nas_service", "worker"],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(PROJECT_ROOT),
                env=env,
            )
        pidfile.write_text(f"{proc.pid} {time.time()}\n")
        return proc.pid


@contextlib.contextmanager
def _file_lock(path: Path) -> Any:
    """An exclusive lock between processes on this host (two dashboard sessions starting workers)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def main(url: str | None = None, *, once: bool = False, poll: float = 1.0, idle_exit: float | None = None) -> int:
    """Run a worker in this process (the CLI's ``worker`` subcommand)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return Worker(url, once=once, poll=poll, idle_exit=idle_exit).run()
