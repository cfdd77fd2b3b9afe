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

from nas_core.errors import Cancelled
from nas_core.reporting import ArchitectureRecord
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
        self._series: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []
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

    def series(self, step: int, epoch: int, values: dict[str, float]) -> None:
        with self._lock:
            self._series.extend(
                {"step": step, "epoch": epoch, "name": str(k), "value": float(v)} for k, v in values.items()
            )
        self._maybe_flush()

    def event(self, kind: str, step: int, data: dict[str, Any]) -> None:
        with self._lock:
            self._events.append({"step": step, "kind": kind, "data": dict(data)})
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
                "series": self._series,
                "events": self._events,
                "progress": self._progress,
            }
            self._last_flush = time.monotonic()
            if not any(batch.values()):
                return
            self._logs, self._epochs, self._alphas, self._genotypes = [], [], [], []
            self._architectures, self._artifacts, self._progress = [], [], None
            self._series, self._events = [], []
            try:
                repo.write_batch(self.experiment_id, url=self.url, **batch)
            except BaseException:
                self._logs[:0] = batch["logs"]
                self._epochs[:0] = batch["epochs"]
                self._alphas[:0] = batch["alphas"]
                self._genotypes[:0] = batch["genotypes"]
                self._architectures[:0] = batch["architectures"]
                self._artifacts[:0] = batch["artifacts"]
                self._series[:0] = batch["series"]
                self._events[:0] = batch["events"]
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
    from nas_core.config import ExperimentConfig
    from nas_core.errors import ConfigError

    exp = repo.get_experiment(experiment_id, url=url)
    if exp is None:
        raise KeyError(f"no experiment with id {experiment_id}")
    job_id = job_id if job_id is not None else exp.get("job_id")
    workdir = repo.experiment_workdir(experiment_id)
    workdir.mkdir(parents=True, exist_ok=True)
    reporter = DBReporter(experiment_id, url, workdir, echo=echo)
    raw = exp.get("config") or {}
    spec = (raw.get("settings") or {}) if exp.get("kind") == "proxies" else raw
    repo.start_experiment(experiment_id, job_id=job_id, device=_device(spec.get("device", "auto")), url=url)

    def finish(status: str, **kw: Any) -> None:
        try:
            reporter.flush()
        except Exception as exc:  # noqa: BLE001 - the final status matters more than the last rows
            print(f"warning: could not write the last rows: {exc}", file=sys.stderr)
        repo.finish_job(experiment_id, status, job_id=job_id, url=url, **kw)

    with contextlib.ExitStack() as stack:
        if heartbeat and job_id is not None:
            stack.enter_context(_JobHeartbeat(job_id, url))
        if exp.get("kind") == "proxies":
            try:
                result = run_proxies(exp, reporter, url)
            except Cancelled:
                reporter.log("cancelled on request", "warning")
                finish("cancelled", message="cancelled on request")
                return _summary(experiment_id, "cancelled", None, None)
            except Exception as exc:  # noqa: BLE001 - recorded like a failed search
                msg = one_line_error(exc)
                reporter.log(msg, "error")
                finish("failed", error=msg, traceback=traceback.format_exc())
                return _summary(experiment_id, "failed", None, msg)
            finish("succeeded", result=result)
            return _summary(experiment_id, "succeeded", result, None)
        try:
            cfg = ExperimentConfig.from_dict(exp["config"])
        except ConfigError as exc:
            msg = f"invalid configuration: {exc}"
            reporter.log(msg, "error")
            finish("failed", error=msg, traceback=traceback.format_exc())
            return _summary(experiment_id, "failed", None, msg)
        try:
            from nas_core.pipeline import run_experiment

            # a resumed multi-trial search's finished trials (none for a first attempt)
            res = run_experiment(cfg, reporter, replay=repo.previous_trials(experiment_id, url=url),
                                 resume=repo.resume_requested(experiment_id, url=url))  # fmt: skip
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


