"""Plain functions over the schema: what the pages, the CLI and the worker call instead of writing SQL.

Every function takes an optional ``url`` keyword (default: ``storage.settings.db_url()``), makes sure the
schema is migrated once per process, and returns plain Python values or pandas DataFrames whose columns
are fixed by docs/INTERFACES.md. Timestamps are timezone-aware UTC.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from storage.db import get_engine, resolve_url, session
from storage.models import (
    ACTIVE_STATES,
    FINAL_STATES,
    AlphaSnapshot,
    Architecture,
    Artifact,
    EpochLog,
    Event,
    Experiment,
    GenotypeSnapshot,
    Job,
    LogLine,
    SeriesPoint,
    Worker,
    utcnow,
)
from storage.settings import runs_dir

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_PG_MIGRATION_LOCK = 7_231_001  # advisory lock key that serialises concurrent migrations on PostgreSQL

EXPERIMENT_COLUMNS = [
    "id",
    "name",
    "strategy",
    "space",
    "dataset",
    "status",
    "progress",
    "phase",
    "epoch",
    "total_epochs",
    "best_accuracy",
    "accuracy_kind",
    "macs",
    "params",
    "latency_ms",
    "created_at",
    "started_at",
    "finished_at",
    "duration_s",
    "error",
    "device",
    "kind",
    "search_seconds",
    "train_seconds",
]
EPOCH_COLUMNS = ["experiment_id", "phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
ALPHA_COLUMNS = ["experiment_id", "step", "epoch", "cell", "edge", "op", "weight"]
GENOTYPE_COLUMNS = ["experiment_id", "step", "epoch", "genotype"]
LOG_COLUMNS = ["experiment_id", "ts", "level", "message"]
SERIES_COLUMNS = ["experiment_id", "step", "epoch", "name", "value"]
EVENT_COLUMNS = ["experiment_id", "step", "kind", "data", "created_at"]
ARCHITECTURE_COLUMNS = [
    "id",
    "experiment_id",
    "experiment_name",
    "strategy",
    "space",
    "dataset",
    "genotype",
    "accuracy",
    "accuracy_kind",
    "params",
    "macs",
    "latency_ms",
    "latency_threads",
    "latency_device",
    "origin",
    "checkpoint_path",
    "created_at",
    "ntk_cond",
    "linear_regions",
]
ARTIFACT_COLUMNS = ["experiment_id", "kind", "path", "checksum", "created_at"]
WORKER_COLUMNS = ["id", "host", "pid", "started_at", "heartbeat_at", "current_job"]

RUN_KINDS = ("search", "proxies")
_METRIC_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
_ARCH_KEYS = ("genotype", "space", "accuracy", "accuracy_kind", "params", "macs", "latency_ms", "latency_threads",
              "latency_device", "origin", "checkpoint_path", "ntk_cond", "linear_regions")  # fmt: skip

_ready_urls: set[tuple[int, str]] = set()
_ready_lock = threading.Lock()


# --------------------------------------------------------------------------------------------------
# schema


def init_db(url: str | None = None) -> None:
    """Migrate the database to head; idempotent, and safe when several processes call it at once.

    The whole upgrade runs in one transaction that takes the write lock first (BEGIN IMMEDIATE on
    SQLite, an advisory lock on PostgreSQL), so a second process waits and then finds nothing to do.
    """
    from alembic import command
    from alembic.config import Config

    url = resolve_url(url)
    if url.startswith("sqlite"):
        runs_dir()  # the default SQLite file lives there; make the folder exist on first use
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = get_engine(url)
    with engine.execution_options(sqlite_begin="IMMEDIATE").connect() as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    with _ready_lock:
        _ready_urls.add((os.getpid(), url))


def _ready(url: str | None) -> str:
    """Resolve the URL and migrate once per process, so a fresh machine needs no set-up step."""
    url = resolve_url(url)
    if (os.getpid(), url) not in _ready_urls:
        init_db(url)
    return url


# --------------------------------------------------------------------------------------------------
# helpers


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _num(value: Any) -> float | None:
    """A finite float or None: NaN/inf from a diverged run must not poison charts or JSON."""
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _frame(
    rows: list[dict[str, Any]], columns: list[str], ts_columns: Sequence[str] = (), float_columns: Sequence[str] = ()
) -> pd.DataFrame:
    """DataFrame with fixed columns even when empty; timestamps as UTC, metrics as float (NaN = missing)."""
    df = pd.DataFrame.from_records(rows, columns=columns)
    for col in ts_columns:
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in float_columns:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def _rows(url: str, query: Any) -> list[dict[str, Any]]:
    with session(url) as s:
        return [dict(r) for r in s.execute(query).mappings()]


def _duration(started: datetime | None, finished: datetime | None, status: str) -> float | None:
    if started is None:
        return None
    if finished is None:
        if status != "running":
            return None
        finished = utcnow()
    return max(0.0, (finished - started).total_seconds())


# --------------------------------------------------------------------------------------------------
# experiments (UI side)


def create_experiment(
    config: Mapping[str, Any],
    name: str = "",
    *,
    url: str | None = None,
    claimed_by: str | None = None,
    kind: str = "search",
) -> int:
    """Store a validated config and queue its job; returns the experiment id.

    ``claimed_by`` creates the job already running under that worker id: the CLI's foreground
    ``search`` uses it so that no background worker picks up the same job. ``kind`` is "search" or
    "proxies" (a background proxy evaluation, see :func:`create_proxy_run`).
    """
    if kind not in RUN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(RUN_KINDS)} (got {kind!r})")
    url = _ready(url)
    config = dict(config)
    name = (name or str(config.get("name") or "")).strip()[:200]
    now = utcnow()
    with session(url, write=True) as s:
        exp = Experiment(
            name=name,
            kind=kind,
            strategy=str(config.get("strategy", "")),
            space=str(config.get("space", "")),
            dataset=str(config.get("dataset", "")),
            config=_dumps(config),
            status="running" if claimed_by else "queued",
            progress=0.0,
            epoch=0,
            total_epochs=int(config.get("epochs") or 0),
            created_at=now,
            started_at=now if claimed_by else None,
            cancel_requested=False,
            message=f"running in {claimed_by}" if claimed_by else "queued",
        )
        s.add(exp)
        s.flush()
        job = Job(experiment_id=exp.id, status="queued", created_at=now, attempts=0)
        if claimed_by:
            job.status, job.worker_id, job.pid = "running", claimed_by, os.getpid()
            job.claimed_at = job.heartbeat_at = now
            job.attempts = 1
        s.add(job)
        s.flush()
        return int(exp.id)


def create_proxy_run(
    architecture_ids: Sequence[int], settings: Mapping[str, Any], *, name: str = "", url: str | None = None
) -> int:
    """Queue a background job that computes the training-free proxies of stored architectures.

    It is an experiment of kind "proxies", so it shows in Overview and Monitor with progress, log and
    Cancel like a search; ``settings`` are the proxy options (repeats, batch, region samples, init, seed).
    """
    ids = sorted({int(i) for i in architecture_ids})
    if not ids:
        raise ValueError("no architectures to evaluate")
    url = _ready(url)
    with session(url) as s:
        found = list(s.execute(select(Architecture.id, Architecture.space).where(Architecture.id.in_(ids))))
    missing = sorted(set(ids) - {int(r[0]) for r in found})
    if missing:
        raise ValueError(f"no architecture with id {', '.join(map(str, missing))}")
    spaces = sorted({str(r[1]) for r in found})
    config = {"kind": "proxies", "architecture_ids": ids, "settings": dict(settings), "epochs": len(ids)}
    config |= {"strategy": "proxies", "space": ",".join(spaces), "dataset": "(each architecture's own)"}
    label = name or f"proxies of {len(ids)} architecture{'s' if len(ids) != 1 else ''}"
    return create_experiment(config, label, url=url, kind="proxies")


def set_architecture_proxies(
    architecture_id: int,
    ntk_cond: float | None,
    linear_regions: float | None,
    settings: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
) -> bool:
    """Store proxies on one architecture row (settings go to its ``extra``); False if the row is gone."""
    url = _ready(url)
    with session(url, write=True) as s:
        arch = s.get(Architecture, int(architecture_id))
        if arch is None:
            return False
        arch.ntk_cond, arch.linear_regions = _num(ntk_cond), _num(linear_regions)
        if settings is not None:
            extra = json.loads(arch.extra or "{}")
            extra["proxy_settings"] = dict(settings)
            arch.extra = _dumps(extra)
        return True


def architecture_rows(ids: Iterable[int], *, url: str | None = None) -> list[dict[str, Any]]:
    """Architecture rows by id with their experiment's dataset and config (the proxy job rebuilds them)."""
    url = _ready(url)
    q = (
        select(Architecture.id, Architecture.genotype, Architecture.space, Experiment.dataset, Experiment.config)
        .join(Experiment, Experiment.id == Architecture.experiment_id)
        .where(Architecture.id.in_([int(i) for i in ids]))
        .order_by(Architecture.id)
    )
    rows = _rows(url, q)
    for r in rows:
        r["config"] = json.loads(r["config"] or "{}")
    return rows


