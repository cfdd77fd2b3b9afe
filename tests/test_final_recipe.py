"""The DARTS evaluation recipe (cells, auxiliary head, drop path, cutout) in a search's final training.

Config validation names the field (ranges, and options the chosen space has not); a real tiny DARTS-space
search through the CLI trains its derived network with all four and exports the eval-mode network; the
Launch page offers the recipe for the DARTS space only and shows a refusal by field name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from nas_core.config import FINAL_RECIPE_FIELDS, GENERAL_FIELDS, ExperimentConfig
from nas_core.errors import ConfigError
from nas_core.spaces import SPACES
from nas_core.validation import final_network_options, final_recipe_supported
from nas_service.cli import main
from storage import repo

ROOT = Path(__file__).resolve().parents[1]

#: A tiny DARTS-space search whose final network can carry the auxiliary head: digits resized to 32x32
#: (two reductions before the head need >= 29x29), two images per class for train + validation.
TINY_DARTS = {
    "strategy": "darts",
    "space": "darts",
    "dataset": "digits",
    "epochs": 1,
    "batch_size": 32,
    "channels": 2,
    "cells_per_stage": 1,
    "final_epochs": 2,
    "final_channels": 4,
    "image_size": 32,
    "max_train_per_class": 2,
    "val_fraction": 0.3,
    "test_fraction": 0.1,
    "threads": 1,
}
RECIPE = {"final_layers": 3, "final_auxiliary": True, "final_drop_path": 0.2, "final_cutout": 8}


@pytest.fixture
def keep_threads() -> Any:
    """A run sets torch's thread count for the whole process; leave later tests as they were."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------------
# config


def test_recipe_fields_default_off_and_validate_for_darts() -> None:
    cfg = ExperimentConfig(space="darts").validated()
    assert (cfg.final_layers, cfg.final_auxiliary, cfg.final_drop_path, cfg.final_cutout) == (0, False, 0.0, 0)
    assert cfg.final_auxiliary_weight == pytest.approx(0.4)
    cfg = ExperimentConfig(
        space="darts", final_layers="20", final_auxiliary="true", final_auxiliary_weight="0.5",
        final_drop_path="0.2", final_cutout="16", image_size=32,
    ).validated()  # fmt: skip
    assert (cfg.final_layers, cfg.final_auxiliary, cfg.final_drop_path, cfg.final_cutout) == (20, True, 0.2, 16)
    assert cfg.final_auxiliary_weight == pytest.approx(0.5)
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert set(FINAL_RECIPE_FIELDS) <= {p.name for p in GENERAL_FIELDS}  # listed by `strategies`, coerced alike


