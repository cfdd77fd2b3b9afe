"""Multi-trial search: random search and regularized evolution (Real et al., AAAI 2019), each candidate trained.

A trial builds the candidate's stand-alone network at the search size (``channels``, ``cells_per_stage``),
trains it from scratch for ``epochs`` epochs on the training split (SGD, cosine, the final training's
recipe at ``final_lr``) and scores it by validation accuracy; the test split is never looked at during the
search. The best candidate is then trained again, at the final size, like every other strategy's result.

Trials run through an executor: in this process (``workers`` = 1) or on a pool of ``workers`` spawned
processes, one torch thread each, the data handed to each worker once; or, with ``executor=ray``, as Ray
tasks (``ray_executor.py``: on the cluster at ``RAY_ADDRESS``, else on a local instance). With several
workers, evolution runs asynchronously as in the paper (each finished trial joins the population and the
next child is bred at once), so no worker waits for a generation to finish.

Regularized (aging) evolution: the first ``population`` trials are random; after that each child mutates
the best of ``sample_size`` members drawn at random from the population, and the oldest member dies when
a child joins. The NB201 paper's REA settings are population 10 and sample size 3 (``R-EA.sh``).
Mutation changes one choice: one edge's op on NB201; one (op, input) pair of one DARTS cell; one block's
choice on the MobileNetV2-style space.

Trials are ranked by validation accuracy, or (``objective=mnas``) by MnasNet's reward (Tan et al., CVPR
2019) acc x (MACs / ``target_mmacs``)^w, w = ``mnas_alpha`` at or under the target and ``mnas_beta`` over it
(the paper's soft constraint: both -0.07), which makes the tournament and the final pick cost-aware; or
(``objective=pareto``) by validation accuracy and MACs together: evolution's tournament is NSGA-II's (front,
then crowding distance), and the search's pick is the front's most accurate trial. Every search logs the
trials' accuracy-MACs front, and the Monitor can train any trial at the final size.

On ``mobilenet`` the candidates are ProxylessNAS's space: every searchable block of the search table for
the input size (``digits``, ``cifar-search``, ``imagenet-search``) one of the six MBConvs
(kernel 3/5/7, expansion 3/6), or ``zero`` where the block keeps its shape; trials are built at the table's
own width and depth (``channels``/``cells_per_stage`` are cell-space settings).
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from nas_core.data import Dataset
from nas_core.errors import Cancelled, ConfigError
from nas_core.metrics import count_macs, count_params, latency_seconds, measure_latency
from nas_core.params import ParamSpec
from nas_core.pareto import crowding_distance, nondominated_ranks, pareto_mask
from nas_core.spaces import get_space
from nas_core.spaces.mobilenet import search_preset
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy
from nas_core.train import train_network

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig

if TYPE_CHECKING:
    from nas_core.strategies.ray_executor import RayTrialExecutor

#: what trials can be ranked by (the ``objective`` parameter)
OBJECTIVES: tuple[str, ...] = ("accuracy", "mnas", "pareto")
#: the two objectives of ``objective=pareto`` and of the front every search reports
TRIAL_OBJECTIVES: list[tuple[str, str]] = [("val_acc", "max"), ("macs", "min")]

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


def mnas_reward(acc: float, macs: float, target: float, alpha: float, beta: float) -> float:
    """MnasNet's multi-objective reward ACC x (cost / T)^w, w = ``alpha`` at or under the target, ``beta`` over it.

    Tan et al. (CVPR 2019): alpha = beta = -0.07 is the soft constraint (a 2x costlier network must be about
    5% more accurate to score the same); alpha = 0, beta = -1 the hard one. The paper's cost is measured
    latency on a phone; here it is MACs, which every trial counts exactly and which do not drift with the
    machine's load.
    """
    if target <= 0:
        raise ValueError("the MACs target must be > 0")
    ratio = macs / target
    return acc * ratio ** (alpha if ratio <= 1 else beta)


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
        from nas_core.strategies.ray_executor import RayTrialExecutor

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


def trial_executor(ctx: SearchContext) -> ReplayExecutor:
    """The executor the search's ``executor``/``workers`` params ask for, reusing a resumed run's trials."""
    p = ctx.params
    inner = make_executor(p["executor"], trial_settings(ctx), ctx.data, p["workers"], ctx.reporter.should_stop)
    if ctx.replay:
        ctx.reporter.log(f"resuming: {len(ctx.replay)} trial(s) of the earlier attempt are reused where the search "
                         "proposes them again (same trial number, same architecture)")  # fmt: skip
    return ReplayExecutor(inner, ctx.replay)


def trial_settings(ctx: SearchContext) -> TrialSettings:
    """What every trial of the search in ``ctx`` shares."""
    cfg = ctx.config
    return TrialSettings(
        ctx.space.name, cfg.channels, cfg.cells_per_stage, cfg.epochs, cfg.final_lr, cfg.batch_size, cfg.seed,
        cfg.channels_last, bool(ctx.params["latency"]), str(ctx.device),
    )  # fmt: skip


def trial_size(ctx: SearchContext) -> str:
    """The size trials are built at, for the search log."""
    if ctx.space.name == "mobilenet":
        return f"on the {search_preset(ctx.data.input_shape)!r} table"
    return f"at C={ctx.config.channels}, N={ctx.config.cells_per_stage}"


class TrialLedger:
    """The finished trials of one search: scores each under the objective, reports it, keeps the best.

    Every multi-trial strategy lands its trials here, so they all log, chart and rank trials alike.
    """

    def __init__(self, ctx: SearchContext, total: int) -> None:
        self.ctx, self.total = ctx, max(1, total)
        p = ctx.params
        self.mnas = p["objective"] == "mnas"
        self.ranked = {
            "mnas": f"MnasNet's reward (target {p['target_mmacs']:g} M MACs, w = {p['mnas_alpha']:g} under, "
            f"{p['mnas_beta']:g} over)",
            "pareto": "validation accuracy and MACs (Pareto fronts; the pick: the front's most accurate)",
        }.get(p["objective"], "validation accuracy")
        self.done: list[Trial] = []
        self.best: Trial | None = None

    def land(
        self, index: int, genotype: str, result: TrialScore, parent: int | None, how: str,
        extra: dict[str, Any] | None = None,
    ) -> Trial:  # fmt: skip
        """Record one finished trial: log line, series, ``trial`` event (with ``extra``), progress; check cancel."""
        ctx, p, rep = self.ctx, self.ctx.params, self.ctx.reporter
        acc, params, secs, macs, latency = result
        score = None
        if self.mnas:
            score = mnas_reward(acc, macs, p["target_mmacs"] * 1e6, p["mnas_alpha"], p["mnas_beta"])
        trial = Trial(index, genotype, acc, params, secs, parent, macs, score)
        self.done.append(trial)
        if self.best is None or self._better(trial, self.best):
            self.best = trial
            rep.genotype(len(self.done), len(self.done), genotype)
        scored = f", reward {score:.4f}" if score is not None else ""
        timed = f", {latency:.3f} ms" if latency is not None else ""
        rep.log(f"trial {index} ({how}): val acc {acc:.4f}{scored}, {params:,} params, "
                f"{macs / 1e6:.2f} M MACs{timed}, {secs:.1f} s: {genotype}")  # fmt: skip
        points = {"trial/val_acc": acc, "best/val_acc": self.best.val_acc}
        if score is not None:
            points |= {"trial/reward": score, "best/reward": self.best.fitness}
        rep.series(len(self.done), len(self.done), points)
        data = {"genotype": genotype, "val_acc": acc, "params": params, "macs": macs, "seconds": secs,
                "parent": parent, **(extra or {})}  # fmt: skip
        data |= {"reward": score} if score is not None else {}
        rep.event("trial", index, data | ({"latency_ms": latency} if latency is not None else {}))
        ctx.report_progress(len(self.done) / self.total, min(ctx.config.epochs, len(self.done)))
        ctx.check_stop()
        return trial

    def _better(self, a: Trial, b: Trial) -> bool:
        """Whether ``a`` ranks above ``b``; under objective=pareto equal accuracy goes to fewer MACs (the front)."""
        if self.ctx.params["objective"] == "pareto" and a.fitness == b.fitness:
            return a.macs < b.macs
        return a.fitness > b.fitness

    def outcome(self, extra: dict[str, Any] | None = None) -> SearchOutcome:
        """The best trial as the search's result (trained again at the final size by the pipeline)."""
        best, p = self.best, self.ctx.params
        assert best is not None
        self.ctx.reporter.log(f"best of {len(self.done)} trials by {self.ranked}: trial {best.index}, val acc "
                              f"{best.val_acc:.4f}, {best.macs / 1e6:.2f} M MACs")  # fmt: skip
        front = measured_front(self.done)
        self.ctx.reporter.log(f"Pareto front of all trials (val acc against MACs): trials {', '.join(map(str, front))}")
        out: dict[str, Any] = {"trials": len(self.done), "best_trial": best.index, "objective": p["objective"],
                               "front": front}  # fmt: skip
        if best.score is not None:
            out["reward"] = best.score
        return SearchOutcome(best.genotype, best.val_acc, "trial-val", out | (extra or {}))