def _best_architectures(s: Session, ids: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """Per experiment, the architecture with the highest accuracy (for experiments still searching)."""
    q = select(
        Architecture.experiment_id,
        Architecture.accuracy,
        Architecture.accuracy_kind,
        Architecture.macs,
        Architecture.params,
        Architecture.latency_ms,
    ).where(Architecture.accuracy.is_not(None))
    if ids is not None:
        q = q.where(Architecture.experiment_id.in_(list(ids)))
    best: dict[int, dict[str, Any]] = {}
    for row in s.execute(q).mappings():
        cur = best.get(row["experiment_id"])
        if cur is None or row["accuracy"] > cur["accuracy"]:
            best[row["experiment_id"]] = dict(row)
    return best


def _experiment_summary(exp: Experiment, best: dict[str, Any] | None) -> dict[str, Any]:
    if exp.accuracy is not None or best is None:
        acc, kind, macs, params, lat = exp.accuracy, exp.accuracy_kind, exp.macs, exp.params, exp.latency_ms
    else:
        acc, kind = best["accuracy"], best["accuracy_kind"]
        macs, params, lat = best["macs"], best["params"], best["latency_ms"]
    return {
        "id": exp.id,
        "name": exp.name,
        "strategy": exp.strategy,
        "space": exp.space,
        "dataset": exp.dataset,
        "status": exp.status,
        "progress": exp.progress,
        "phase": exp.phase,
        "epoch": exp.epoch,
        "total_epochs": exp.total_epochs,
        "best_accuracy": acc,
        "accuracy_kind": kind,
        "macs": macs,
        "params": params,
        "latency_ms": lat,
        "created_at": exp.created_at,
        "started_at": exp.started_at,
        "finished_at": exp.finished_at,
        "duration_s": _duration(exp.started_at, exp.finished_at, exp.status),
        "error": exp.error,
        "device": exp.device,
        "kind": exp.kind or "search",
        "search_seconds": exp.search_seconds,
        "train_seconds": exp.train_seconds,
    }


def list_experiments(*, url: str | None = None) -> pd.DataFrame:
    """All experiments, newest first, with their best accuracy so far and timings."""
    url = _ready(url)
    with session(url) as s:
        exps = list(s.scalars(select(Experiment).order_by(Experiment.id.desc())))
        best = _best_architectures(s)
        rows = [_experiment_summary(e, best.get(e.id)) for e in exps]
    return _frame(
        rows,
        EXPERIMENT_COLUMNS,
        ("created_at", "started_at", "finished_at"),
        ("progress", "best_accuracy", "macs", "params", "latency_ms", "duration_s", "search_seconds", "train_seconds"),
    )


def get_experiment(experiment_id: int, *, url: str | None = None) -> dict[str, Any] | None:
    """One experiment as a dict (summary keys plus config, traceback, message, job fields); None if absent."""
    url = _ready(url)
    with session(url) as s:
        exp = s.get(Experiment, int(experiment_id))
        if exp is None:
            return None
        best = _best_architectures(s, [exp.id]).get(exp.id)
        out = _experiment_summary(exp, best)
        job = s.scalars(select(Job).where(Job.experiment_id == exp.id).order_by(Job.id.desc()).limit(1)).first()
    out.update(
        config=json.loads(exp.config),
        traceback=exp.traceback,
        message=exp.message,
        cancel_requested=bool(exp.cancel_requested),
        genotype=exp.genotype,
        result=json.loads(exp.result) if exp.result else None,
        job_id=job.id if job else None,
        job_status=job.status if job else None,
        worker_id=job.worker_id if job else None,
        pid=job.pid if job else None,
        attempts=job.attempts if job else 0,
        heartbeat_at=job.heartbeat_at if job else None,
        workdir=str(experiment_workdir(exp.id)),
    )
    return out


def experiment_workdir(experiment_id: int) -> Path:
    """The experiment's folder under the runs folder (checkpoints, exports); not created here."""
    return runs_dir() / f"exp_{int(experiment_id):05d}"


def request_cancel(experiment_id: int, *, url: str | None = None) -> bool:
    """Ask an experiment to stop: a queued one is cancelled now, a running one at its next step.

    Returns True if it was queued or running.
    """
    url = _ready(url)
    now = utcnow()
    with session(url, write=True) as s:
        exp = s.get(Experiment, int(experiment_id))
        if exp is None or exp.status not in ACTIVE_STATES:
            return False
        res = s.execute(
            update(Job)
            .where(Job.experiment_id == exp.id, Job.status == "queued")
            .values(status="cancelled", finished_at=now)
        )
        exp.cancel_requested = True
        if res.rowcount and exp.status == "queued":  # type: ignore[attr-defined]
            exp.status, exp.finished_at, exp.message = "cancelled", now, "cancelled before it started"
        else:
            exp.message = "cancel requested"
        return True


#: event kind under which a resumed run keeps the trials of the attempt before it (see :func:`retry_experiment`)
PREVIOUS_TRIALS = "trial-previous"
#: event kind that marks a queued attempt as a resume (a search with checkpoints goes on from its last one)
RESUME_MARKER = "resume-requested"


def retry_experiment(experiment_id: int, *, resume: bool = False, url: str | None = None) -> int | None:
    """Queue a failed, cancelled or interrupted experiment again; returns the new job id.

    Its recorded series (epochs, alphas, genotypes, signal series, events, architectures, artifacts) are
    cleared, so the Monitor shows the new attempt alone; logs stay. With ``resume`` the finished trials of a
    multi-trial search are kept as :data:`PREVIOUS_TRIALS` events: the new attempt reuses each one its search
    proposes again instead of training it (:func:`previous_trials`); and a :data:`RESUME_MARKER` event tells
    a search with checkpoints (the one-shot family) to go on from its last one (:func:`resume_requested`).
    """
    url = _ready(url)
    with session(url, write=True) as s:
        exp = s.get(Experiment, int(experiment_id))
        if exp is None or exp.status not in ("failed", "cancelled", "interrupted"):
            return None
        prev = s.scalar(select(func.max(Job.attempts)).where(Job.experiment_id == exp.id)) or 0
        job = Job(experiment_id=exp.id, status="queued", created_at=utcnow(), attempts=prev)
        s.add(job)
        kept = 0
        if resume:  # the last attempt's trials include those it reused itself: they replace the older ones
            s.execute(delete(Event).where(Event.experiment_id == exp.id, Event.kind == PREVIOUS_TRIALS))
            kept = s.execute(
                update(Event).where(Event.experiment_id == exp.id, Event.kind == "trial").values(kind=PREVIOUS_TRIALS)
            ).rowcount
        # The run starts over, so the previous attempt's series would only mix with the new one's.
        for model in (EpochLog, AlphaSnapshot, GenotypeSnapshot, SeriesPoint, Architecture, Artifact):
            s.execute(delete(model).where(model.experiment_id == exp.id))
        events = delete(Event).where(Event.experiment_id == exp.id)
        s.execute(events.where(Event.kind != PREVIOUS_TRIALS) if resume else events)
        if resume:
            s.add(Event(experiment_id=exp.id, step=0, kind=RESUME_MARKER, data=_dumps({}), created_at=utcnow()))
        how = "queued again"
        if resume:
            how = f"resumed with {kept} finished trial(s)" if kept else "resumed from the search's last checkpoint"
        s.add(LogLine(experiment_id=exp.id, ts=utcnow(), level="info", message=f"{how} (after {exp.status})"))
        exp.status, exp.cancel_requested, exp.finished_at, exp.started_at = "queued", False, None, None
        exp.progress, exp.phase, exp.epoch = 0.0, None, 0
        exp.error = exp.traceback = exp.result = exp.genotype = exp.accuracy_kind = None
        exp.accuracy = exp.latency_ms = None
        exp.params = exp.macs = None
        exp.message = how
        s.flush()
        return int(job.id)


TrialResult = tuple[float, int, float, int, float | None]  # val accuracy, params, seconds, MACs, latency ms


def resume_requested(experiment_id: int, *, url: str | None = None) -> bool:
    """Whether the queued attempt was asked to resume (``retry_experiment(..., resume=True)``)."""
    return not events_df(experiment_id, RESUME_MARKER, url=url).empty


def previous_trials(experiment_id: int, *, url: str | None = None) -> dict[tuple[int, str], TrialResult]:
    """The trials a resumed run may reuse: (trial number, genotype) -> (val acc, params, seconds, MACs, latency)."""
    df = events_df(experiment_id, PREVIOUS_TRIALS, url=url)
    out: dict[tuple[int, str], TrialResult] = {}
    for step, data in zip(df["step"], df["data"]) if not df.empty else ():
        if isinstance(data, dict) and all(k in data for k in ("genotype", "val_acc", "params", "seconds")):
            latency = float(data["latency_ms"]) if data.get("latency_ms") is not None else None
            result = (float(data["val_acc"]), int(data["params"]), float(data["seconds"]), int(data.get("macs") or 0),
                      latency)  # fmt: skip
            out[(int(step), str(data["genotype"]))] = result
    return out


def delete_experiment(experiment_id: int, *, url: str | None = None, remove_files: bool = False) -> bool:
    """Delete a finished experiment and all its rows (and its folder if asked); refuses active ones."""
    url = _ready(url)
    with session(url, write=True) as s:
        exp = s.get(Experiment, int(experiment_id))
        if exp is None or exp.status in ACTIVE_STATES:
            return False
        s.execute(delete(Experiment).where(Experiment.id == exp.id))
    if remove_files:
        shutil.rmtree(experiment_workdir(int(experiment_id)), ignore_errors=True)
    return True


# --------------------------------------------------------------------------------------------------
# recorded series (UI side)


def epochs_df(experiment_id: int, *, url: str | None = None) -> pd.DataFrame:
    """Per-epoch metrics of the search and final training, for the learning curves."""
    url = _ready(url)
    cols = [getattr(EpochLog, c) for c in EPOCH_COLUMNS]
    rows = _rows(url, select(*cols).where(EpochLog.experiment_id == int(experiment_id)).order_by(EpochLog.id))
    return _frame(rows, EPOCH_COLUMNS, (), _METRIC_KEYS)


def alphas_df(experiment_id: int, *, url: str | None = None) -> pd.DataFrame:
    """Long-format alpha snapshots (one row per cell, edge, op and step), for the alpha-evolution plots."""
    url = _ready(url)
    cols = [getattr(AlphaSnapshot, c) for c in ALPHA_COLUMNS]
    rows = _rows(url, select(*cols).where(AlphaSnapshot.experiment_id == int(experiment_id)).order_by(AlphaSnapshot.id))
    return _frame(rows, ALPHA_COLUMNS, (), ("weight",))


def genotypes_df(experiment_id: int, *, url: str | None = None) -> pd.DataFrame:
    """The derived genotype as it changed during the search."""
    url = _ready(url)
    cols = [getattr(GenotypeSnapshot, c) for c in GENOTYPE_COLUMNS]
    rows = _rows(
        url, select(*cols).where(GenotypeSnapshot.experiment_id == int(experiment_id)).order_by(GenotypeSnapshot.id)
    )
    return _frame(rows, GENOTYPE_COLUMNS)


def logs_df(experiment_id: int, tail: int | None = 200, *, url: str | None = None) -> pd.DataFrame:
    """The last ``tail`` log lines in time order (all of them when tail is None)."""
    url = _ready(url)
    cols = [getattr(LogLine, c) for c in LOG_COLUMNS]
    q = select(*cols).where(LogLine.experiment_id == int(experiment_id)).order_by(LogLine.id.desc())
    if tail is not None:
        q = q.limit(max(0, int(tail)))
    rows = _rows(url, q)
    rows.reverse()
    return _frame(rows, LOG_COLUMNS, ("ts",))


def series_df(experiment_id: int, *, url: str | None = None) -> pd.DataFrame:
    """Named scalars over steps (long format); ``name``'s part before the first '/' is the chart."""
    url = _ready(url)
    cols = [getattr(SeriesPoint, c) for c in SERIES_COLUMNS]
    q = select(*cols).where(SeriesPoint.experiment_id == int(experiment_id)).order_by(SeriesPoint.id)
    return _frame(_rows(url, q), SERIES_COLUMNS, (), ("value",))


def events_df(experiment_id: int, kind: str | None = None, *, url: str | None = None) -> pd.DataFrame:
    """Structured records of a run in order; ``data`` is the decoded dict."""
    url = _ready(url)
    cols = [getattr(Event, c) for c in EVENT_COLUMNS]
    q = select(*cols).where(Event.experiment_id == int(experiment_id))
    if kind is not None:
        q = q.where(Event.kind == kind)
    rows = _rows(url, q.order_by(Event.id))
    for r in rows:
        r["data"] = json.loads(r["data"] or "{}")
    return _frame(rows, EVENT_COLUMNS, ("created_at",))


def architectures_df(ids: Iterable[int] | None = None, *, url: str | None = None) -> pd.DataFrame:
    """Architectures of the given experiments (all when ids is None), with their experiment's labels."""
    url = _ready(url)
    q = (
        select(
            Architecture.id,
            Architecture.experiment_id,
            Experiment.name.label("experiment_name"),
            Experiment.strategy,
            Architecture.space,
            Experiment.dataset,
            *[getattr(Architecture, c) for c in ARCHITECTURE_COLUMNS[6:]],
        )
        .join(Experiment, Experiment.id == Architecture.experiment_id)
        .order_by(Architecture.id)
    )
    if ids is not None:
        q = q.where(Architecture.experiment_id.in_([int(i) for i in ids]))
    rows = _rows(url, q)
    return _frame(
        rows,
        ARCHITECTURE_COLUMNS,
        ("created_at",),
        ("accuracy", "params", "macs", "latency_ms", "latency_threads", "ntk_cond", "linear_regions"),
    )


def artifacts_df(experiment_id: int, *, url: str | None = None) -> pd.DataFrame:
    """Files an experiment wrote (checkpoint, exports), with checksums to verify before offering them."""
    url = _ready(url)
    cols = [getattr(Artifact, c) for c in ARTIFACT_COLUMNS]
    rows = _rows(url, select(*cols).where(Artifact.experiment_id == int(experiment_id)).order_by(Artifact.id))
    return _frame(rows, ARTIFACT_COLUMNS, ("created_at",))


def alive_workers(max_age_s: float = 30, *, url: str | None = None) -> pd.DataFrame:
    """Workers whose last heartbeat is at most ``max_age_s`` seconds old."""
    url = _ready(url)
    cutoff = utcnow() - timedelta(seconds=max_age_s)
    cols = [getattr(Worker, c) for c in WORKER_COLUMNS]
    rows = _rows(url, select(*cols).where(Worker.heartbeat_at >= cutoff).order_by(Worker.started_at))
    return _frame(rows, WORKER_COLUMNS, ("started_at", "heartbeat_at"))


# --------------------------------------------------------------------------------------------------
# worker side


def register_worker(worker_id: str, host: str, pid: int, *, url: str | None = None) -> None:
    """Insert (or revive) this worker's row so the dashboard sees it alive."""
    url = _ready(url)
    now = utcnow()
    with session(url, write=True) as s:
        w = s.get(Worker, worker_id)
        if w is None:
            s.add(Worker(id=worker_id, host=host, pid=pid, started_at=now, heartbeat_at=now, current_job=None))
        else:
            w.host, w.pid, w.started_at, w.heartbeat_at, w.current_job = host, pid, now, now, None


def heartbeat_worker(worker_id: str, current_job: int | None = None, *, url: str | None = None) -> None:
    """Mark the worker (and the job it runs, if any) alive now."""
    url = _ready(url)
    now = utcnow()
    with session(url, write=True) as s:
        res = s.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now, current_job=current_job))
        if not res.rowcount:  # type: ignore[attr-defined]
            s.add(Worker(id=worker_id, host="", pid=0, started_at=now, heartbeat_at=now, current_job=current_job))
        if current_job is not None:
            s.execute(update(Job).where(Job.id == current_job, Job.status == "running").values(heartbeat_at=now))


