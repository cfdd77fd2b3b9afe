"""Search checkpoints: a one-shot search saves its whole state at every epoch's end, and a resumed run goes on
from the last one exactly as the uninterrupted run would have.

The checkpoint (``<run folder>/resume/search.pt``, beside a small ``search.json`` the Monitor reads) holds the
supernet with its architecture parameters, both optimisers, every random stream (the batch orders, the
validation stream's position, augmentation, torch's global generator, the GPU's), the loop's counters and
what the search reported so far (alpha snapshots, series, genotypes, epoch rows). A retry clears an
experiment's charts, so a resumed search reports those again first and the Monitor shows one unbroken search.
A run that is not a resume deletes a checkpoint left by an earlier attempt; a successful run deletes its own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from nas_core.reporting import Reporter

CHECKPOINT_DIR = "resume"
#: the calls a resumed search reports again (a retry cleared their rows); logs and progress are not replayed
REPLAYED = ("epoch", "alphas", "genotype", "series", "event")


def checkpoint_path(workdir: str | Path) -> Path:
    return Path(workdir) / CHECKPOINT_DIR / "search.pt"


def checkpoint_info(workdir: str | Path) -> dict[str, Any] | None:
    """What the last checkpoint of the run folder holds (``epochs_done``, ``epochs``, ``step``, ``strategy``),
    read from its JSON sidecar; None when there is none."""
    try:
        info = json.loads((Path(workdir) / CHECKPOINT_DIR / "search.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and checkpoint_path(workdir).exists() else None


def clear_checkpoint(workdir: str | Path) -> None:
    for name in ("search.pt", "search.json"):
        (Path(workdir) / CHECKPOINT_DIR / name).unlink(missing_ok=True)


class RecordingReporter:
    """Passes every call on to ``inner`` and keeps the charted ones (:data:`REPLAYED`) for the checkpoint."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in REPLAYED:
            return attr

        def record(*args: Any) -> Any:
            self.calls.append((name, args))
            return attr(*args)

        return record

    def replay(self, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Report ``calls`` (an earlier attempt's) again, and keep them as this run's own."""
        for name, args in calls:
            getattr(self, name)(*args)


def random_state(device: torch.device) -> dict[str, Any]:
    """torch's global generators: the CPU's and, on a GPU, the device's."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_random_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(workdir: str | Path, state: dict[str, Any], info: dict[str, Any]) -> None:
    """Write both files through temporary names, so an interruption mid-write leaves the previous checkpoint."""
    path = checkpoint_path(workdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    side = path.with_suffix(".json")
    tmp_side = side.with_suffix(".json.tmp")
    tmp_side.write_text(json.dumps(info, sort_keys=True))
    os.replace(tmp_side, side)


def load_checkpoint(workdir: str | Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state (on the CPU: modules and optimisers move it to their device as they load it) when it
    belongs to this configuration, else None (a changed configuration starts over)."""
    path = checkpoint_path(workdir)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by this module
    return state if state.get("config") == config else None