def test_stored_config_without_the_recipe_fields_still_loads() -> None:
    old = ExperimentConfig(space="darts", epochs=3).validated().to_dict()
    for name in FINAL_RECIPE_FIELDS:
        old.pop(name)
    cfg = ExperimentConfig.from_dict(old)
    assert cfg.epochs == 3 and cfg.final_layers == 0 and not cfg.final_auxiliary and cfg.final_cutout == 0


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"final_layers": -1}, "final_layers", ">= 0"),
        ({"final_layers": 2.5}, "final_layers", "integer"),
        ({"final_auxiliary": "maybe"}, "final_auxiliary", "true or false"),
        ({"final_auxiliary": True, "final_auxiliary_weight": -0.1}, "final_auxiliary_weight", ">= 0"),
        ({"final_drop_path": 1.0}, "final_drop_path", "<= 0.99"),
        ({"final_drop_path": -0.1}, "final_drop_path", ">= 0"),
        ({"final_cutout": -4}, "final_cutout", ">= 0"),
        ({"final_auxiliary_weight": 0.3}, "final_auxiliary_weight", "without final_auxiliary"),
    ],
)
def test_bad_recipe_values_name_the_field(change: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(space="darts", **change).validated()
    assert info.value.field == field and needle in info.value.message


@pytest.mark.parametrize(
    ("config", "field", "needle"),
    [
        ({"space": "nb201", "final_layers": 8}, "final_layers", "nb201 space has no 'layers' option"),
        ({"space": "nb201", "final_auxiliary": True}, "final_auxiliary", "nb201 space has no 'auxiliary' option"),
        ({"space": "nb201", "final_drop_path": 0.2}, "final_drop_path", "no drop path"),
        ({"space": "nb201", "final_cutout": 16}, "final_cutout", "no cutout"),
        ({"strategy": "proxylessnas", "space": "mobilenet", "final_auxiliary": True}, "final_auxiliary", "mobilenet"),
        ({"strategy": "proxylessnas", "space": "mobilenet", "final_drop_path": 0.1}, "final_drop_path", "darts"),
    ],
)
def test_options_the_space_has_not_are_refused_by_name(config: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(**config).validated()
    assert info.value.field == field and needle in info.value.message


def test_which_spaces_take_the_recipe() -> None:
    assert {name for name, sp in SPACES.items() if final_recipe_supported(sp)} == {"darts"}
    assert final_network_options(SPACES["darts"], 0, False) == {}
    assert final_network_options(SPACES["darts"], 20, True) == {"layers": 20, "auxiliary": True}
    assert final_network_options(SPACES["nb201"], 0, False) == {}


def test_a_too_small_input_for_the_auxiliary_head_is_refused_before_the_search(tmp_path: Path, keep_threads) -> None:
    from nas_core.pipeline import run_experiment
    from nas_core.reporting import MemoryReporter

    cfg = ExperimentConfig(**{**TINY_DARTS, "image_size": 0, **RECIPE})  # digits' own 8x8
    reporter = MemoryReporter(workdir=tmp_path)
    with pytest.raises(ConfigError) as info:
        run_experiment(cfg, reporter)
    assert info.value.field == "final_auxiliary" and "29x29" in info.value.message
    assert not reporter.epochs  # refused before any search step


def test_the_auxiliary_head_input_size_is_checked_when_the_config_is_validated() -> None:
    """Launch page and CLI validate before queueing: an 8x8 data set cannot carry the head, 32x32 can."""
    with pytest.raises(ConfigError) as info:
        ExperimentConfig(**{**TINY_DARTS, "image_size": 0, **RECIPE}).validated()
    assert info.value.field == "final_auxiliary" and "29x29" in info.value.message
    assert ExperimentConfig(**{**TINY_DARTS, **RECIPE}).validated().final_auxiliary


# --------------------------------------------------------------------------------------------------
# a real tiny search through the CLI


@pytest.mark.slow
def test_cli_search_trains_the_final_network_with_the_recipe_and_exports_it(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, keep_threads
) -> None:
    import nas_core.pipeline as pipeline
    from nas_core.export import load_checkpoint

    seen: dict[str, Any] = {}
    real_train = pipeline.train_network

    def spy(model: torch.nn.Module, *args: Any, **kwargs: Any) -> dict[str, float]:
        """The real trainer; remembers what it was given and the auxiliary head's weights before it ran."""
        seen["kwargs"], seen["model"] = kwargs, model
        seen["aux_before"] = [p.detach().clone() for p in model.auxiliary_head.parameters()]
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train_network", spy)
    flags = ["--strategy", "darts", "--space", "darts", "--dataset", "digits", "--epochs", "1", "--final-epochs", "2",
             "--final-layers", "3", "--final-auxiliary", "--final-auxiliary-weight", "0.5", "--final-drop-path", "0.2",
             "--final-cutout", "8", "--quiet", "--json"]  # fmt: skip
    for key in ("batch_size", "channels", "cells_per_stage", "final_channels", "image_size", "max_train_per_class",
                "val_fraction", "test_fraction", "threads"):  # fmt: skip
        flags += ["--set", f"{key}={TINY_DARTS[key]}"]
    assert main(["search", *flags]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "succeeded" and 0.0 <= out["accuracy"] <= 1.0 and out["accuracy_kind"] == "test"

    exp = repo.get_experiment(out["experiment_id"])
    assert {k: exp["config"][k] for k in RECIPE} == RECIPE and exp["config"]["final_auxiliary_weight"] == 0.5
    kwargs = seen["kwargs"]
    assert (kwargs["auxiliary_weight"], kwargs["drop_path"], kwargs["cutout"]) == (0.5, 0.2, 8)
    model = seen["model"]
    assert model.layers == 3 and model.drop_path_prob == pytest.approx(0.2 * 1 / 2)  # ramped: last of 2 epochs
    after = list(model.auxiliary_head.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(seen["aux_before"], after, strict=True))  # the head trained
    arch = repo.architectures_df([out["experiment_id"]]).iloc[0]
    assert arch["origin"] == "final" and arch["accuracy"] == pytest.approx(out["accuracy"])
    logs = " ".join(repo.logs_df(out["experiment_id"])["message"])
    assert "3 cells, auxiliary head (loss weight 0.5), drop path 0.2, cutout 8" in logs

    # the exports hold the eval-mode network: logits only, the auxiliary head's weights kept for retraining
    artifacts = repo.artifacts_df(out["experiment_id"]).set_index("kind")["path"]
    assert {"genotype_json", "checkpoint", "torchscript", "onnx"} <= set(artifacts.index)
    x = torch.randn(3, 1, 32, 32)
    reloaded, doc = load_checkpoint(artifacts["checkpoint"])
    assert doc["network"]["layers"] == 3 and doc["network"]["auxiliary"] is True
    assert reloaded.auxiliary_head is not None
    with torch.no_grad():
        want = reloaded(x)
        got = torch.jit.load(artifacts["torchscript"])(x)
    assert isinstance(want, torch.Tensor) and want.shape == (3, 10)
    assert torch.allclose(got, want, atol=1e-5)
    assert out["params"] == sum(p.numel() for n, p in reloaded.named_parameters() if "auxiliary" not in n)


def test_cli_refuses_recipe_flags_the_space_has_not(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for flags, needle in (
        (["--space", "nb201", "--final-drop-path", "0.2"], "final_drop_path"),
        (["--space", "nb201", "--final-layers", "8"], "final_layers"),
        (["--space", "darts", "--final-cutout", "-1"], "final_cutout"),
    ):
        assert main(["search", *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: invalid setting {needle}: ") and "\n" not in err
    assert repo.list_experiments().empty  # nothing was stored or run


# --------------------------------------------------------------------------------------------------
# Launch page


def test_launch_page_offers_the_recipe_for_darts_only_and_names_a_bad_value(db: str) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    at.selectbox(key="space").set_value("nb201").run()
    keys = {w.key for w in (*at.number_input, *at.checkbox)}
    assert "g_final_channels" in keys and not keys & {f"g_{name}" for name in FINAL_RECIPE_FIELDS}

    at.selectbox(key="space").set_value("darts").run()
    assert not at.exception, at.exception
    assert at.number_input(key="g_final_layers").value == 0
    assert at.checkbox(key="g_final_auxiliary").value is False
    assert at.number_input(key="g_final_auxiliary_weight").value == pytest.approx(0.4)
    assert at.number_input(key="g_final_drop_path").value == 0.0
    assert at.number_input(key="g_final_cutout").value == 0

    at.number_input(key="g_final_drop_path").set_value(1.5)
    next(b for b in at.button if b.label == "Launch").click().run()
    messages = [e.value for e in at.error]
    assert len(messages) == 1 and messages[0].startswith("**final_drop_path**") and "Nothing was queued" in messages[0]
    assert repo.list_experiments().empty

    at.number_input(key="g_final_drop_path").set_value(0.2)
    at.number_input(key="g_final_layers").set_value(20)
    at.checkbox(key="g_final_auxiliary").check()
    at.number_input(key="g_final_cutout").set_value(16)
    next(b for b in at.button if b.label == "Launch").click().run()
    messages = [e.value for e in at.error]  # digits' own 8x8 cannot carry the auxiliary head: refused, not queued
    assert len(messages) == 1 and messages[0].startswith("**final_auxiliary**") and "29x29" in messages[0]
    assert repo.list_experiments().empty

    at.number_input(key="g_image_size").set_value(32)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    config = repo.get_experiment(at.session_state["launched"])["config"]
    assert (config["final_layers"], config["final_auxiliary"], config["final_drop_path"], config["final_cutout"]) == (
        20, True, 0.2, 16,
    )  # fmt: skip