def heartbeat_job(job_id: int, *, url: str | None = None) -> None:
    """Keep a job from being seen as stale (used where no worker loop heartbeats for it)."""
    url = _ready(url)
    with session(url, write=True) as s:
        s.execute(update(Job).where(Job.id == int(job_id), Job.status == "running").values(heartbeat_at=utcnow()))


def unregister_worker(worker_id: str, *, url: str | None = None) -> None:
    """Remove a cleanly stopping worker, so the dashboard does not wait for its heartbeat to age."""
    url = _ready(url)
    with session(url, write=True) as s:
        s.execute(delete(Worker).where(Worker.id == worker_id))


def claim_job(worker_id: str, *, url: str | None = None) -> dict[str, int] | None:
    """Atomically take the oldest queued job; returns ``{job_id, experiment_id, attempts}`` or None.

    The claim is a guarded ``UPDATE ... WHERE status='queued'`` whose rowcount says who won; the
    candidate is selected ``FOR UPDATE SKIP LOCKED`` (PostgreSQL) inside a write-locked transaction
    (SQLite), so two workers never run the same job.
    """
    url = _ready(url)
    for _ in range(10):
        with session(url, write=True) as s:
            job_id = s.scalars(
                select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(1).with_for_update(skip_locked=True)
            ).first()
            if job_id is None:
                return None
            now = utcnow()
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running",
                    worker_id=worker_id,
                    claimed_at=now,
                    heartbeat_at=now,
                    attempts=Job.attempts + 1,
                    pid=None,
                )
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                continue  # another worker won this one; try the next
            exp_id, attempts = s.execute(select(Job.experiment_id, Job.attempts).where(Job.id == job_id)).one()
            s.execute(
                update(Experiment)
                .where(Experiment.id == exp_id)
                .values(
                    status="running",
                    started_at=now,
                    finished_at=None,
                    phase="starting",
                    message=f"claimed by worker {worker_id}",
                )
            )
            return {"job_id": int(job_id), "experiment_id": int(exp_id), "attempts": int(attempts)}
    return None