class MultiTrialStrategy(Strategy):
    """Shared loop: propose candidates, keep ``workers`` trials running, report each one as it lands."""

    derives_from_weights = False
    resumable = True

    common_params: tuple[ParamSpec, ...] = (
        ParamSpec("trials", 20, "int", "Candidates trained and scored in all", 1, 100_000),
        ParamSpec("workers", 1, "int", "Trials at once (1 = in this process; more = a pool, or Ray tasks)", 1, 64),
        ParamSpec(
            "executor",
            "process",
            "choice",
            "Where trials run: process (this process, or a pool for several workers) or ray (Ray tasks: "
            "the cluster at RAY_ADDRESS, else a local Ray instance; pip install ray)",
            choices=("process", "ray"),
        ),
        ParamSpec(
            "objective",
            "accuracy",
            "choice",
            "What trials are ranked by: accuracy (validation); mnas: MnasNet's reward val acc x "
            "(MACs / target_mmacs)^w, w = mnas_alpha at or under the target and mnas_beta over it; or pareto: "
            "validation accuracy and MACs together (evolution's tournament by non-dominated front, then "
            "crowding distance, as NSGA-II; the result is the front's most accurate trial)",
            choices=OBJECTIVES,
        ),
        ParamSpec(
            "target_mmacs", 0.0, "float", "MACs target in millions, for objective=mnas (required there)", 0.0, 1e6
        ),
        ParamSpec(
            "mnas_alpha",
            -0.07,
            "float",
            "Reward exponent at or under the target (MnasNet soft: -0.07, hard: 0)",
            -10.0,
            0.0,
        ),
        ParamSpec(
            "mnas_beta", -0.07, "float", "Reward exponent over the target (MnasNet soft: -0.07, hard: -1)", -10.0, 0.0
        ),
        ParamSpec(
            "latency",
            False,
            "bool",
            "Also measure each trial's latency (batch 1, one thread, over NAS_LATENCY_SECONDS); trials on several "
            "workers are timed side by side, so use workers=1 for steady figures",
        ),
    )

    def search_units(self, config: ExperimentConfig) -> float:
        return float(self.total_trials(config) * config.epochs) * TRIAL_EPOCH_COST

    def validate(self, config: ExperimentConfig) -> None:
        if config.params["workers"] > self.total_trials(config):
            raise ConfigError("params.workers", f"more workers than trials ({self.total_trials(config)})")
        if config.params["executor"] == "ray":
            from nas_core.strategies.ray_executor import RAY_REQUIREMENT, ray_available

            if not ray_available():  # before anything is queued: the CLI and the Launch page share this check
                raise ConfigError(
                    "params.executor",
                    f"Ray is not installed here: pip install {RAY_REQUIREMENT} (or use executor=process)",
                )
        if config.params["objective"] == "mnas" and not config.params["target_mmacs"] > 0:
            raise ConfigError("params.target_mmacs", "objective=mnas needs a MACs target > 0 (in millions)")

    def propose(
        self, rng: random.Random, submitted: int, done: list[Trial], space: Any, p: dict[str, Any], shape: Any
    ) -> tuple[Any, int | None]:
        """The next candidate and its parent's trial index (None for a random draw); ``shape`` is the input's."""
        raise NotImplementedError

    def total_trials(self, config: ExperimentConfig) -> int:
        """How many trials the search trains in all (progress, and the workers check)."""
        return int(config.params["trials"])

    def search(self, ctx: SearchContext) -> SearchOutcome:
        cfg, p, rep, space = ctx.config, ctx.params, ctx.reporter, ctx.space
        rng = random.Random(cfg.seed)
        total, workers = p["trials"], p["workers"]
        ledger = TrialLedger(ctx, total)
        parents: dict[int, int | None] = {}
        submitted = 0
        with trial_executor(ctx) as ex:
            rep.log(
                f"{self.label}: {total} trials of {cfg.epochs} epoch(s) each {trial_size(ctx)}, ranked by "
                f"{ledger.ranked}; {workers} at once on {ex.where}{self.settings_text(p)}"
            )
            while len(ledger.done) < total:
                while submitted < total and ex.busy() < ex.capacity:
                    g, parent = self.propose(rng, submitted, ledger.done, space, p, ctx.data.input_shape)
                    parents[submitted] = parent
                    ex.submit(space.format(g), submitted)
                    submitted += 1
                index, genotype, score = ex.next_done()
                parent = parents[index]
                how = f"mutant of trial {parent}" if parent is not None else "random"
                ledger.land(index, genotype, score, parent, how + (", reused" if index in ex.replayed else ""))
        return ledger.outcome()

    def settings_text(self, p: dict[str, Any]) -> str:
        return ""


