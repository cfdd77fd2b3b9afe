"""Multi-trial evaluation on Ray: each trial is a Ray task, on an existing cluster or a local instance.

Ray is an optional install (``pip install ray==2.60.0``): the dashboard does not need it, and config
validation refuses ``executor=ray`` by name where it is missing. With ``RAY_ADDRESS`` set, the search
connects to that cluster; otherwise it starts a private local instance on 127.0.0.1 with ``workers`` CPUs
and shuts it down when the search ends, however it ends. Either way the ``nas_core`` package travels with
the job (``runtime_env.py_modules``), so Ray's workers import the same code as the driver wherever they
run and whatever their working directory. A trial is the same ``run_trial`` as in the process pool, on one
torch thread, so a candidate scores the same on either executor.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nas_core.data import Dataset
from nas_core.errors import Cancelled
from nas_core.strategies.multitrial.trial import TrialScore, TrialSettings, run_trial

#: the Ray release the project is tested with (requirements-dev.txt)
RAY_REQUIREMENT = "ray==2.60.0"

#: per worker process: the data set of the search it serves, fetched from the object store once
_worker_data: dict[str, Dataset] = {}


def ray_available() -> bool:
    """Whether Ray can be imported here, without importing it (validation runs in the dashboard's process)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken parent package
        return False


def runtime_env() -> dict[str, Any]:
    """Ship the ``nas_core`` package with the job: cluster nodes lack the repository, and a local instance's
    workers do not inherit the driver's ``sys.path``."""
    package = Path(__file__).resolve().parents[2]  # nas_core/ (this file is nas_core/strategies/multitrial/)
    return {"py_modules": [str(package)], "excludes": ["__pycache__/", "*.pyc"]}


@contextmanager
def _loopback_only() -> Iterator[None]:
    """Keep a local instance on 127.0.0.1: ``ray.init`` turns ``_node_ip_address="127.0.0.1"`` into the
    machine's outward address, and its servers then listen on every interface. Ray's single-machine mode
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once at import) keeps the node, hence each server, on
    loopback; it is switched on for this ``ray.init`` only."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _ray_trial(settings: TrialSettings, data_box: list[Any], genotype: str, index: int) -> TrialScore:
    """One trial in a Ray worker: one torch thread, as a pool worker; the data comes from the object store
    (the reference is boxed so that Ray hands it over unresolved and a reused worker deserializes it once)."""
    import ray

    torch.set_num_threads(1)
    (ref,) = data_box
    key = ref.hex()
    if key not in _worker_data:
        _worker_data.clear()
        _worker_data[key] = ray.get(ref).to(settings.device)
    return run_trial(settings, _worker_data[key], genotype, index)


class RayTrialExecutor:
    """``TrialExecutor``'s interface on Ray: at most ``workers`` trials in flight, each a one-CPU task."""

    def __init__(self, settings: TrialSettings, data: Dataset, workers: int, stop: Callable[[], bool]) -> None:
        self.settings, self.data, self.workers, self.stop = settings, data, workers, stop
        self.address = os.environ.get("RAY_ADDRESS") or None
        self.where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
        self._ray: Any = None
        self._started = False  # this executor called ray.init, so it calls ray.shutdown
        self._remote: Any = None
        self._data_ref: Any = None
        self._pending: dict[int, tuple[str, Any]] = {}

    def __enter__(self) -> RayTrialExecutor:
        try:
            import ray
        except ImportError as exc:
            raise RuntimeError(f"executor=ray needs Ray: pip install {RAY_REQUIREMENT}") from exc
        self._ray = ray
        if ray.is_initialized():  # a notebook's own ray.init() is used as it is, and left running
            self.where = "the Ray session already open in this process"
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report, no banner about it
            quiet: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
            if self.address:
                ray.init(address=self.address, runtime_env=runtime_env(), **quiet)
            else:
                with _loopback_only():
                    ray.init(
                        address="local",
                        num_cpus=self.workers,
                        include_dashboard=False,
                        _node_ip_address="127.0.0.1",
                        runtime_env=runtime_env(),
                        **quiet,
                    )
            self._started = True
        try:
            self._data_ref = ray.put(self.data.to("cpu"))  # once; every task gets the reference
            self._remote = ray.remote(num_cpus=1, num_gpus=self._gpu_share(), max_retries=0)(_ray_trial)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _gpu_share(self) -> float:
        """A trial's share of a GPU when the run trains on CUDA (Ray hides the GPUs from tasks that ask for
        none): ``workers`` trials share one GPU; a cluster without GPUs is refused rather than left waiting."""
        if not self.settings.device.startswith("cuda"):
            return 0.0
        gpus = float(self._ray.cluster_resources().get("GPU", 0.0))
        if gpus <= 0:
            raise RuntimeError(f"device={self.settings.device}: {self.where} has no GPU; use device=cpu with Ray")
        return min(1.0, gpus / self.workers)

    def __exit__(self, *exc: object) -> None:
        self._cancel_pending()
        self._data_ref = None
        if self._started:
            self._started = False
            self._ray.shutdown()

    def _cancel_pending(self) -> None:
        """Kill the running trials' worker processes (a cancelled search does not wait for them)."""
        for _, ref in self._pending.values():
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished, or the connection is gone: nothing to stop
                pass
        self._pending.clear()

    @property
    def capacity(self) -> int:
        return max(1, self.workers)

    def submit(self, genotype: str, index: int) -> None:
        ref = self._remote.remote(self.settings, [self._data_ref], genotype, index)
        self._pending[index] = (genotype, ref)

    def busy(self) -> int:
        return len(self._pending)

    def next_done(self) -> tuple[int, str, TrialScore]:
        """Block until a submitted trial finishes, polling for cancel; cancel kills the tasks in flight."""
        by_ref = {ref: index for index, (_, ref) in self._pending.items()}
        while True:
            ready, _ = self._ray.wait(list(by_ref), num_returns=1, timeout=0.05)
            if ready:
                index = by_ref[ready[0]]
                genotype, _ = self._pending.pop(index)
                return index, genotype, tuple(self._ray.get(ready[0]))  # type: ignore[return-value]
            if self.stop():
                self._cancel_pending()
                raise Cancelled("cancel requested")