def set_job_pid(job_id: int, pid: int, *, url: str | None = None) -> None:
    """Record which process runs the job (so it can be found and stopped)."""
    url = _ready(url)
    with session(url, write=True) as s:
        s.execute(update(Job).where(Job.id == int(job_id)).values(pid=int(pid)))


def mark_stale_interrupted(max_age_s: float = 20.0, *, url: str | None = None) -> list[int]:
    """Running jobs with no heartbeat for ``max_age_s`` belong to a dead worker: mark them interrupted.

    Returns the ids of the experiments that were marked.
    """
    url = _ready(url)
    now = utcnow()
    cutoff = now - timedelta(seconds=max_age_s)
    marked: list[int] = []
    with session(url, write=True) as s:
        stale = s.execute(
            select(Job.id, Job.experiment_id, Job.worker_id, Job.heartbeat_at).where(
                Job.status == "running", func.coalesce(Job.heartbeat_at, Job.claimed_at, Job.created_at) < cutoff
            )
        ).all()
        for job_id, exp_id, worker_id, beat in stale:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(status="interrupted", finished_at=now)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                continue
            seen = beat.isoformat(timespec="seconds") if beat else "never"
            msg = f"worker {worker_id or '?'} stopped responding (last heartbeat {seen})"
            s.execute(
                update(Experiment)
                .where(Experiment.id == exp_id, Experiment.status.in_(ACTIVE_STATES))
                .values(status="interrupted", finished_at=now, error=msg, message=msg)
            )
            s.add(LogLine(experiment_id=exp_id, ts=now, level="error", message=f"interrupted: {msg}"))
            marked.append(int(exp_id))
    return marked


