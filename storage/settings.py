"""Where data lives: one database URL and one runs folder, both overridable from the environment."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_RUNS_DIR = "nas_runs"


def runs_dir() -> Path:
    """Folder for checkpoints, exports, logs and the default SQLite file; created on first use."""
    path = Path(os.environ.get("NAS_RUNS_DIR") or DEFAULT_RUNS_DIR).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_url() -> str:
    """SQLAlchemy URL of the database; absolute so child processes and other cwds agree."""
    url = os.environ.get("NAS_DB_URL")
    if url:
        return url
    return f"sqlite:///{runs_dir() / 'nas.db'}"
