"""Shared fixtures: a database seeded once per session by a real tiny search through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Results' latencies are measured over NAS_LATENCY_SECONDS (3 s by default, for shared machines); the tests run
# many tiny pipelines and check the measurement itself in test_proxyless.py, so they take just the repeats.
os.environ.setdefault("NAS_LATENCY_SECONDS", "0")
# No test process starts a background worker unless its test turns this off and stops the worker itself (the
# browser tests' dashboard, the autostart test): twice a worker was left running against the default
# ./nas_runs database, started while an unrelated test ran, by in-process page code after its fixture had ended.
os.environ.setdefault("NAS_NO_AUTOSTART", "1")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` from the repository root imports the project without installing it
    sys.path.insert(0, str(ROOT))

SEED_COMMAND = ["search", "--strategy", "darts", "--dataset", "synthetic", "--epochs", "1", "--set", "final_epochs=1",
                "--json"]  # fmt: skip


@dataclass(frozen=True)
class SeededRun:
    """Where the seeded database lives and what the CLI said about the run."""

    runs_dir: Path
    url: str
    result: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        return {"NAS_RUNS_DIR": str(self.runs_dir), "NAS_DB_URL": self.url, "NAS_NO_AUTOSTART": "1"}


@pytest.fixture
def one_thread() -> Any:
    """Torch on one intra-op thread for the test, restored after: the proxies and tiny supernets run thousands
    of small ops, and on 2 busy cores 2 intra-op threads can be 30x slower. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def postgres_server() -> Any:
    """One throwaway PostgreSQL server for the session (tests/pg_server.py); each test makes its own database.

    Skipped where the server binaries or the psycopg driver are missing, unless ``NAS_REQUIRE_POSTGRES=1``
    (``.ci/run`` sets it after installing them), where that is a failure."""
    from pg_server import PostgresServer, find_bin_dir

    missing = None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing = "the psycopg driver (pip install 'psycopg[binary]')"
    bin_dir = find_bin_dir()
    if bin_dir is None:
        missing = "the PostgreSQL server (apt-get install postgresql)"
    if missing:
        if os.environ.get("NAS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"NAS_REQUIRE_POSTGRES=1 but {missing} is not installed")
        pytest.skip(f"{missing} is not installed")
    server = PostgresServer(bin_dir).start()  # type: ignore[arg-type]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seeded_run(tmp_path_factory: pytest.TempPathFactory) -> SeededRun:
    """Run `python -m nas_core search ... --json` once into a fresh runs folder and database."""
    runs = tmp_path_factory.mktemp("seeded_runs")
    seeded = SeededRun(runs, f"sqlite:///{runs / 'nas.db'}", {})
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | seeded.env | {"PYTHONPATH": pythonpath}
    command = [sys.executable, "-m", "nas_core", *SEED_COMMAND]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(f"seeding run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1])
    assert result["status"] == "succeeded", result
    return SeededRun(runs, seeded.url, result)


@pytest.fixture
def seeded_env(seeded_run: SeededRun, monkeypatch: pytest.MonkeyPatch) -> SeededRun:
    """Point storage (and pages under AppTest, which run in this process) at the seeded database."""
    for key, value in seeded_run.env.items():
        monkeypatch.setenv(key, value)
    return seeded_run


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, migrated SQLite file and runs folder for one test; no worker autostart."""
    from storage import repo

    url = f"sqlite:///{tmp_path / 'nas.db'}"
    monkeypatch.setenv("NAS_DB_URL", url)
    monkeypatch.setenv("NAS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("NAS_NO_AUTOSTART", "1")
    repo.init_db()
    return url
