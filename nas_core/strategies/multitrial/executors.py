"""Where trials run: one after the other in this process or on a local process pool (:class:`TrialExecutor`),
on Ray (:mod:`~nas_core.strategies.multitrial.ray_executor`), and a resumed search's finished trials replayed
instead of trained again (:class:`ReplayExecutor`).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from nas_core.data import Dataset
from nas_core.errors import Cancelled
from nas_core.strategies.multitrial.trial import TrialScore, TrialSettings, run_trial

if TYPE_CHECKING:
    from nas_core.strategies.multitrial.ray_executor import RayTrialExecutor


_worker_state: dict[str, Any] = {}


def _pool_init(settings: TrialSettings, data: Dataset) -> None:
    torch.set_num_threads(1)
    _worker_state["settings"], _worker_state["data"] = settings, data.to(settings.device)


def _pool_trial(genotype: str, index: int) -> TrialScore:
    return run_trial(_worker_state["settings"], _worker_state["data"], genotype, index)


class TrialExecutor:
    """Runs trials and yields them as they finish: in this process, or on a pool of spawned workers.

    ``RayTrialExecutor`` (``ray_executor.py``) has the same interface: ``capacity``, ``submit``, ``busy``,
    ``next_done``, used as a context manager that frees its workers however the search ends."""

    def __init__(self, settings: TrialSettings, data: Dataset, workers: int, stop: Callable[[], bool]) -> None:
        self.settings, self.data, self.workers, self.stop = settings, data, workers, stop
        self._pool: Any = None
        self._pending: dict[int, tuple[str, Any]] = {}

    @property
    def where(self) -> str:
        """Where the trials run, for the search log."""
        return "a pool of processes" if self.workers > 1 else "this process"

    def __enter__(self) -> TrialExecutor:
        if self.workers > 1:
            ctx = multiprocessing.get_context("spawn")  # no forked torch state; the data goes once per worker
            init = (self.settings, self.data.to("cpu"))  # each worker moves its copy to the run's device
            self._pool = ctx.Pool(self.workers, initializer=_pool_init, initargs=init)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()  # a cancelled search does not wait for running trials
            self._pool.join()

    @property
    def capacity(self) -> int:
        return max(1, self.workers)

    def submit(self, genotype: str, index: int) -> None:
        if self._pool is None:
            self._pending[index] = (genotype, None)
        else:
            self._pending[index] = (genotype, self._pool.apply_async(_pool_trial, (genotype, index)))

    def busy(self) -> int:
        return len(self._pending)

    def next_done(self) -> tuple[int, str, TrialScore]:
        """Block until a submitted trial finishes (polling for cancel); in-process trials run here."""
        if self._pool is None:
            index = next(iter(self._pending))
            genotype, _ = self._pending.pop(index)
            return index, genotype, run_trial(self.settings, self.data, genotype, index, self.stop)
        while True:
            for index, (genotype, res) in list(self._pending.items()):
                if res.ready():
                    del self._pending[index]
                    return index, genotype, res.get()
            if self.stop():
                raise Cancelled("cancel requested")
            time.sleep(0.05)


def make_executor(
    executor: str, settings: TrialSettings, data: Dataset, workers: int, stop: Callable[[], bool]
) -> TrialExecutor | RayTrialExecutor:
    """The strategy's ``executor`` parameter as an executor; Ray is imported only when asked for."""
    if executor == "ray":
        from nas_core.strategies.multitrial.ray_executor import RayTrialExecutor

        return RayTrialExecutor(settings, data, workers, stop)
    return TrialExecutor(settings, data, workers, stop)


class ReplayExecutor:
    """A resumed search's executor: a trial proposed again with the same number and architecture as one the
    earlier attempt finished gets that attempt's result at once (it would train the same way: its seed is the
    trial number's); every other trial goes to the wrapped executor. A search that proposes deterministically
    (one worker) thus replays up to where the earlier attempt stopped; with several workers, trials finish
    in another order, so evolution's later proposals can differ and only those that match are reused."""

    def __init__(self, inner: TrialExecutor | RayTrialExecutor, known: dict[tuple[int, str], TrialScore]) -> None:
        self.inner, self.known = inner, dict(known)
        self.replayed: set[int] = set()
        self._ready: list[tuple[int, str, TrialScore]] = []

    @property
    def where(self) -> str:
        return self.inner.where

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def __enter__(self) -> ReplayExecutor:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)

    def submit(self, genotype: str, index: int) -> None:
        result = self.known.pop((index, genotype), None)
        if result is None:
            self.inner.submit(genotype, index)
        else:
            self.replayed.add(index)
            self._ready.append((index, genotype, result))

    def busy(self) -> int:
        return self.inner.busy() + len(self._ready)

    def next_done(self) -> tuple[int, str, TrialScore]:
        return self._ready.pop(0) if self._ready else self.inner.next_done()
