"""No search: train a given architecture as if a search had found it.

A multi-trial search leaves many trained candidates, and on a Pareto chart the one a person wants is often not
the search's own pick. This strategy takes an architecture (the space's genotype text or JSON document, or a
named preset such as ``DARTS_V2``) and hands it to the pipeline unchanged, so it is trained at the final size,
measured (params, MACs, latency), stored and exported exactly like every search's result, and lands on the
Compare page beside them. ``source`` records where it came from (the Monitor fills it in: "experiment 3,
trial 12").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas_core.errors import ConfigError, GenotypeError
from nas_core.params import ParamSpec
from nas_core.spaces import get_space
from nas_core.strategies.base import SearchContext, SearchOutcome, Strategy

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig


def given_genotype(space_name: str, text: str) -> Any:
    """The architecture ``text`` names in the space; ConfigError on ``params.genotype`` saying what is wrong."""
    if not str(text).strip():
        raise ConfigError("params.genotype", "give the architecture to train (genotype text, JSON or preset name)")
    try:
        return get_space(space_name).parse(str(text))
    except (GenotypeError, ValueError) as exc:
        raise ConfigError("params.genotype", str(exc)) from None


class FixedArchitecture(Strategy):
    """The architecture is given; the pipeline trains, measures, stores and exports it."""

    derives_from_weights = False

    name = "fixed"
    label = "Given architecture (no search)"
    description = (
        "Trains a given architecture at the final size and stores it like a search result: to train a trial a "
        "multi-trial search found, a paper's cell, or a genotype from elsewhere."
    )
    params = (
        ParamSpec("genotype", "", "text", "The architecture: the space's genotype text or JSON, or a preset name"),
        ParamSpec("source", "", "text", "Where the architecture comes from, kept with the result"),
    )

    def search_units(self, config: ExperimentConfig) -> float:
        return 0.01  # nothing to search; not 0, so a run without final training still has a progress span

    def validate(self, config: ExperimentConfig) -> None:
        given_genotype(config.space, config.params["genotype"])

    def search(self, ctx: SearchContext) -> SearchOutcome:
        p = ctx.params
        text = ctx.space.format(given_genotype(ctx.space.name, p["genotype"]))
        source = str(p["source"]).strip()
        ctx.reporter.log(f"no search: the given architecture{f' ({source})' if source else ''}: {text}")
        ctx.reporter.genotype(0, 0, text)
        ctx.report_progress(1.0, 0)
        return SearchOutcome(text, None, "none", {"source": source} if source else {})


FIXED = FixedArchitecture()

