"""Validated experiment configuration shared by the Launch page, the CLI and the worker.

One object describes a whole experiment (search + final training). It is checked before anything is
queued, and every refusal names the field that is wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from nas_core.errors import ConfigError
from nas_core.params import FINAL_RECIPE_FIELDS, GENERAL_BY_NAME, GENERAL_FIELDS, ParamSpec


@dataclass
class ExperimentConfig:
    """Everything needed to run one experiment: search, then train the result from scratch."""

    strategy: str = "darts"
    space: str = "nb201"
    dataset: str = "digits"
    name: str = ""
    epochs: int = 50
    seed: int = 0
    batch_size: int = 64
    channels: int = 8
    cells_per_stage: int = 2
    final_epochs: int = 30
    final_channels: int = 16
    final_lr: float = 0.05
    final_layers: int = 0
    final_auxiliary: bool = False
    final_auxiliary_weight: float = 0.4
    final_drop_path: float = 0.0
    final_cutout: int = 0
    threads: int = 1
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    image_size: int = 0
    max_train_per_class: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        """Build and validate; unknown keys are refused so typos do not pass silently."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], "unknown setting")
        cfg = cls(**data)
        return cfg.validated()

    def validated(self) -> ExperimentConfig:
        """Return a copy with coerced types and strategy defaults filled in, or raise ConfigError.

        The checks need the registries, the data sets and the networks (:mod:`nas_core.validation`); they are
        imported here, on first use, so that reading or writing a config (``list``, ``cancel``) loads no torch.
        """
        from nas_core.validation import validate_config

        return validate_config(self)


__all__ = [
    "FINAL_RECIPE_FIELDS",
    "GENERAL_BY_NAME",
    "GENERAL_FIELDS",
    "ConfigError",
    "ExperimentConfig",
    "ParamSpec",
    "apply_overrides",
]


def apply_overrides(cfg: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply CLI ``key=value`` settings; general fields go top level, others into ``params``."""
    out = dict(cfg)
    out["params"] = dict(out.get("params") or {})
    for item in assignments:
        if "=" not in item:
            raise ConfigError(item, "expected key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key.startswith("params."):
            out["params"][key.removeprefix("params.")] = value
        elif key in ExperimentConfig.__dataclass_fields__ and key != "params":
            out[key] = value
        else:
            out["params"][key] = value
    return out
