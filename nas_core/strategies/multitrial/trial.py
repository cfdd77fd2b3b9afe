"""One trial of a multi-trial search: train a candidate for a few epochs and measure it (what a pool process or a
Ray task runs). Only plain data crosses to those processes: the settings, the data set, a genotype text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from nas_core.data import Dataset
from nas_core.metrics import count_macs, count_params, latency_seconds, measure_latency
from nas_core.spaces import get_space
from nas_core.train import train_network

#: rough cost of one trial epoch at the search size against one final-training epoch (progress and ETA)
TRIAL_EPOCH_COST = 0.5


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of one search shares (picklable: it goes to pool workers once)."""

    space: str
    channels: int
    cells_per_stage: int
    epochs: int
    lr: float
    batch_size: int
    seed: int
    channels_last: bool
    latency: bool = False  # time each trial's forward pass too (batch 1, one thread)
    device: str = "cpu"  # where trials train (the run's resolved device); pool and Ray workers move the data there


TrialScore = tuple[float, int, float, int, float | None]  # val accuracy, params, seconds, MACs, latency ms


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate."""

    index: int
    genotype: str
    val_acc: float
    params: int
    seconds: float
    parent: int | None = None
    macs: int = 0
    score: float | None = None  # what trials are ranked by when it is not the accuracy (objective=mnas)

    @property
    def fitness(self) -> float:
        """The trial's rank key: its score under the search's objective, else its validation accuracy."""
        return self.val_acc if self.score is None else self.score


class _Silent:
    """The reporter a trial trains with: its epochs stay private; cancel reaches it through ``should_stop``."""

    def __init__(self, stop: Callable[[], bool]) -> None:
        self._stop = stop

    def should_stop(self) -> bool:
        return self._stop()

    def epoch(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        return None

    def progress(self, fraction: float, phase: str, epoch: int, total_epochs: int) -> None:
        return None


def run_trial(
    settings: TrialSettings, data: Dataset, genotype: str, index: int, stop: Callable[[], bool] = lambda: False
) -> TrialScore:
    """Train one candidate from scratch and return (validation accuracy, params, seconds, MACs per image,
    latency in ms or None when ``settings.latency`` is off).

    The latency is the result's measurement (:func:`nas_core.metrics.measure_latency`, over
    ``NAS_LATENCY_SECONDS``), taken after training, so a trial's seconds include it."""
    t0 = time.perf_counter()
    space = get_space(settings.space)
    torch.manual_seed(settings.seed * 1_000_003 + index)
    net = space.build_network(genotype, data.num_classes, data.input_shape, settings.channels, settings.cells_per_stage)
    res = train_network(
        net,
        data,
        settings.epochs,
        _Silent(stop),  # type: ignore[arg-type]
        lr=settings.lr,
        batch_size=settings.batch_size,
        seed=settings.seed + index,
        channels_last=settings.channels_last,
    )
    net = net.cpu()  # counted and timed on the CPU, as results are
    macs = count_macs(net, data.input_shape)
    latency = None
    if settings.latency:
        latency = float(measure_latency(net, data.input_shape, threads=1, min_seconds=latency_seconds())["latency_ms"])
    return float(res["val_acc"]), count_params(net), time.perf_counter() - t0, macs, latency
