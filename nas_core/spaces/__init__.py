"""Search spaces by name; each module holds one family, as timm keeps one model family a file."""

from __future__ import annotations

from nas_core.errors import GenotypeError
from nas_core.spaces.base import SearchSpace
from nas_core.spaces.darts import DartsSpace
from nas_core.spaces.mobilenet import MobileNetSpace
from nas_core.spaces.nb201 import NB201Space

#: the registry; its order is the order spaces are offered in (Launch page, `Strategy.spaces`)
SPACES: dict[str, SearchSpace] = {"nb201": NB201Space(), "darts": DartsSpace(), "mobilenet": MobileNetSpace()}


def get_space(name: str) -> SearchSpace:
    """The space registered under ``name``; a clear error lists the known ones."""
    try:
        return SPACES[name]
    except KeyError:
        raise GenotypeError(f"unknown search space {name!r}; known: {', '.join(SPACES)}") from None


__all__ = ["SPACES", "GenotypeError", "SearchSpace", "get_space"]
