"""Tunable parameters: one spec per setting, with its default and bounds, that drives forms, the CLI and checks.

The general fields of every experiment are here too. A leaf module (it imports only
:mod:`nas_core.errors`), so strategies, spaces and the config all use it freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nas_core.errors import ConfigError


@dataclass(frozen=True)
class ParamSpec:
    """One tunable hyperparameter of a strategy, with its default and bounds (drives forms and CLI)."""

    name: str
    default: Any
    kind: str  # "float" | "int" | "bool" | "choice" | "text"
    help: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (CLI ``strategies --json``, docs)."""
        return {
            "name": self.name,
            "default": self.default,
            "kind": self.kind,
            "help": self.help,
            "min": self.minimum,
            "max": self.maximum,
            "choices": list(self.choices),
        }

    def coerce(self, value: Any, where: str = "params") -> Any:
        """Convert text or JSON values to this parameter's type and check bounds."""
        fname = f"{where}.{self.name}" if where else self.name
        if self.kind == "text":
            if value is None:
                return ""
            if not isinstance(value, str):
                raise ConfigError(fname, f"must be text (got {value!r})")
            return value.strip()
        try:
            if self.kind == "bool":
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low in ("1", "true", "yes", "on"):
                        return True
                    if low in ("0", "false", "no", "off"):
                        return False
                    raise ValueError
                if isinstance(value, (bool, int)):
                    return bool(value)
                raise ValueError
            if self.kind == "choice":
                value = str(value)
                if value not in self.choices:
                    raise ConfigError(fname, f"must be one of {', '.join(self.choices)} (got {value!r})")
                return value
            if self.kind == "int":
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                if isinstance(value, bool):
                    raise ValueError
                out: Any = int(str(value).strip()) if isinstance(value, str) else int(value)
            elif self.kind == "float":
                if isinstance(value, bool):
                    raise ValueError
                out = float(value)
                if out != out or out in (float("inf"), float("-inf")):
                    raise ConfigError(fname, "must be a finite number")
            else:  # pragma: no cover - programming error
                raise ConfigError(fname, f"unknown parameter kind {self.kind}")
        except ConfigError:
            raise
        except (TypeError, ValueError):
            raise ConfigError(fname, f"must be {_kind_word(self.kind)} (got {value!r})") from None
        if self.minimum is not None and out < self.minimum:
            raise ConfigError(fname, f"must be >= {self.minimum} (got {out})")
        if self.maximum is not None and out > self.maximum:
            raise ConfigError(fname, f"must be <= {self.maximum} (got {out})")
        return out