class RandomSearch(MultiTrialStrategy):
    """Uniform random sampling: the baseline every NAS method has to beat (Li and Talwalkar, 2019)."""

    name = "random"
    label = "Random search"
    description = "Trains `trials` uniformly random architectures for `epochs` epochs each; keeps the best by val."
    params = MultiTrialStrategy.common_params

    def propose(
        self, rng: random.Random, submitted: int, done: list[Trial], space: Any, p: dict[str, Any], shape: Any
    ) -> tuple[Any, int | None]:
        return space.sample(rng, shape), None


class RegularizedEvolution(MultiTrialStrategy):
    """Aging evolution: tournament selection of a parent, one mutation, the oldest member dies."""

    name = "evolution"
    label = "Regularized evolution"
    description = (
        "Aging evolution (Real et al. 2019): random population, then each child mutates the best of "
        "`sample_size` random members and replaces the oldest; every candidate is trained for `epochs` epochs."
    )
    params = (
        *MultiTrialStrategy.common_params,
        ParamSpec("population", 10, "int", "Population size (the first trials are random)", 2, 10_000),
        ParamSpec("sample_size", 3, "int", "Members drawn per tournament; the best one is the parent", 1, 10_000),
    )

    def validate(self, config: ExperimentConfig) -> None:
        super().validate(config)
        p = config.params
        if p["sample_size"] > p["population"]:
            raise ConfigError("params.sample_size", f"larger than the population ({p['population']})")
        if p["population"] > p["trials"]:
            raise ConfigError("params.population", f"larger than the number of trials ({p['trials']})")

    def settings_text(self, p: dict[str, Any]) -> str:
        return f"; population {p['population']}, sample size {p['sample_size']}"

    def propose(
        self, rng: random.Random, submitted: int, done: list[Trial], space: Any, p: dict[str, Any], shape: Any
    ) -> tuple[Any, int | None]:
        pareto = p["objective"] == "pareto"
        return evolve(rng, submitted, done, space, p["population"], p["sample_size"], shape, pareto)


