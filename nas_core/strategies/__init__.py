"""Search strategies by name (one module a family)."""

from __future__ import annotations

from nas_core.strategies.atomnas import ATOMNAS
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy
from nas_core.strategies.darts import DARTS_V1, DARTS_V2, SINGLE_DARTS
from nas_core.strategies.fixed import FIXED
from nas_core.strategies.gdas import GDAS
from nas_core.strategies.multitrial import EVOLUTION, PROGRESSIVE, RANDOM
from nas_core.strategies.pcdarts import PC_DARTS
from nas_core.strategies.proxyless import PROXYLESS
from nas_core.strategies.tenas import TENAS

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        DARTS_V1,
        DARTS_V2,
        SINGLE_DARTS,
        PC_DARTS,
        GDAS,
        TENAS,
        PROXYLESS,
        ATOMNAS,
        RANDOM,
        EVOLUTION,
        PROGRESSIVE,
        FIXED,
    )
}


def get_strategy(name: str) -> Strategy:
    """The strategy registered under ``name``; the error lists the known ones."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None


__all__ = ["STRATEGIES", "SearchContext", "SearchOutcome", "Strategy", "get_strategy"]