PROXY_DEFAULTS: dict[str, Any] = {
    "repeats": 3, "ntk_batch": 0, "region_samples": 1000, "init": "kaiming", "seed": 0, "workers": 1,
    "device": "auto",
}  # fmt: skip


def run_proxies(exp: dict[str, Any], reporter: DBReporter, url: str | None) -> dict[str, Any]:
    """The body of a "proxies" run: score each listed architecture and store the scores on its row.

    Each architecture is rebuilt from its genotype and scored on its own experiment's data set (the
    proxies depend on the inputs); data sets are loaded once each. Architectures of spaces the proxies
    do not support yet are skipped with a log line, never silently.
    """
    import torch

    from nas_core.data import load_dataset
    from nas_core.devices import resolve_device
    from nas_core.errors import GenotypeError
    from nas_core.proxies import PROXY_SPACES, genotype_proxies
    from nas_core.spaces import get_space

    cfg = exp["config"]
    settings = {**PROXY_DEFAULTS, **(cfg.get("settings") or {})}
    torch.set_num_threads(int(settings.pop("threads", 1)))
    device = resolve_device(settings["device"])
    rows = repo.architecture_rows(cfg.get("architecture_ids") or [], url=url)
    total = len(rows)
    reporter.log(f"training-free proxies for {total} architecture(s); settings {settings}")
    data_cache: dict[tuple[Any, ...], Any] = {}
    done = skipped = 0

    def check() -> None:
        if reporter.should_stop():
            raise Cancelled("cancel requested")

    for i, row in enumerate(rows):
        check()
        if row["space"] not in PROXY_SPACES:
            skipped += 1
            reporter.log(
                f"architecture #{row['id']}: proxies are implemented for {', '.join(PROXY_SPACES)}, not {row['space']}"
            )
            continue
        conf = row["config"]
        key = (row["dataset"], int(conf.get("seed", 0)), float(conf.get("val_fraction", 0.2)),
               float(conf.get("test_fraction", 0.2)), int(conf.get("image_size", 0)),
               int(conf.get("max_train_per_class", 0)))  # fmt: skip
        if key not in data_cache:  # the experiment's own data, split and sized as its search saw it
            data_cache[key] = load_dataset(*key[:4], image_size=key[4], max_train_per_class=key[5])
        data = data_cache[key]
        genotype = get_space(row["space"]).parse(row["genotype"])
        t0 = time.perf_counter()
        try:
            out = genotype_proxies(
                genotype,
                data.x_train,
                data.num_classes,
                repeats=int(settings["repeats"]),
                ntk_batch=int(settings["ntk_batch"]) or None,  # 0: the space's reference batch
                region_samples=int(settings["region_samples"]),
                init=str(settings["init"]),
                seed=int(settings["seed"]),
                check=check,
                workers=int(settings["workers"]),  # processes scoring the repeats at once: the same scores
                device=str(device),
            )
        except GenotypeError as exc:  # e.g. a DARTS cell grown to fewer than 4 nodes: no proxy network for it
            skipped += 1
            reporter.log(f"architecture #{row['id']}: {exc}; skipped")
            continue
        repo.set_architecture_proxies(row["id"], out["ntk_cond"], out["linear_regions"], out["settings"], url=url)
        done += 1
        reporter.log(
            f"architecture #{row['id']}: ntk_cond {out['ntk_cond']:.4g}, linear regions {out['linear_regions']:.1f} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        reporter.progress((i + 1) / total, "proxies", i + 1, total)
    reporter.progress(1.0, "done", total, total)
    return {"evaluated": done, "skipped": skipped, "device": _device(device), "accuracy_kind": None}


def _device(spec: object = "cpu") -> str | None:
    """The name of the device a run's ``device`` setting gives here (None when it gives none: the run itself
    then fails naming the setting); refined from the result when it ends."""
    try:
        from nas_core.devices import resolve_device
        from nas_core.metrics import device_name

        return device_name(resolve_device(spec))
    except Exception:  # noqa: BLE001 - only a label; a bad setting or a broken import is reported by the run itself
        return None