def start_experiment(
    experiment_id: int, *, device: str | None = None, job_id: int | None = None, url: str | None = None
) -> None:
    """Mark an experiment running at the start of its job (the claim already did, unless run directly)."""
    url = _ready(url)
    now = utcnow()
    with session(url, write=True) as s:
        exp = s.get(Experiment, int(experiment_id))
        if exp is None:
            raise KeyError(f"no experiment with id {experiment_id}")
        if exp.status not in ("running",) or exp.started_at is None:
            exp.started_at = now
        exp.status, exp.finished_at, exp.phase = "running", None, exp.phase or "starting"
        exp.error = exp.traceback = None
        if device:
            exp.device = device
        if job_id is not None:
            s.execute(
                update(Job).where(Job.id == int(job_id)).values(pid=os.getpid(), heartbeat_at=now, status="running")
            )


def is_cancel_requested(experiment_id: int, *, url: str | None = None) -> bool:
    """The cancel flag the running job polls (via DBReporter.should_stop)."""
    url = _ready(url)
    with session(url) as s:
        return bool(s.scalar(select(Experiment.cancel_requested).where(Experiment.id == int(experiment_id))))


def job_status(job_id: int, *, url: str | None = None) -> str | None:
    """Status of one job (the worker checks whether its child reported before it exited)."""
    url = _ready(url)
    with session(url) as s:
        return s.scalar(select(Job.status).where(Job.id == int(job_id)))


