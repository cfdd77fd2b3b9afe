"""A throwaway PostgreSQL server for tests: its own data folder, 127.0.0.1 on a free port, stopped by pid.

Debian's server binaries (``apt-get install postgresql``; ``.ci/run`` installs them) are found under
``/usr/lib/postgresql/<version>/bin`` or on ``PATH``. The server refuses to run as root, so under root it runs
as the ``postgres`` system user that package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, newest version first; None when not installed."""
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(d) / "initdb").is_file() and (Path(d) / "postgres").is_file():
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """``start()`` runs initdb and the server; ``url(db)`` makes a database; ``stop()`` ends it by pid."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="nas-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "nas"
        self.proc: subprocess.Popen | None = None
        self._as: list[str] = []
        if os.geteuid() == 0:  # the server will not run as root
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        out = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")

    def start(self) -> PostgresServer:
        initdb = str(self.bin_dir / "initdb")
        self._run(initdb, "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")
        log = open(self.root / "server.log", "w")  # noqa: SIM115 - the server writes it until stop()
        options = {"-D": str(self.data), "-h": "127.0.0.1", "-p": str(self.port), "-k": str(self.root)}
        settings = ("fsync=off", "max_connections=200")
        self.proc = subprocess.Popen(
            [
                *self._as,
                str(self.bin_dir / "postgres"),
                *(v for pair in options.items() for v in pair),
                *(v for setting in settings for v in ("-c", setting)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:  # until a real session opens ("the database system is starting up" before that)
            try:
                with self._connect():
                    return self
            except Exception:  # noqa: BLE001 - refused, or still starting
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (self.root / "server.log").read_text()
                    self.stop()
                    raise RuntimeError(f"PostgreSQL did not start:\n{log_text}") from None
                time.sleep(0.1)

    def _connect(self, dbname: str = "postgres"):  # noqa: ANN202 - psycopg is a test-only dependency
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=dbname, autocommit=True)

    def url(self, dbname: str) -> str:
        """A fresh, empty database of that name; its SQLAlchemy URL."""
        with self._connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        """Fast shutdown of the postmaster by its pid (SIGINT), SIGKILL if it lingers; the folder is removed."""
        pid_file = self.data / "postmaster.pid"
        pid = None
        if pid_file.is_file():
            pid = int(pid_file.read_text().split()[0])
        elif self.proc is not None and self.proc.poll() is None:
            pid = self.proc.pid
        if pid:
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                if pid:
                    os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
