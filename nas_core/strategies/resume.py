"""Search checkpoints: a one-shot search (the DARTS family, GDAS, ProxylessNAS) saves its whole state at every
epoch's end, and a resumed run goes on from the last one exactly as the uninterrupted run would have.

The checkpoint (``<run folder>/resume/search.pt``, beside a small ``search.json`` the Monitor reads) holds the
supernet with its architecture parameters, both optimisers, every random stream (the batch orders, the
validation stream's position, augmentation, torch's global generator, the GPU's), the loop's counters and
what the search reported so far (alpha snapshots, series, genotypes, epoch rows). A retry clears an
experiment's charts, so a resumed search reports those again first and the Monitor shows one unbroken search.
A run that is not a resume deletes a checkpoint left by an earlier attempt; a successful run deletes its own.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from nas_core.reporting import Reporter
from nas_core.strategies.base import SearchContext

CHECKPOINT_DIR = "resume"
#: the calls a resumed search reports again (a retry cleared their rows); logs and progress are not replayed
REPLAYED = ("epoch", "alphas", "genotype", "series", "event")


def checkpoint_path(workdir: str | Path) -> Path:
    return Path(workdir) / CHECKPOINT_DIR / "search.pt"


def _sidecar(workdir: str | Path) -> Path:
    return checkpoint_path(workdir).with_suffix(".json")


def checkpoint_info(workdir: str | Path) -> dict[str, Any] | None:
    """What the last checkpoint of the run folder holds (``epochs_done``, ``epochs``, ``step``, ``strategy``),
    read from its JSON sidecar; None when there is none."""
    try:
        info = json.loads(_sidecar(workdir).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and checkpoint_path(workdir).exists() else None


def clear_checkpoint(workdir: str | Path) -> None:
    for path in (checkpoint_path(workdir), _sidecar(workdir)):
        path.unlink(missing_ok=True)


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
    side = _sidecar(workdir)
    tmp_side = side.with_suffix(".json.tmp")
    tmp_side.write_text(json.dumps(info, sort_keys=True))
    os.replace(tmp_side, side)


class Checkpointer:
    """A search loop's checkpoints: it registers what carries state, then calls :meth:`restore` before its first
    epoch and :meth:`save` after each one. Built by :func:`with_checkpoints`."""

    def __init__(self, ctx: SearchContext, recorder: RecordingReporter) -> None:
        self.ctx, self.recorder = ctx, recorder
        self.states: dict[str, Any] = {}  # name -> anything with state_dict()/load_state_dict()
        self.streams: dict[str, torch.Generator] = {}
        self.mark = 0  # calls recorded before the loop (every attempt makes them again): not in checkpoints

    def register(self, states: dict[str, Any], streams: dict[str, torch.Generator]) -> None:
        """The loop's nets, optimisers and batch streams (``states``) and its random generators; what was charted
        so far (e.g. ProxylessNAS's latency-table event) is set up again by every attempt, so it is not saved."""
        self.states.update(states)
        self.streams.update(streams)
        self.mark = len(self.recorder.calls)

    def restore(self) -> dict[str, Any] | None:
        """On a resumed run, load the last checkpoint into everything registered, report its charts again and
        return the loop's own values (``save``'s ``loop``); otherwise delete any stale checkpoint, return None."""
        ctx, rep = self.ctx, self.ctx.reporter
        workdir = rep.workdir
        saved = load_checkpoint(workdir, ctx.config.to_dict()) if ctx.resume else None
        if saved is None:
            if ctx.resume:
                rep.log("resume: no checkpoint of this search was found; it starts over", "warning")
            clear_checkpoint(workdir)
            return None
        for name, obj in self.states.items():
            obj.load_state_dict(saved["states"][name])
        for name, g in self.streams.items():
            g.set_state(saved["streams"][name])
        set_random_state(saved["random"], ctx.device)
        self.recorder.replay(saved["reported"])
        loop = saved["loop"]
        rep.log(f"resumed from the checkpoint after epoch {loop['epochs_done']}/{ctx.config.epochs} (step "
                f"{loop['step']}): its charts are reported again and the search goes on from there")  # fmt: skip
        return loop

    def save(self, strategy: str, loop: dict[str, Any]) -> None:
        """Checkpoint everything registered with the loop's own values (``epochs_done`` and ``step`` among them)."""
        state = {
            "config": self.ctx.config.to_dict(),
            "states": {name: obj.state_dict() for name, obj in self.states.items()},
            "streams": {name: g.get_state() for name, g in self.streams.items()},
            "random": random_state(self.ctx.device),
            "reported": self.recorder.calls[self.mark :],
            "loop": loop,
        }
        info = {"strategy": strategy, "epochs_done": loop["epochs_done"], "epochs": self.ctx.config.epochs,
                "step": loop["step"]}  # fmt: skip
        save_checkpoint(self.ctx.reporter.workdir, state, info)


def with_checkpoints(ctx: SearchContext) -> tuple[SearchContext, Checkpointer]:
    """``ctx`` with a reporter that records what the search charts, and the checkpointer that saves it."""
    recorder = RecordingReporter(ctx.reporter)
    ctx = dataclasses.replace(ctx, reporter=recorder)  # type: ignore[arg-type]
    return ctx, Checkpointer(ctx, recorder)


def load_checkpoint(workdir: str | Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state (on the CPU: modules and optimisers move it to their device as they load it) when it
    belongs to this configuration, else None (a changed configuration starts over)."""
    path = checkpoint_path(workdir)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written by this module
    return state if state.get("config") == config else None