def finish_job(
    experiment_id: int,
    status: str,
    *,
    job_id: int | None = None,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    traceback: str | None = None,
    message: str | None = None,
    only_if_running: bool = False,
    url: str | None = None,
) -> bool:
    """Record how a job ended (and the experiment's result); returns False if nothing was changed.

    ``only_if_running`` makes this a no-op when the job already ended, for callers (the worker's
    parent) that may race with the child's own report.
    """
    if status not in FINAL_STATES:
        raise ValueError(f"status must be one of {', '.join(FINAL_STATES)} (got {status!r})")
    url = _ready(url)
    now = utcnow()
    with session(url, write=True) as s:
        exp = s.get(Experiment, int(experiment_id))
        if exp is None:
            return False
        jq = update(Job).where(Job.experiment_id == exp.id)
        if job_id is not None:
            jq = jq.where(Job.id == int(job_id))
        jq = jq.where(Job.status.in_(ACTIVE_STATES if only_if_running else (*ACTIVE_STATES, "interrupted")))
        res = s.execute(jq.values(status=status, finished_at=now))
        if only_if_running and not res.rowcount:  # type: ignore[attr-defined]
            return False
        exp.status, exp.finished_at = status, now
        if status == "succeeded":
            exp.progress = 1.0
        if result:
            exp.result = _dumps(dict(result))
            exp.genotype = result.get("genotype") or exp.genotype
            exp.accuracy = _num(result.get("accuracy"))
            exp.accuracy_kind = result.get("accuracy_kind") or exp.accuracy_kind
            exp.params = _int(result.get("params"))
            exp.macs = _int(result.get("macs"))
            exp.latency_ms = _num(result.get("latency_ms"))
            exp.device = result.get("device") or exp.device
            exp.search_seconds = _num(result.get("search_seconds"))
            exp.train_seconds = _num(result.get("train_seconds"))
        exp.error = error
        exp.traceback = traceback
        exp.message = message or {"succeeded": "finished", "cancelled": "cancelled"}.get(status, error or status)
        return True