def trial_table(trials: list[Trial]) -> pd.DataFrame:
    """Validation accuracy and MACs of ``trials``, one row each, for the Pareto functions."""
    return pd.DataFrame({"val_acc": [t.val_acc for t in trials], "macs": [t.macs for t in trials]})


def pareto_keys(trials: list[Trial]) -> list[tuple[int, float]]:
    """NSGA-II's order of ``trials`` as (-front number, crowding distance within its front): larger is better."""
    table = trial_table(trials)
    ranks = nondominated_ranks(table, TRIAL_OBJECTIVES)
    crowd = np.zeros(len(trials))
    for front in np.unique(ranks):
        members = np.flatnonzero(ranks == front)
        crowd[members] = crowding_distance(table.iloc[members], TRIAL_OBJECTIVES)
    return [(-int(r), float(c)) for r, c in zip(ranks, crowd)]


def measured_front(done: list[Trial]) -> list[int]:
    """Trial indices on the Pareto front of measured validation accuracy against MACs."""
    mask = pareto_mask(trial_table(done), TRIAL_OBJECTIVES)
    return sorted(t.index for t, on in zip(done, mask) if on)


def population_of(done: list[Trial], size: int) -> list[Trial]:
    """The living population after ``done`` (in finishing order): the ``size`` youngest, oldest first."""
    return done[-size:]


def evolve(
    rng: random.Random,
    submitted: int,
    done: list[Trial],
    space: Any,
    population: int,
    sample_size: int,
    input_shape: Any = None,
    pareto: bool = False,
) -> tuple[Any, int | None]:
    """The first ``population`` candidates are random; then the winner of a tournament of ``sample_size``
    living members (ties: the younger) is mutated. With several workers a tournament may start before the
    whole first population has finished: it then draws from those that have (at least one always has).

    ``pareto``: the tournament is NSGA-II's (Deb et al., 2002) over validation accuracy and MACs: the member on
    the better non-dominated front of the living population wins, then the one with the larger crowding
    distance on that front (the less crowded part of the front), then the younger."""
    if submitted < population or not done:
        return space.sample(rng, input_shape), None
    alive = population_of(done, population)
    contenders = rng.sample(range(len(alive)), min(sample_size, len(alive)))  # positions: later = younger
    keys = pareto_keys(alive) if pareto else [(0, t.fitness) for t in alive]
    parent = alive[max(contenders, key=lambda i: (*keys[i], i))]
    return space.mutate(parent.genotype, rng), parent.index


RANDOM = RandomSearch()
EVOLUTION = RegularizedEvolution()