def _kind_word(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false"}.get(kind, kind)


#: Fields of ExperimentConfig that are not strategy hyperparameters, with their specs.
GENERAL_FIELDS: tuple[ParamSpec, ...] = (
    ParamSpec("epochs", 50, "int", "Search epochs", 1, 10_000),
    ParamSpec("seed", 0, "int", "Random seed (data split, init, sampling)", 0, 2**31 - 1),
    ParamSpec("batch_size", 64, "int", "Mini-batch size for search and final training", 2, 4096),
    ParamSpec("channels", 8, "int", "Initial channels C of the search network", 1, 256),
    ParamSpec("cells_per_stage", 2, "int", "Cells per stage N (NAS-Bench-201 skeleton)", 1, 20),
    ParamSpec("final_epochs", 30, "int", "Epochs to train the derived architecture from scratch (0 = skip)", 0, 10_000),
    ParamSpec("final_channels", 16, "int", "Initial channels C of the final network", 1, 256),
    ParamSpec("final_lr", 0.05, "float", "Learning rate for final training (SGD, cosine)", 1e-6, 10.0),
    ParamSpec(
        "final_layers",
        0,
        "int",
        "Final training, DARTS space: number of cells of the final network (0 = the space's default, "
        "3 x cells_per_stage + 2; the DARTS paper's CIFAR network has 20)",
        0,
        200,
    ),
    ParamSpec(
        "final_auxiliary",
        False,
        "bool",
        "Final training, DARTS space: auxiliary classifier head after the cell at 2/3 depth, used in training "
        "only (its loss is added with final_auxiliary_weight; exports and the parameter count leave it out). "
        "Needs inputs of at least 29x29 with two reductions before it, e.g. image_size 32",
    ),
    ParamSpec(
        "final_auxiliary_weight",
        0.4,
        "float",
        "Final training, DARTS space: weight of the auxiliary head's loss (DARTS: 0.4); only with final_auxiliary",
        0.0,
        10.0,
    ),
    ParamSpec(
        "final_drop_path",
        0.0,
        "float",
        "Final training, DARTS space: drop-path probability, ramped linearly from 0 over the epochs "
        "(DARTS: 0.2; 0 = off)",
        0.0,
        0.99,
    ),
    ParamSpec(
        "final_cutout",
        0,
        "int",
        "Final training, DARTS space: cutout, one square hole of this side in pixels per training image "
        "(DARTS: 16 on CIFAR; 0 = off)",
        0,
        1024,
    ),
    ParamSpec(
        "threads",
        1,
        "int",
        "Torch CPU threads for the job. Small networks gain little from more, and on a busy "
        "2-core machine 2 threads ran many times slower than 1",
        1,
        256,
    ),
    ParamSpec(
        "device",
        "auto",
        "text",
        "Where the search and the final training run: auto (the first CUDA GPU if the worker's machine has one, "
        "else the CPU), cpu, cuda, cuda:N or mps. MACs, exports and the results' latency (batch 1, one CPU "
        "thread) stay on the CPU, so results from different machines compare",
    ),
    ParamSpec("channels_last", True, "bool", "Use channels-last memory format (faster convs on CPU)"),
    ParamSpec(
        "compile",
        False,
        "bool",
        "torch.compile the search network: compiling takes minutes on a CPU, so it pays off only on long runs",
    ),
    ParamSpec(
        "val_fraction",
        0.2,
        "float",
        "Fraction held out for validation. In a bi-level search (DARTS, PC-DARTS, GDAS) this is the split "
        "between weights (trained on the rest) and architecture parameters (trained on this part); the "
        "reference DARTS code splits CIFAR-10's training set 50/50 (train_portion 0.5). Stratified and seeded. "
        "For CIFAR it is a fraction of the official training set, and the official test set is the test set "
        "(test_fraction is not used)",
        0.05,
        0.5,
    ),
    ParamSpec(
        "test_fraction",
        0.2,
        "float",
        "Fraction of data held out for the final test (data sets with an official test split, CIFAR, use that)",
        0.05,
        0.5,
    ),
    ParamSpec(
        "image_size",
        0,
        "int",
        "Side length images are resized to (0 = the data set's own size; image folders then use 32)",
        0,
        1024,
    ),
    ParamSpec(
        "max_train_per_class",
        0,
        "int",
        "Use at most this many training images per class, validation included (0 = all): a quick CPU "
        "search on a CIFAR subset. A seeded, stratified subset; the test set stays whole",
        0,
        10_000_000,
    ),
)

#: The general fields by name.
GENERAL_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in GENERAL_FIELDS}

#: The DARTS evaluation recipe (``cnn/train.py``) for the final training: number of cells, auxiliary head and
#: its loss weight, drop path, cutout. Offered (Launch page) and accepted (``validated``) only for spaces whose
#: stand-alone network takes the DARTS network options; see :func:`final_recipe_supported`.
FINAL_RECIPE_FIELDS: tuple[str, ...] = (
    "final_layers",
    "final_auxiliary",
    "final_auxiliary_weight",
    "final_drop_path",
    "final_cutout",
)

__all__ = ["FINAL_RECIPE_FIELDS", "GENERAL_BY_NAME", "GENERAL_FIELDS", "ParamSpec"]
