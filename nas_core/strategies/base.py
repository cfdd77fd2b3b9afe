"""The one interface every search strategy implements, and the context it runs in."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from nas_core.data import Dataset
from nas_core.errors import Cancelled
from nas_core.params import ParamSpec
from nas_core.reporting import Reporter
from nas_core.spaces import SPACES
from nas_core.spaces.base import SearchSpace

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig


@dataclass
class SearchContext:
    """What a strategy gets: validated config, space, data, the reporter and its share of progress."""

    config: ExperimentConfig
    space: SearchSpace
    data: Dataset
    reporter: Reporter
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    progress_span: tuple[float, float] = (0.0, 1.0)
    #: a resumed multi-trial search's finished trials: (trial number, genotype) -> (val acc, params, s, MACs,
    #: latency ms or None)
    replay: dict[tuple[int, str], tuple[float, int, float, int, float | None]] = field(default_factory=dict)
    #: a resumed run: a search with checkpoints (the one-shot family) goes on from its last one
    resume: bool = False

    @property
    def params(self) -> dict[str, Any]:
        return self.config.params

    def report_progress(self, done: float, epoch: int) -> None:
        """Map the search's own fraction ``done`` into the experiment's overall progress."""
        lo, hi = self.progress_span
        self.reporter.progress(lo + (hi - lo) * min(1.0, max(0.0, done)), "search", epoch, self.config.epochs)

    def check_stop(self) -> None:
        if self.reporter.should_stop():
            raise Cancelled("cancel requested")


@dataclass
class SearchOutcome:
    """The derived architecture and what the search knows of it before training from scratch."""

    genotype: str
    accuracy: float | None = None  # supernet validation accuracy, when the strategy has one
    accuracy_kind: str = "supernet-val"
    extra: dict[str, Any] = field(default_factory=dict)
    #: A stand-alone network the search trained itself (AtomNAS shrinks while it trains): the pipeline
    #: evaluates and exports it as is instead of training ``genotype`` from scratch. It must be the network
    #: ``space.build_network(genotype, ...)`` builds, with trained weights, so exports rebuild it.
    network: torch.nn.Module | None = None


class Strategy(ABC):
    """A search method. Stateless: all run state lives inside :meth:`search`."""

    name: str
    label: str
    description: str
    params: tuple[ParamSpec, ...]
    #: cost of one search epoch relative to one epoch of training the final network (progress/ETA)
    relative_cost: float = 2.0
    #: True when the search itself trains the final network (returns ``SearchOutcome.network``): no final
    #: training phase follows, so progress and ETA give the search the whole run.
    trains_network: bool = False
    #: True when the architecture is read off trained architecture weights (the DARTS family, ProxylessNAS):
    #: the Monitor's warning about parameter-free ops taking over (DARTS's collapse) is about such searches only.
    derives_from_weights: bool = True
    #: True when a resumed run goes on from where the last attempt stopped (one-shot searches from their last
    #: epoch's checkpoint, multi-trial searches from their finished trials); others start over
    resumable: bool = False

    @property
    def spaces(self) -> tuple[str, ...]:
        """The registered spaces that declare this strategy (``SearchSpace.strategies``): the space says what
        runs on it, so a new space is one module and a registry line, with no strategy to edit."""
        return tuple(name for name, space in SPACES.items() if self.name in space.strategies)

    def search_units(self, config: ExperimentConfig) -> float:
        """The search's cost in final-training epochs, for progress and ETA (multi-trial: trials x epochs)."""
        return config.epochs * self.relative_cost

    def validate(self, config: ExperimentConfig) -> None:
        """Refuse settings this strategy cannot run with, before anything is queued (raise ConfigError).

        Called by :meth:`ExperimentConfig.validated` once the parameters are coerced; checks that need the
        data or the network stay in :meth:`search`.
        """
        return None

    @abstractmethod
    def search(self, ctx: SearchContext) -> SearchOutcome:
        """Run the search, reporting as it goes; raise :class:`Cancelled` when asked to stop."""

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "spaces": list(self.spaces),
            "params": [p.to_dict() for p in self.params],
        }
