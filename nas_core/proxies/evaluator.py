"""Scoring architectures with both TE-NAS proxies: the registry of proxy networks per space, the evaluator that
scores many op-weight settings on the same networks, batches and inits, and the proxies of one genotype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nas_core.proxies.darts import DARTS_PROXIES
from nas_core.proxies.measures import INITS, init_proxy, region_inputs
from nas_core.proxies.nb201 import NB201_PROXIES
from nas_core.proxies.networks import ProxyNetworks
from nas_core.proxies.pool import ProxyPool
from nas_core.spaces import get_space

#: The TE-NAS proxy networks of each space: one line per space (the space's own NTK batch is its
#: ``tenas_ntk_batch``; a space without an entry here has no proxies).
PROXY_NETWORKS: dict[str, ProxyNetworks] = {"nb201": NB201_PROXIES, "darts": DARTS_PROXIES}
#: the spaces the proxies are built for
PROXY_SPACES: tuple[str, ...] = tuple(PROXY_NETWORKS)


def proxy_networks(space: str) -> ProxyNetworks:
    """The proxy networks and measures of ``space``; ValueError naming the spaces that have them."""
    if space not in PROXY_NETWORKS:
        raise ValueError(f"the TE-NAS proxies are built for the spaces {', '.join(PROXY_SPACES)}, not {space!r}")
    return PROXY_NETWORKS[space]


@dataclass
class ProxyEvaluator:
    """Scores op-weight settings with both proxies; one repeat = one init and one batch.

    ``evaluate(weights_list, seed)`` initialises both proxy nets and draws the NTK batch from ``seed``,
    then scores every weight setting on those same networks and inputs, so the deltas between a
    supernet and its candidates compare like with like (as the reference copies the weights across).
    The region inputs are drawn once (the reference reseeds its loader with the same seed each time).

    A weight setting is, on ``space="nb201"``, one (6 x 5) matrix; on ``space="darts"``, the (14 x 8)
    matrices of both cell types as ``{"normal": w, "reduce": w}`` or a ``(normal, reduce)`` pair (an
    all-zero row: the edge is removed). ``ntk_batch=None`` takes the reference's batch for the space.

    ``workers`` > 1 scores the settings on that many spawned single-threaded processes (see
    :mod:`nas_core.proxies.pool`), with the same numbers as here; call :meth:`close` (or use ``with``) to
    stop them.
    """

    x_train: torch.Tensor
    num_classes: int
    ntk_batch: int | None = None
    region_samples: int = 1000
    region_batches: int = 3
    init: str = "kaiming"
    seed: int = 0
    fast: bool = True
    space: str = "nb201"
    workers: int = 1
    #: the region-count inputs; None draws them from ``x_train`` (a worker replica is handed the parent's)
    region_x: list[torch.Tensor] | None = None
    #: where the nets run (``x_train`` may live anywhere); inits and draws come from CPU streams, so a setting
    #: is scored on the same weights and inputs on any device. Not the CPU: ``workers`` is taken as 1
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._space = proxy_networks(self.space)
        if self.ntk_batch is None:
            self.ntk_batch = get_space(self.space).tenas_ntk_batch
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; choose from {', '.join(INITS)}")
        if self.ntk_batch < 2:
            raise ValueError("ntk_batch must be >= 2")
        if self.region_samples < 1:
            raise ValueError("region_samples must be >= 1")
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        self.device = str(torch.device(self.device))  # "cpu", "cuda:0", ...
        if self.device != "cpu":
            self.workers = 1  # processes would share one GPU to no gain
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.ntk_net, self.region_net = self._space.build(self.num_classes, int(self.x_train.shape[1]))
        self.ntk_net.to(self.device)
        self.region_net.to(self.device)
        if self.region_x is None:
            gen = torch.Generator().manual_seed(self.seed + 7919)
            self.region_x = region_inputs(self.x_train, self.region_samples, self.region_batches, gen)
        self.region_x = [x.to(self.device) for x in self.region_x]
        self._pool: Any = None

    def settings(self) -> dict[str, Any]:
        """What the scores depend on besides the architecture, stored beside them so like is compared with like."""
        n = min(int(self.ntk_batch), len(self.x_train))  # type: ignore[arg-type]
        out = {"ntk_batch": n, "region_samples": self.region_samples, "init": self.init, "seed": self.seed}
        if self.device != "cpu":  # same inits and inputs, other float rounding
            out["device"] = torch.device(self.device).type
        return out

    def evaluate(self, weights_list: Sequence[Any], seed: int, check=None) -> list[tuple[float, int]]:
        """(kappa, regions) per weight setting, for one repeat seeded by ``seed``; ``check()`` between items."""
        return self.evaluate_repeats(weights_list, [seed], check)[0]

    def evaluate_repeats(
        self, weights_list: Sequence[Any], seeds: Sequence[int], check=None, done: Callable[[], None] | None = None
    ) -> list[list[tuple[float, int]]]:
        """Per seed (one repeat each), (kappa, regions) per weight setting; ``done()`` after each score.

        With ``workers`` > 1 every (repeat, setting) pair is a task on the process pool, so the repeats
        of a round keep all workers busy to its end; ``check()`` is polled while they run.
        """
        args = [self._space.args(w) for w in weights_list]  # bad settings fail before any work
        if self.workers > 1 and len(args) * len(seeds) > 1:
            if self._pool is None:
                self._pool = ProxyPool(self, self.workers)
            return self._pool.run(args, [(s, self.batch(s)) for s in seeds], check, done)
        out = []
        for seed in seeds:
            xb = self.reinit(seed)
            row = []
            for a in args:
                if check is not None:
                    check()
                row.append(self.score(xb, a))
                if done is not None:
                    done()
            out.append(row)
        return out

    def batch(self, seed: int) -> torch.Tensor:
        """The NTK batch of the repeat seeded by ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        n = min(int(self.ntk_batch), len(self.x_train))  # type: ignore[arg-type]
        idx = torch.randperm(len(self.x_train), generator=gen)[:n].to(self.x_train.device)
        return self.x_train[idx].float().to(self.device)

    def reinit(self, seed: int) -> torch.Tensor:
        """Initialise both nets for the repeat seeded by ``seed``; returns its NTK batch."""
        self.init_nets(seed)
        return self.batch(seed)

    def init_nets(self, seed: int) -> None:
        """Draw the nets' weights on the CPU (the same numbers on any device), then put them on the device."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for net, mode in ((self.ntk_net, "fan_out"), (self.region_net, "fan_in")):
                init_proxy(net.cpu(), self.init, mode)
                net.to(self.device)

    def score(self, xb: torch.Tensor, args: tuple[torch.Tensor, ...]) -> tuple[float, int]:
        """(kappa, regions) of one weight setting (its forward arguments) on the nets as initialised."""
        ntk = self._space.ntk if self.fast else self._space.ntk_reference
        args = tuple(a.to(self.device) for a in args)
        return ntk(self.ntk_net, xb, *args), self._space.regions(self.region_net, self.region_x, *args)

    def close(self) -> None:
        """Stop the worker processes, if any (a running task is abandoned)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> ProxyEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def genotype_proxies(
    genotype: Any,
    x_train: torch.Tensor,
    num_classes: int,
    *,
    repeats: int = 3,
    ntk_batch: int | None = None,
    region_samples: int = 1000,
    init: str = "kaiming",
    seed: int = 0,
    check=None,
    workers: int = 1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Both proxies of one stand-alone architecture (NB201 or DARTS), averaged over ``repeats`` inits and batches.

    The architecture is its space's proxy supernet with every other op (and, on DARTS, every other edge)
    pruned. The seeds per repeat are those TE-NAS's first round uses, so an architecture scores the same
    here as when a search reaches it with the same settings. ``ntk_batch=None``: the reference's batch for
    the space (72 on NB201, 14 on DARTS). ``workers`` > 1 scores the repeats on that many processes (on the
    CPU); ``device`` is where the proxy nets run.
    Returns ``ntk_cond``, ``linear_regions``, the per-repeat values and the settings.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    found = [(name, nets) for name, nets in PROXY_NETWORKS.items() if isinstance(genotype, nets.genotype_type)]
    if not found:
        kinds = " or ".join(nets.genotype_type.__name__ for nets in PROXY_NETWORKS.values())
        raise ValueError(f"proxies need a genotype of {kinds}, got {type(genotype).__name__}")
    space, w = found[0][0], found[0][1].genotype_weights(genotype)
    seeds = [seed * 100_003 + r for r in range(repeats)]
    with ProxyEvaluator(
        x_train, num_classes, ntk_batch=ntk_batch, region_samples=region_samples, init=init, seed=seed, space=space,
        workers=min(workers, repeats), device=device,
    ) as ev:  # fmt: skip
        per_repeat = [row[0] for row in ev.evaluate_repeats([w], seeds, check=check)]
    kappas, regions = [float(k) for k, _ in per_repeat], [float(r) for _, r in per_repeat]
    return {
        "ntk_cond": sum(kappas) / repeats,
        "linear_regions": sum(regions) / repeats,
        "ntk_cond_repeats": kappas,
        "linear_regions_repeats": regions,
        "settings": {**ev.settings(), "repeats": repeats},
    }
