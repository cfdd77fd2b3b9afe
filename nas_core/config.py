"""Validated experiment configuration shared by the Launch page, the CLI and the worker.

One object describes a whole experiment (search + final training). It is checked before anything is
queued, and every refusal names the field that is wrong.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value was refused; ``field`` names it so forms and the CLI can point at it."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


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

_GENERAL = {p.name: p for p in GENERAL_FIELDS}

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


def final_recipe_supported(space: Any) -> bool:
    """Whether ``space``'s final network takes the DARTS evaluation recipe.

    The test is the one the CLI's ``train``/``profile`` use (``nas_core.train.network_options``): the space's
    ``build_network`` takes ``layers`` and ``auxiliary``. That is the DARTS cell network, the one network
    with drop path (``drop_path_prob``), so drop path and cutout, the rest of the same recipe, follow it.
    """
    from nas_core.train import network_options

    try:
        network_options(space, layers=1, auxiliary=True)
    except ConfigError:
        return False
    return True


def final_network_options(space: Any, layers: int, auxiliary: bool) -> dict[str, Any]:
    """``build_network`` keyword options of the final network (``layers`` 0 = the space's default).

    Refuses an option the space has not with ``ConfigError("final_layers" | "final_auxiliary", ...)``,
    the message from ``nas_core.train.network_options``, the CLI's own check.
    """
    from nas_core.train import network_options

    try:
        return network_options(space, layers=layers or None, auxiliary=auxiliary)
    except ConfigError as exc:
        raise ConfigError(f"final_{exc.field}", exc.message) from None


def _check_final_network(space: Any, values: dict[str, Any], input_shape: tuple[int, int, int]) -> None:
    """Build a stand-in final network (a preset genotype, on the meta device: no memory) before queueing.

    The auxiliary head's input-size limit depends on the data's size, not the genotype, so a final network
    that cannot be built is refused when the config is validated, naming ``final_auxiliary``, rather than
    after the whole search. Spaces without presets, or runs without recipe options, are not probed.
    """
    import torch

    options = final_network_options(space, values["final_layers"], values["final_auxiliary"])
    presets = getattr(space, "presets", None)
    if not options.get("auxiliary") or presets is None or not presets():
        return
    stand_in = next(iter(presets().values()))
    try:
        with torch.device("meta"):
            space.build_network(
                stand_in, 10, input_shape, values["final_channels"], values["cells_per_stage"], **options
            )
    except ConfigError as exc:
        raise ConfigError(f"final_{exc.field}", exc.message) from None


def _check_final_recipe(space: Any, values: dict[str, Any]) -> None:
    """Refuse, by field name, recipe options the space's final network does not have or that do nothing."""
    from nas_core.spaces import SPACES

    final_network_options(space, values["final_layers"], values["final_auxiliary"])
    if not final_recipe_supported(space):
        for name, what in (("final_drop_path", "drop path"), ("final_cutout", "cutout")):
            if values[name]:
                having = ", ".join(n for n, sp in SPACES.items() if final_recipe_supported(sp))
                raise ConfigError(
                    name,
                    f"the {space.name} space's final training has no {what}: the DARTS evaluation recipe "
                    f"(final_layers, final_auxiliary, final_drop_path, final_cutout) is for the {having} space",
                )
    if not values["final_auxiliary"] and values["final_auxiliary_weight"] != _GENERAL["final_auxiliary_weight"].default:
        raise ConfigError("final_auxiliary_weight", "has no effect without final_auxiliary (the auxiliary head)")


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
        """Return a copy with coerced types and strategy defaults filled in, or raise ConfigError."""
        from nas_core.data import absolute_dataset, check_dataset, input_shape
        from nas_core.devices import parse_device
        from nas_core.spaces import SPACES
        from nas_core.strategies import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ConfigError("strategy", f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.space not in SPACES:
            raise ConfigError("space", f"unknown search space {self.space!r}; choose one of {', '.join(SPACES)}")
        strat = STRATEGIES[self.strategy]
        if self.space not in strat.spaces:
            raise ConfigError("space", f"strategy {self.strategy} does not support space {self.space!r}")
        check_dataset(self.dataset)
        values: dict[str, Any] = {}
        for name, spec in _GENERAL.items():
            values[name] = spec.coerce(getattr(self, name), where="")
        values["device"] = parse_device(values["device"])  # whether it exists is the worker machine's question
        if values["val_fraction"] + values["test_fraction"] >= 0.8:
            raise ConfigError("test_fraction", "validation + test fractions must leave at least 20% for training")
        _check_final_recipe(SPACES[self.space], values)
        if values["final_auxiliary"] and not strat.trains_network:  # the head's input-size limit, before queueing
            shape = input_shape(self.dataset, values["image_size"])
            _check_final_network(SPACES[self.space], values, shape)
        if not isinstance(self.params, dict):
            raise ConfigError("params", "must be a mapping of strategy parameters")
        specs = {p.name: p for p in strat.params}
        unknown = sorted(set(self.params) - set(specs))
        if unknown:
            raise ConfigError(
                f"params.{unknown[0]}",
                f"strategy {self.strategy} has no parameter {unknown[0]!r}; it has {', '.join(specs) or 'none'}",
            )
        params = {name: spec.coerce(self.params.get(name, spec.default)) for name, spec in specs.items()}
        name = str(self.name or "").strip()[:200]
        cfg = ExperimentConfig(
            strategy=self.strategy,
            space=self.space,
            dataset=absolute_dataset(self.dataset),
            name=name,
            params=params,
            **values,
        )
        strat.validate(cfg)
        return cfg


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