def write_batch(
    experiment_id: int,
    *,
    logs: Sequence[Mapping[str, Any]] = (),
    epochs: Sequence[Mapping[str, Any]] = (),
    alphas: Sequence[Mapping[str, Any]] = (),
    genotypes: Sequence[Mapping[str, Any]] = (),
    architectures: Sequence[Mapping[str, Any]] = (),
    artifacts: Sequence[Mapping[str, Any]] = (),
    series: Sequence[Mapping[str, Any]] = (),
    events: Sequence[Mapping[str, Any]] = (),
    progress: Mapping[str, Any] | None = None,
    url: str | None = None,
) -> None:
    """Write everything a run said since the last flush in one short transaction.

    Row dicts use the column names: logs ``ts, level, message``; epochs ``phase, epoch`` plus metric
    keys; alphas ``step, epoch, cell, edge, op, weight``; genotypes ``step, epoch, genotype``;
    architectures the ArchitectureRecord fields (``extra`` a dict); artifacts ``kind, path, checksum``;
    series ``step, epoch, name, value``; events ``step, kind, data`` (a dict).
    ``progress`` holds ``fraction, phase, epoch, total_epochs`` of the latest progress call.
    """
    url = _ready(url)
    eid = int(experiment_id)
    now = utcnow()
    # table -> (rows, how one row dict becomes its columns); each table is one multi-row insert
    simple: list[tuple[Any, Sequence[Mapping[str, Any]], Any]] = [
        (LogLine, logs, lambda r: {"ts": r.get("ts") or now, "level": str(r.get("level") or "info")[:16],
                                   "message": str(r.get("message", ""))}),
        (EpochLog, epochs, lambda r: {"phase": str(r["phase"]), "epoch": int(r["epoch"])}
         | {k: _num(r.get(k)) for k in _METRIC_KEYS}),
        (AlphaSnapshot, alphas, lambda r: {"step": int(r["step"]), "epoch": int(r["epoch"]), "cell": str(r["cell"]),
                                           "edge": str(r["edge"]), "op": str(r["op"]), "weight": float(r["weight"])}),
        (GenotypeSnapshot, genotypes, lambda r: {"step": int(r["step"]), "epoch": int(r["epoch"]),
                                                 "genotype": str(r["genotype"])}),
        (SeriesPoint, series, lambda r: {"step": int(r["step"]), "epoch": int(r["epoch"]),
                                         "name": str(r["name"])[:128], "value": _num(r.get("value"))}),
        (Event, events, lambda r: {"step": int(r["step"]), "kind": str(r["kind"])[:32],
                                   "data": _dumps(dict(r.get("data") or {})),
                                   "created_at": r.get("created_at") or now}),
    ]  # fmt: skip
    with session(url, write=True) as s:
        for model, rows, columns in simple:
            if rows:
                s.execute(model.__table__.insert(), [{"experiment_id": eid, **columns(r)} for r in rows])
        if architectures:
            rows = []
            for r in architectures:
                row: dict[str, Any] = {k: r.get(k) for k in _ARCH_KEYS}
                row.update(
                    experiment_id=eid,
                    accuracy=_num(row["accuracy"]),
                    params=_int(row["params"]),
                    macs=_int(row["macs"]),
                    latency_ms=_num(row["latency_ms"]),
                    latency_threads=_int(row["latency_threads"]),
                    ntk_cond=_num(row["ntk_cond"]),
                    linear_regions=_num(row["linear_regions"]),
                    origin=row["origin"] or "search",
                    accuracy_kind=row["accuracy_kind"] or "",
                    extra=_dumps(r.get("extra") or {}),
                    created_at=r.get("created_at") or now,
                )
                rows.append(row)
            s.execute(Architecture.__table__.insert(), rows)
        if artifacts:
            s.execute(
                Artifact.__table__.insert(),
                [
                    {
                        "experiment_id": eid,
                        "kind": str(r["kind"]),
                        "path": str(r["path"]),
                        "checksum": str(r.get("checksum") or ""),
                        "created_at": r.get("created_at") or now,
                    }
                    for r in artifacts
                ],
            )
        if progress or logs:
            values: dict[str, Any] = {}
            if progress:
                values.update(
                    progress=min(1.0, max(0.0, float(progress.get("fraction") or 0.0))),
                    phase=progress.get("phase"),
                    epoch=int(progress.get("epoch") or 0),
                    total_epochs=int(progress.get("total_epochs") or 0),
                )
            last = next((r for r in reversed(logs) if r.get("level", "info") in ("info", "warning")), None)
            if last is not None:
                values["message"] = str(last.get("message", ""))[:500]
            if values:
                s.execute(update(Experiment).where(Experiment.id == eid).values(**values))
