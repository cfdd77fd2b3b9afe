"""Every page through streamlit.testing.v1.AppTest on a database seeded by a real tiny run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from streamlit.testing.v1 import AppTest

from nas_core.config import ExperimentConfig
from nas_core.strategies import STRATEGIES
from storage import repo

if TYPE_CHECKING:
    from tests.conftest import SeededRun

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def _app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(page)
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
    return at


def _assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _count(at: AppTest, kind: str) -> int:
    return len(at.get(kind))


def test_launch_page_renders_form_with_defaults(seeded_env: SeededRun) -> None:
    at = _app()
    _assert_clean(at)
    assert at.title[0].value == "Launch a search"
    assert at.number_input(key="g_epochs").value == ExperimentConfig().epochs
    assert at.selectbox(key="dataset").value == "digits"
    assert at.selectbox(key="strategy").value == next(iter(STRATEGIES))
    assert any(b.label == "Launch" for b in at.button)


def test_overview_lists_the_seeded_experiment(seeded_env: SeededRun) -> None:
    at = _app("pages/overview.py")
    _assert_clean(at)
    table = at.dataframe[0].value
    exp_id = seeded_env.result["experiment_id"]
    row = table[table["id"] == exp_id].iloc[0]
    assert row["status"] == "succeeded" and row["progress"] == 1.0
    assert row["MACs (M)"] == pytest.approx(seeded_env.result["macs"] / 1e6)


def test_monitor_shows_progress_curves_alphas_cell_and_log(seeded_env: SeededRun) -> None:
    exp_id = seeded_env.result["experiment_id"]
    at = _app("pages/monitor.py", id=str(exp_id))
    _assert_clean(at)
    assert at.selectbox[0].value == exp_id
    assert _count(at, "progress") == 1
    assert _count(at, "plotly_chart") == 4  # curves, alpha lines, heatmap, parameter-free share
    assert _count(at, "graphviz_chart") == 1
    codes = [c.value for c in at.code]
    assert seeded_env.result["genotype"] in codes
    assert any("final network" in c for c in codes)  # the log tail


def test_monitor_failed_experiment_shows_readable_error(seeded_env: SeededRun) -> None:
    exp_id = repo.create_experiment({"strategy": "darts", "space": "nb201", "dataset": "synthetic"}, name="broken")
    repo.start_experiment(exp_id)
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: out of cheese'
    repo.finish_job(exp_id, "failed", error="RuntimeError: out of cheese (at x.py:1)", traceback=trace)
    at = _app("pages/monitor.py", id=str(exp_id))
    assert not at.exception
    assert [e.value for e in at.error] == ["Failed: RuntimeError: out of cheese (at x.py:1)"]
    assert at.expander[0].label == "Full traceback"
    assert trace in [c.value for c in at.code]
    at.button(key="retry").click().run()
    assert not at.exception
    assert repo.get_experiment(exp_id)["status"] == "queued"
    assert "queued, waiting for a worker" in at.get("progress")[0].proto.text
    repo.request_cancel(exp_id)  # leave nothing queued for the other tests


def test_compare_draws_three_pareto_views(seeded_env: SeededRun) -> None:
    at = _app("pages/compare.py")
    _assert_clean(at)
    assert seeded_env.result["experiment_id"] in at.multiselect[0].value
    assert _count(at, "plotly_chart") == 3


def test_export_offers_all_four_files(seeded_env: SeededRun) -> None:
    arch = repo.architectures_df([seeded_env.result["experiment_id"]]).iloc[0]
    at = _app("pages/export.py", arch=str(arch["id"]))
    _assert_clean(at)
    assert _count(at, "download_button") == 4  # genotype JSON, checkpoint, TorchScript, ONNX
    assert not [b for b in at.button if b.disabled]


def test_export_recreates_a_missing_file_from_the_checkpoint(seeded_env: SeededRun) -> None:
    arch = repo.architectures_df([seeded_env.result["experiment_id"]]).iloc[0]
    artifacts = repo.artifacts_df(int(arch["experiment_id"]))
    torchscript = Path(artifacts.loc[artifacts["kind"] == "torchscript", "path"].iloc[-1])
    torchscript.unlink()
    at = _app("pages/export.py", arch=str(arch["id"]))
    _assert_clean(at)
    assert _count(at, "download_button") == 3
    create = next(b for b in at.button if b.label.startswith("Create the missing exports"))
    create.click().run()
    _assert_clean(at)
    assert _count(at, "download_button") == 4
    artifacts = repo.artifacts_df(int(arch["experiment_id"]))
    recreated = Path(artifacts.loc[artifacts["kind"] == "torchscript", "path"].iloc[-1])
    assert recreated.is_file() and recreated.parent.name == "regenerated"
    model = torch.jit.load(str(recreated))
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 10)


def _bad_strategy_param() -> tuple[str, float]:
    """A parameter of the default strategy and a value below its minimum."""
    strategy = STRATEGIES[next(iter(STRATEGIES))]
    spec = next(p for p in strategy.params if p.kind in ("int", "float") and p.minimum is not None)
    return spec.name, spec.minimum - 1


@pytest.mark.parametrize("case", ["epochs", "strategy_param"])
def test_launch_refuses_bad_values_and_queues_nothing(seeded_env: SeededRun, case: str) -> None:
    at = _app()
    before = len(repo.list_experiments())
    if case == "epochs":
        at.number_input(key="g_epochs").set_value(0)
        field = "epochs"
    else:
        name, value = _bad_strategy_param()
        at.number_input(key=f"p_{at.selectbox(key='strategy').value}_{name}").set_value(value)
        field = f"params.{name}"
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    messages = [e.value for e in at.error]
    assert len(messages) == 1 and messages[0].startswith(f"**{field}**") and "Nothing was queued" in messages[0]
    assert not at.success
    assert len(repo.list_experiments()) == before


def test_launch_queues_a_valid_config_and_overview_cancels_it(seeded_env: SeededRun) -> None:
    at = _app()
    at.selectbox(key="dataset").set_value("synthetic")
    at.number_input(key="g_epochs").set_value(1)
    at.text_input(key="name").set_value("from the form")
    device = at.selectbox(key="g_device")  # the devices this machine has; auto first
    assert device.options[:2] == ["auto", "cpu"] and device.value == "auto"
    device.set_value("cpu")
    next(b for b in at.button if b.label == "Launch").click().run()
    _assert_clean(at)
    exp_id = at.session_state["launched"]
    assert at.success[0].value == f"Experiment #{exp_id} queued."
    exp = repo.get_experiment(exp_id)
    assert exp["status"] == "queued" and exp["name"] == "from the form"
    assert exp["config"]["epochs"] == 1 and exp["config"]["dataset"] == "synthetic"
    assert exp["config"]["device"] == "cpu"

    at = _app("pages/overview.py")
    at.button(key=f"cancel_{exp_id}").click().run()
    _assert_clean(at)
    assert repo.get_experiment(exp_id)["status"] == "cancelled"
