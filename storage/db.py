"""Engines and sessions: one engine per URL per process, SQLite tuned for one writer and many readers.

SQLite runs in WAL mode (readers never wait for the worker's writes), with foreign keys on and a 30 s
busy timeout. We emit BEGIN ourselves so that write transactions can take the write lock up front
(BEGIN IMMEDIATE): a deferred transaction that reads and then writes can fail at once with
"database is locked" when another process wrote in between, whatever the busy timeout.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from storage.settings import db_url

BUSY_TIMEOUT_MS = 30_000

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.Lock()


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the one given, else the configured one."""
    return url or db_url()


def is_sqlite(url: str | None = None) -> bool:
    return make_url(resolve_url(url)).get_backend_name() == "sqlite"


def _wal(cur: Any, tries: int = 100) -> None:
    """Put the database in WAL mode (persistent: a file already in it is left alone).

    Switching needs an exclusive lock, and SQLite answers "database is locked" at once, without waiting out
    busy_timeout, when another process holds one: two processes creating the same fresh file (a dashboard and
    its first worker) both get here. So the switch is retried for up to ``tries`` x 50 ms.
    """
    for attempt in range(tries):
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.05)


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, see _on_begin
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            _wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


def get_engine(url: str | None = None) -> Engine:
    """Cached engine for ``url`` (per process, so a forked child never reuses a parent's sockets)."""
    url = resolve_url(url)
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite":
                database = parsed.database or ""
                if database and database != ":memory:" and not database.startswith("file:"):
                    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
                _sqlite_setup(engine)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[key] = engine
    return engine


def write_engine(url: str | None = None) -> Engine:
    """Engine whose transactions take SQLite's write lock at BEGIN (no-op option elsewhere)."""
    return get_engine(url).execution_options(sqlite_begin="IMMEDIATE")


@contextmanager
def session(url: str | None = None, *, write: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error; ``write`` takes the lock up front."""
    bind = write_engine(url) if write else get_engine(url)
    with Session(bind, expire_on_commit=False) as sess:
        try:
            yield sess
            sess.commit()
        except BaseException:
            sess.rollback()
            raise


def dispose_engines() -> None:
    """Close every pooled connection of this process (tests, and before handing a file to others)."""
    with _lock:
        for key in list(_engines):
            if key[0] == os.getpid():
                _engines.pop(key).dispose()
