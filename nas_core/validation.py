"""Checking an experiment before anything is queued: every refusal is a ConfigError naming the field.

Above the registries (spaces, strategies), the data sets and the networks, which the checks need; the plain
config (:mod:`nas_core.config`) stays light and calls :func:`validate_config` on first use.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from nas_core.data import absolute_dataset, check_dataset, input_shape
from nas_core.devices import parse_device
from nas_core.errors import ConfigError
from nas_core.params import GENERAL_BY_NAME
from nas_core.spaces import SPACES
from nas_core.strategies import STRATEGIES
from nas_core.train import network_options

if TYPE_CHECKING:
    from nas_core.config import ExperimentConfig


def final_recipe_supported(space: Any) -> bool:
    """Whether ``space``'s final network takes the DARTS evaluation recipe.

    The test is the one the CLI's ``train``/``profile`` use (``nas_core.train.network_options``): the space's
    ``build_network`` takes ``layers`` and ``auxiliary``. That is the DARTS cell network, the one network
    with drop path (``drop_path_prob``), so drop path and cutout, the rest of the same recipe, follow it.
    """
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
    try:
        return network_options(space, layers=layers or None, auxiliary=auxiliary)
    except ConfigError as exc:
        raise ConfigError(f"final_{exc.field}", exc.message) from None


def _check_final_network(space: Any, values: dict[str, Any], shape: tuple[int, int, int]) -> None:
    """Build a stand-in final network (a preset genotype, on the meta device: no memory) before queueing.

    The auxiliary head's input-size limit depends on the data's size, not the genotype, so a final network
    that cannot be built is refused when the config is validated, naming ``final_auxiliary``, rather than
    after the whole search. Spaces without presets, or runs without recipe options, are not probed.
    """
    options = final_network_options(space, values["final_layers"], values["final_auxiliary"])
    presets = getattr(space, "presets", None)
    if not options.get("auxiliary") or presets is None or not presets():
        return
    stand_in = next(iter(presets().values()))
    try:
        with torch.device("meta"):
            space.build_network(
                stand_in, 10, shape, values["final_channels"], values["cells_per_stage"], **options
            )
    except ConfigError as exc:
        raise ConfigError(f"final_{exc.field}", exc.message) from None


def _check_final_recipe(space: Any, values: dict[str, Any]) -> None:
    """Refuse, by field name, recipe options the space's final network does not have or that do nothing."""
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
    default_weight = GENERAL_BY_NAME["final_auxiliary_weight"].default
    if not values["final_auxiliary"] and values["final_auxiliary_weight"] != default_weight:
        raise ConfigError("final_auxiliary_weight", "has no effect without final_auxiliary (the auxiliary head)")


def validate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with coerced types and strategy defaults filled in, or ConfigError naming the field."""
    if cfg.strategy not in STRATEGIES:
        raise ConfigError("strategy", f"unknown strategy {cfg.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if cfg.space not in SPACES:
        raise ConfigError("space", f"unknown search space {cfg.space!r}; choose one of {', '.join(SPACES)}")
    strat = STRATEGIES[cfg.strategy]
    if cfg.space not in strat.spaces:
        raise ConfigError("space", f"strategy {cfg.strategy} does not support space {cfg.space!r}")
    check_dataset(cfg.dataset)
    values: dict[str, Any] = {}
    for name, spec in GENERAL_BY_NAME.items():
        values[name] = spec.coerce(getattr(cfg, name), where="")
    values["device"] = parse_device(values["device"])  # whether it exists is the worker machine's question
    if values["val_fraction"] + values["test_fraction"] >= 0.8:
        raise ConfigError("test_fraction", "validation + test fractions must leave at least 20% for training")
    _check_final_recipe(SPACES[cfg.space], values)
    if values["final_auxiliary"] and not strat.trains_network:  # the head's input-size limit, before queueing
        shape = input_shape(cfg.dataset, values["image_size"])
        _check_final_network(SPACES[cfg.space], values, shape)
    if not isinstance(cfg.params, dict):
        raise ConfigError("params", "must be a mapping of strategy parameters")
    specs = {p.name: p for p in strat.params}
    unknown = sorted(set(cfg.params) - set(specs))
    if unknown:
        raise ConfigError(
            f"params.{unknown[0]}",
            f"strategy {cfg.strategy} has no parameter {unknown[0]!r}; it has {', '.join(specs) or 'none'}",
        )
    params = {name: spec.coerce(cfg.params.get(name, spec.default)) for name, spec in specs.items()}
    name = str(cfg.name or "").strip()[:200]
    out = dataclasses.replace(
        cfg,
        dataset=absolute_dataset(cfg.dataset),
        name=name,
        params=params,
        **values,
    )
    strat.validate(out)
    return out
