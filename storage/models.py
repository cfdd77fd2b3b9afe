"""The schema, as SQLAlchemy 2.0 typed models. Changes here need a new migration in migrations/versions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("succeeded", "failed", "cancelled", "interrupted")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python everywhere; SQLite stores naive UTC text, PostgreSQL timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: Named constraints, so later migrations can alter them (SQLite batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _fk() -> ForeignKey:
    return ForeignKey("experiments.id", ondelete="CASCADE")


class Experiment(Base):
    """One search + final training; its status mirrors its latest job so the UI reads one row."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16), default="search", server_default="search")  # | "proxies"
    strategy: Mapped[str] = mapped_column(String(64), default="")
    space: Mapped[str] = mapped_column(String(64), default="")
    dataset: Mapped[str] = mapped_column(String(500), default="")
    config: Mapped[str] = mapped_column(Text)  # ExperimentConfig.to_json()
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    phase: Mapped[str | None] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    total_epochs: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message: Mapped[str | None] = mapped_column(Text)  # latest status line for the UI
    error: Mapped[str | None] = mapped_column(Text)  # one readable line when failed/interrupted
    traceback: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(200))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Final result (copied from nas_core.pipeline.ExperimentResult when the job ends).
    genotype: Mapped[str | None] = mapped_column(Text)
    accuracy: Mapped[float | None] = mapped_column(Float)
    accuracy_kind: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[int | None] = mapped_column(BigInteger)
    macs: Mapped[int | None] = mapped_column(BigInteger)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    search_seconds: Mapped[float | None] = mapped_column(Float)  # search cost (wall time of the search phase)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    result: Mapped[str | None] = mapped_column(Text)  # JSON of the whole result


class Job(Base):
    """A unit of queued work; the database is the queue and a claim is one guarded UPDATE."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    worker_id: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)  # process that runs it (worker's child)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class Worker(Base):
    """A live (or once live) worker process; alive means a recent heartbeat."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(200), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    current_job: Mapped[int | None] = mapped_column(Integer)


class EpochLog(Base):
    __tablename__ = "epoch_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_acc: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)


class AlphaSnapshot(Base):
    """Softmax weight of one op on one edge at one step (long format: one row per op)."""

    __tablename__ = "alpha_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    cell: Mapped[str] = mapped_column(String(32))
    edge: Mapped[str] = mapped_column(String(32))
    op: Mapped[str] = mapped_column(String(64))
    weight: Mapped[float] = mapped_column(Float)


class GenotypeSnapshot(Base):
    __tablename__ = "genotype_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    genotype: Mapped[str] = mapped_column(Text)


class SeriesPoint(Base):
    """One named scalar at one step (tau, entropy, a beta, kappa ...); the name's first '/' part is its chart."""

    __tablename__ = "series_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))
    value: Mapped[float | None] = mapped_column(Float)


class Event(Base):
    """A structured record of the search (e.g. one TE-NAS pruning decision), its body as JSON."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    step: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LogLine(Base):
    __tablename__ = "log_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    ts: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)


class Architecture(Base):
    """One evaluated architecture (fields of nas_core.reporting.ArchitectureRecord)."""

    __tablename__ = "architectures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    genotype: Mapped[str] = mapped_column(Text)
    space: Mapped[str] = mapped_column(String(64))
    accuracy: Mapped[float | None] = mapped_column(Float)
    accuracy_kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[int | None] = mapped_column(BigInteger)
    macs: Mapped[int | None] = mapped_column(BigInteger)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    latency_threads: Mapped[int | None] = mapped_column(Integer)
    latency_device: Mapped[str | None] = mapped_column(String(200))
    origin: Mapped[str] = mapped_column(String(32), default="search")
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    ntk_cond: Mapped[float | None] = mapped_column(Float)  # TE-NAS proxies, when computed
    linear_regions: Mapped[float | None] = mapped_column(Float)
    extra: Mapped[str | None] = mapped_column(Text)  # JSON
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Artifact(Base):
    """A file under the runs folder (checkpoint, export); the database keeps path and checksum only."""

    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[int] = mapped_column(_fk(), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
