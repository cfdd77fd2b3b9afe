"""Queueing a retrain: the Monitor's "Queue" under the trial table trains a trial the user picked at the final size.

The config is the parent experiment's data, seed and final recipe with the ``fixed`` strategy (no search), so
the trial is trained, measured, stored and exported like any search's result.
"""

from __future__ import annotations

from typing import Any

from nas_core.config import ExperimentConfig
from nas_core.strategies.fixed import FIXED


def retrain_config(
    parent: dict[str, Any], genotype: str, source: str, final_epochs: int | None = None, name: str = ""
) -> ExperimentConfig:
    """The validated config that trains ``genotype`` at the final size with ``parent``'s data, seed and final
    recipe (``final_epochs`` overrides the parent's): how the Monitor queues a trial the user picked."""
    fields = {k: v for k, v in parent.items() if k not in ("strategy", "params", "name")}
    if final_epochs is not None:
        fields["final_epochs"] = final_epochs
    params = {"genotype": genotype, "source": source}
    return ExperimentConfig(**fields, strategy=FIXED.name, name=name, params=params).validated()
