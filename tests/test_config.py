"""Configuration is validated before anything is queued, and every refusal names its field."""

import pytest

from nas_core.config import ExperimentConfig, apply_overrides
from nas_core.errors import ConfigError


def test_defaults_validate_and_fill_strategy_params():
    cfg = ExperimentConfig().validated()
    assert cfg.strategy == "darts" and cfg.params["arch_lr"] == pytest.approx(3e-4)
    assert cfg.params["w_lr"] == pytest.approx(0.025)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": "many"}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"strategy": "nope"}, "strategy"),
        ({"space": "nope"}, "space"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"params": {"arch_lr": -1}}, "params.arch_lr"),
        ({"params": {"typo_lr": 1}}, "params.typo_lr"),
        ({"final_lr": float("nan")}, "final_lr"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
    ],
)
def test_bad_values_name_the_field(change, field):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(**change).validated()
    assert info.value.field == field
    assert field in str(info.value)


def test_from_dict_refuses_unknown_keys_and_round_trips():
    with pytest.raises(ConfigError, match="epochz"):
        ExperimentConfig.from_dict({"epochz": 3})
    cfg = ExperimentConfig(strategy="single-darts", epochs=3).validated()
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_overrides_route_general_fields_and_params():
    out = apply_overrides({"epochs": 2}, ["epochs=5", "arch_lr=0.001", "params.w_lr=0.1"])
    cfg = ExperimentConfig.from_dict(out)
    assert cfg.epochs == 5 and cfg.params["arch_lr"] == pytest.approx(0.001) and cfg.params["w_lr"] == 0.1
    with pytest.raises(ConfigError):
        apply_overrides({}, ["novalue"])


def test_form_defaults_match_the_dataclass():
    from nas_core.config import GENERAL_FIELDS

    cfg = ExperimentConfig()
    assert {p.name: p.default for p in GENERAL_FIELDS} == {p.name: getattr(cfg, p.name) for p in GENERAL_FIELDS}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"strategy": "gdas", "params": {"tau_min": 5.0, "tau_max": 1.0}}, "params.tau_min"),
        ({"strategy": "pc-darts", "channels": 6, "params": {"partial_k": 4}}, "params.partial_k"),
        (
            {"strategy": "proxylessnas", "space": "mobilenet", "epochs": 2, "params": {"warmup_epochs": 2}},
            "params.warmup_epochs",
        ),  # fmt: skip
    ],
)
def test_strategies_refuse_their_own_bad_settings_before_anything_is_queued(config, field) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(**config).validated()
    assert info.value.field == field
