"""Runs one experiment's job against the database: the glue between the engine and storage.

The worker's child process and the CLI's foreground ``search`` both call :func:`run_job`; the engine
only ever sees a :class:`DBReporter`, which buffers what it is told and writes it in one short
transaction at most about once a second, so neither the training loop nor the dashboard waits on it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Self, TextIO

from nas_core.reporting import ArchitectureRecord, Cancelled
from storage import repo
from storage.models import utcnow

FLUSH_INTERVAL_S = 1.0
CANCEL_CHECK_INTERVAL_S = 1.0
JOB_HEARTBEAT_S = 2.0


class DBReporter:
    """A :class:`nas_core.reporting.Reporter` that batches rows into the experiment's tables."""

    def __init__(
        self,
        experiment_id: int,
        url: str | None = None,
        workdir: Path | None = None,
        *,
        flush_interval: float = FLUSH_INTERVAL_S,
        cancel_interval: float = CANCEL_CHECK_INTERVAL_S,
        echo: TextIO | None = None,
    ) -> None:
        self.experiment_id = int(experiment_id)
        self.url = url
        self.workdir = Path(workdir) if workdir is not None else repo.experiment_workdir(self.experiment_id)
        self.flush_interval = flush_interval
        self.cancel_interval = cancel_interval
        self.echo = echo
        self.flushes = 0  # number of transactions written (tests check batching with it)
        self._lock = threading.RLock()
        self._logs: list[dict[str, Any]] = []
        self._epochs: list[dict[str, Any]] = []
        self._alphas: list[dict[str, Any]] = []
        self._genotypes: list[dict[str, Any]] = []
        self._architectures: list[dict[str, Any]] = []
        self._artifacts: list[dict[str, Any]] = []
        self._progress: dict[str, Any] | None = None
        self._last_flush = time.monotonic()
        self._last_cancel_check = float("-inf")
        self._stop = False

    # -- Reporter protocol -------------------------------------------------------------------------

    def log(self, message: str, level: str = "info") -> None:
        if self.echo is not None:
            print(f"[{level}] {message}", file=self.echo, flush=True)
        with self._lock:
            self._logs.append({"ts": utcnow(), "level": level, "message": str(message)})
        self._maybe_flush()

    def progress(self, fraction: float, phase: str, epoch: int, total_epochs: int) -> None:
        with self._lock:
            self._progress = {"fraction": fraction, "phase": phase, "epoch": epoch, "total_epochs": total_epochs}
        self._maybe_flush()

    def epoch(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        with self._lock:
            self._epochs.append({"phase": phase, "epoch": epoch, **metrics})
        self._maybe_flush()

    def alphas(self, step: int, epoch: int, rows: list[tuple[str, str, str, float]]) -> None:
        with self._lock:
            self._alphas.extend(
                {"step": step, "epoch": epoch, "cell": c, "edge": e, "op": o, "weight": float(w)} for c, e, o, w in rows
            )
        self._maybe_flush()

    def genotype(self, step: int, epoch: int, genotype: str) -> None:
        with self._lock:
            self._genotypes.append({"step": step, "epoch": epoch, "genotype": genotype})
        self._maybe_flush()

    def architecture(self, record: ArchitectureRecord) -> None:
        row = {k: getattr(record, k) for k in record.__dataclass_fields__}
        with self._lock:
            self._architectures.append(row)
        self._maybe_flush()

    def artifact(self, kind: str, path: str, checksum: str = "") -> None:
        with self._lock:
            self._artifacts.append({"kind": kind, "path": str(path), "checksum": checksum})
        self._maybe_flush()

    def should_stop(self) -> bool:
        """True once a cancel was requested; asks the database at most once per ``cancel_interval``."""
        if self._stop:
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= self.cancel_interval:
            self._last_cancel_check = now
            try:
                self._stop = repo.is_cancel_requested(self.experiment_id, url=self.url)
            except Exception as exc:  # noqa: BLE001 - a busy database must not kill the run
                print(f"warning: could not check the cancel flag: {exc}", file=sys.stderr)
        return self._stop

    def flush(self) -> None:
        """Write everything buffered now, in one transaction; on error the rows stay buffered."""
        with self._lock:
            batch = {
                "logs": self._logs,
                "epochs": self._epochs,
                "alphas": self._alphas,
                "genotypes": self._genotypes,
                "architectures": self._architectures,
                "artifacts": self._artifacts,
                "progress": self._progress,
            }
            self._last_flush = time.monotonic()
            if not any(batch.values()):
                return
            self._logs, self._epochs, self._alphas, self._genotypes = [], [], [], []
            self._architectures, self._artifacts, self._progress = [], [], None
            try:
                repo.write_batch(self.experiment_id, url=self.url, **batch)
            except BaseException:
                self._logs[:0] = batch["logs"]
                self._epochs[:0] = batch["epochs"]
                self._alphas[:0] = batch["alphas"]
                self._genotypes[:0] = batch["genotypes"]
                self._architectures[:0] = batch["architectures"]
                self._artifacts[:0] = batch["artifacts"]
                self._progress = self._progress or batch["progress"]
                raise
            self.flushes += 1

    # -- internals ---------------------------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush < self.flush_interval:
            return
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - keep training; the rows are retried at the next flush
            print(f"warning: could not write progress to the database (will retry): {exc}", file=sys.stderr)


def one_line_error(exc: BaseException) -> str:
    """A message a person can read in a table cell: type, first line of the text, where it happened."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    msg = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        msg += f" (at {Path(last.filename).name}:{last.lineno})"
    return msg[:500]


class _JobHeartbeat:
    """Keeps a foreground job's heartbeat fresh so no worker mistakes it for a dead one."""

    def __init__(self, job_id: int, url: str | None, interval: float = JOB_HEARTBEAT_S) -> None:
        self._job_id, self._url, self._interval = job_id, url, interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-{job_id}-heartbeat", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                repo.heartbeat_job(self._job_id, url=self._url)
            except Exception as exc:  # noqa: BLE001 - retried at the next beat
                print(f"warning: job heartbeat failed: {exc}", file=sys.stderr)


def _summary(experiment_id: int, status: str, result: dict[str, Any] | None, error: str | None) -> dict[str, Any]:
    result = result or {}
    return {
        "experiment_id": int(experiment_id),
        "status": status,
        "genotype": result.get("genotype"),
        "accuracy": result.get("accuracy"),
        "accuracy_kind": result.get("accuracy_kind"),
        "macs": result.get("macs"),
        "params": result.get("params"),
        "latency_ms": result.get("latency_ms"),
        "error": error,
    }


def run_job(
    experiment_id: int,
    url: str | None = None,
    *,
    job_id: int | None = None,
    heartbeat: bool = True,
    echo: TextIO | None = None,
) -> dict[str, Any]:
    """Run one experiment to its end and store how it ended; returns a summary dict.

    Status becomes succeeded, cancelled (the engine raised Cancelled) or failed (traceback kept in
    the database, a one-line message for the UI). ``heartbeat`` keeps the job's heartbeat fresh from
    a thread; the worker passes False because its parent process heartbeats for the child.
    Raises KeyError if the experiment does not exist.
    """
    from nas_core.config import ConfigError, ExperimentConfig

    exp = repo.get_experiment(experiment_id, url=url)
    if exp is None:
        raise KeyError(f"no experiment with id {experiment_id}")
    job_id = job_id if job_id is not None else exp.get("job_id")
    workdir = repo.experiment_workdir(experiment_id)
    workdir.mkdir(parents=True, exist_ok=True)
    reporter = DBReporter(experiment_id, url, workdir, echo=echo)
    repo.start_experiment(experiment_id, job_id=job_id, device=_device(), url=url)

    def finish(status: str, **kw: Any) -> None:
        try:
            reporter.flush()
        except Exception as exc:  # noqa: BLE001 - the final status matters more than the last rows
            print(f"warning: could not write the last rows: {exc}", file=sys.stderr)
        repo.finish_job(experiment_id, status, job_id=job_id, url=url, **kw)

    with contextlib.ExitStack() as stack:
        if heartbeat and job_id is not None:
            stack.enter_context(_JobHeartbeat(job_id, url))
        try:
            cfg = ExperimentConfig.from_dict(exp["config"])
        except ConfigError as exc:
            msg = f"invalid configuration: {exc}"
            reporter.log(msg, "error")
            finish("failed", error=msg, traceback=traceback.format_exc())
            return _summary(experiment_id, "failed", None, msg)
        try:
            from nas_core.pipeline import run_experiment

            res = run_experiment(cfg, reporter)
        except Cancelled:
            reporter.log("cancelled on request", "warning")
            finish("cancelled", message="cancelled on request")
            return _summary(experiment_id, "cancelled", None, None)
        except KeyboardInterrupt:
            reporter.log("stopped by Ctrl-C", "warning")
            finish("cancelled", message="stopped by Ctrl-C")
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the run is recorded, not propagated
            msg = one_line_error(exc)
            reporter.log(msg, "error")
            finish("failed", error=msg, traceback=traceback.format_exc())
            return _summary(experiment_id, "failed", None, msg)
        result = res.to_dict() if hasattr(res, "to_dict") else dict(vars(res))
        status = result.get("status") if result.get("status") in ("succeeded", "cancelled") else "succeeded"
        finish(status, result=result)
        return _summary(experiment_id, status, result, None)


def _device() -> str | None:
    """The device the pipeline runs on (it trains on the CPU); refined from the result when it ends."""
    try:
        from nas_core.metrics import device_name

        return device_name("cpu")
    except Exception:  # noqa: BLE001 - only a label; a broken import is reported by the run itself
        return None
