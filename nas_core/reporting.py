"""The only channel through which the engine talks to the outside world.

Strategies and the pipeline call a Reporter; the worker passes one that writes to the database,
tests and notebooks pass :class:`MemoryReporter`. Nothing here imports storage or streamlit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass
class ArchitectureRecord:
    """One evaluated architecture, as stored and plotted on the Pareto chart."""

    genotype: str
    space: str
    accuracy: float | None
    accuracy_kind: str  # "test" (trained from scratch, held-out test) | "supernet-val" | "val"
    params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    latency_threads: int | None = None
    latency_device: str | None = None
    origin: str = "search"  # "search" | "final" | "preset" | "trial"
    checkpoint_path: str | None = None
    ntk_cond: float | None = None  # training-free proxies (TE-NAS), when known
    linear_regions: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Reporter(Protocol):
    """What a running search may say; every method must be cheap (implementations batch writes)."""

    workdir: Path

    def log(self, message: str, level: str = "info") -> None: ...

    def progress(self, fraction: float, phase: str, epoch: int, total_epochs: int) -> None: ...

    def epoch(self, phase: str, epoch: int, metrics: dict[str, float]) -> None: ...

    def alphas(self, step: int, epoch: int, rows: list[tuple[str, str, str, float]]) -> None: ...

    def genotype(self, step: int, epoch: int, genotype: str) -> None: ...

    def series(self, step: int, epoch: int, values: dict[str, float]) -> None:
        """Named scalars at one step (tau, entropy, kappa, MACs, ``beta/normal/2<-0`` ...), plotted over steps."""
        ...

    def event(self, kind: str, step: int, data: dict[str, Any]) -> None:
        """One structured record (a TE-NAS pruning decision, an AtomNAS shrink), shown as a table row."""
        ...

    def architecture(self, record: ArchitectureRecord) -> None: ...

    def artifact(self, kind: str, path: str, checksum: str = "") -> None: ...

    def should_stop(self) -> bool: ...

    def flush(self) -> None: ...


@dataclass
class MemoryReporter:
    """Keeps everything in lists; used by tests, notebooks and ``python -m nas_core`` dry runs."""

    workdir: Path = field(default_factory=lambda: Path("nas_runs") / "scratch")
    stop_after_steps: int | None = None
    echo: bool = False
    logs: list[tuple[float, str, str]] = field(default_factory=list)
    progresses: list[tuple[float, str, int, int]] = field(default_factory=list)
    epochs: list[tuple[str, int, dict[str, float]]] = field(default_factory=list)
    alpha_rows: list[tuple[int, int, str, str, str, float]] = field(default_factory=list)
    genotypes: list[tuple[int, int, str]] = field(default_factory=list)
    series_points: list[tuple[int, int, str, float]] = field(default_factory=list)
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    architectures: list[ArchitectureRecord] = field(default_factory=list)
    artifacts: list[tuple[str, str, str]] = field(default_factory=list)
    _stop_checks: int = 0

    def log(self, message: str, level: str = "info") -> None:
        self.logs.append((time.time(), level, message))
        if self.echo:
            print(f"[{level}] {message}", flush=True)

    def progress(self, fraction: float, phase: str, epoch: int, total_epochs: int) -> None:
        self.progresses.append((fraction, phase, epoch, total_epochs))

    def epoch(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((phase, epoch, dict(metrics)))

    def alphas(self, step: int, epoch: int, rows: list[tuple[str, str, str, float]]) -> None:
        self.alpha_rows.extend((step, epoch, c, e, o, w) for c, e, o, w in rows)

    def genotype(self, step: int, epoch: int, genotype: str) -> None:
        self.genotypes.append((step, epoch, genotype))

    def series(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.series_points.extend((step, epoch, str(k), float(v)) for k, v in values.items())

    def event(self, kind: str, step: int, data: dict[str, Any]) -> None:
        self.events.append((kind, step, dict(data)))

    def architecture(self, record: ArchitectureRecord) -> None:
        self.architectures.append(record)

    def artifact(self, kind: str, path: str, checksum: str = "") -> None:
        self.artifacts.append((kind, path, checksum))

    def should_stop(self) -> bool:
        self._stop_checks += 1
        return self.stop_after_steps is not None and self._stop_checks > self.stop_after_steps

    def flush(self) -> None:
        return None
