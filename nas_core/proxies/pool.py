"""TE-NAS proxy scores on a pool of spawned single-threaded processes.

The proxy nets are tiny (3-12 channels), so one NTK is thousands of small kernels: a core is used best
by one process running them one after the other. On the 2-core box, two such processes scored the
first round's candidates (batch 72 of 3x32x32) 1.15-1.23x faster than one process on two threads
(2.96-3.14 s against 3.62 s per candidate; ``bench/bench_tenas.py --threads 2 --pool-ab``): the
threads of one process still share its interpreter lock between the small kernels.

Each worker holds a replica of the evaluator: the same nets, built and initialised from the same seeds,
and the same region inputs; the training data set stays in the parent, which sends each task its NTK
batch. Scores equal those computed in the parent.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from nas_core.proxies.evaluator import ProxyEvaluator

_replica: dict[str, Any] = {}


def _replica_state(ev: ProxyEvaluator) -> dict[str, Any]:
    """What a worker needs to rebuild ``ev`` without its training data: the fields (region inputs included)
    and the input channels, the one thing the nets take from the data."""
    fields = {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev) if f.name not in ("x_train", "workers")}
    return {"fields": fields, "in_ch": int(ev.x_train.shape[1]), "factory": type(ev)}


def _init(state: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    empty = torch.empty(0, state["in_ch"], 1, 1)  # the nets are built from its channel count alone
    # the evaluator's class travels by reference (pickled as its import path): this module need not import it
    _replica["ev"], _replica["seed"] = state["factory"](empty, **state["fields"]), None


def _score(seed: int, xb: torch.Tensor, args: tuple[torch.Tensor, ...]) -> tuple[float, int]:
    ev: ProxyEvaluator = _replica["ev"]
    if _replica["seed"] != seed:  # tasks arrive grouped by repeat: one init per repeat and worker
        ev.init_nets(seed)
        _replica["seed"] = seed
    return ev.score(xb, args)


class ProxyPool:
    """``workers`` spawned processes, each scoring one (repeat, weight setting) task at a time."""

    def __init__(self, ev: ProxyEvaluator, workers: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # no forked torch or OpenMP state
        self._pool = ctx.Pool(workers, initializer=_init, initargs=(_replica_state(ev),))

    def run(
        self,
        args: Sequence[tuple[torch.Tensor, ...]],
        batches: Sequence[tuple[int, torch.Tensor]],
        check: Callable[[], None] | None = None,
        done: Callable[[], None] | None = None,
    ) -> list[list[tuple[float, int]]]:
        """Scores of every setting (``args``) for every repeat (``(seed, NTK batch)``), as ``[repeat][setting]``."""
        pending = {
            (r, i): self._pool.apply_async(_score, (seed, xb, a))
            for r, (seed, xb) in enumerate(batches)
            for i, a in enumerate(args)
        }
        out: list[list[Any]] = [[None] * len(args) for _ in batches]
        while pending:
            for (r, i), res in list(pending.items()):
                if res.ready():
                    out[r][i] = res.get()  # a worker's exception is raised here
                    del pending[(r, i)]
                    if done is not None:
                        done()
            if check is not None:
                check()
            if pending:
                time.sleep(0.01)
        return out

    def close(self) -> None:
        self._pool.terminate()  # a cancelled search does not wait for the task in flight
        self._pool.join()
