"""The `fixed` strategy: a given architecture trained, measured and stored like a search result."""

from __future__ import annotations

import pytest

from nas_core.config import ExperimentConfig
from nas_core.errors import ConfigError
from nas_core.pipeline import run_experiment
from nas_core.reporting import MemoryReporter
from nas_service.retrain import retrain_config

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"dataset": "synthetic", "epochs": 1, "final_epochs": 1, "channels": 2, "final_channels": 2,
        "cells_per_stage": 1, "batch_size": 64, "threads": 1}  # fmt: skip
CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"


@pytest.mark.parametrize(
    ("space", "genotype", "says"),
    [("nb201", "", "give the architecture"), ("nb201", "|conv~0|", "3 nodes"), ("darts", "NOT_A_PRESET", "")],
)
def test_a_missing_or_bad_architecture_is_refused_by_name(space: str, genotype: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        ExperimentConfig(strategy="fixed", space=space, **TINY, params={"genotype": genotype}).validated()
    assert err.value.field == "params.genotype" and says in err.value.message


def test_the_given_architecture_is_trained_and_reported_as_the_result(tmp_path) -> None:
    cfg = ExperimentConfig(strategy="fixed", space="nb201", **TINY, params={"genotype": CELL, "source": "a paper"})
    rep = MemoryReporter(workdir=tmp_path)
    res = run_experiment(cfg, rep)
    assert res.genotype == CELL and res.accuracy_kind == "test" and res.params > 0 and res.macs > 0
    assert any(m == f"no search: the given architecture (a paper): {CELL}" for _, _, m in rep.logs)
    (arch,) = rep.architectures
    assert arch.genotype == CELL and arch.extra["source"] == "a paper" and arch.origin == "final"
    assert {"checkpoint", "torchscript"} <= set(res.artifacts)


def test_retrain_config_keeps_the_parents_data_seed_and_recipe() -> None:
    params = {"trials": 4, "population": 2, "sample_size": 2}
    parent = ExperimentConfig(strategy="evolution", space="nb201", **TINY | {"seed": 7, "final_lr": 0.1}, name="evo",
                              params=params).validated().to_dict()  # fmt: skip
    cfg = retrain_config(parent, CELL, "experiment 1, trial 3", final_epochs=5, name="evo · trial 3")
    assert cfg.strategy == "fixed" and cfg.name == "evo · trial 3" and cfg.final_epochs == 5
    assert (cfg.dataset, cfg.seed, cfg.final_lr, cfg.final_channels) == ("synthetic", 7, 0.1, 2)
    assert cfg.params == {"genotype": CELL, "source": "experiment 1, trial 3"}
    with pytest.raises(ConfigError) as err:
        retrain_config(parent, "not a cell", "x")
    assert err.value.field == "params.genotype"


def test_launch_page_refuses_no_architecture_and_queues_a_given_one(db: str) -> None:
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from storage import repo

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120).run()
    at.selectbox(key="strategy").set_value("fixed").run()
    at.selectbox(key="space").set_value("darts").run()
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception
    assert any("params.genotype" in e.value for e in at.error) and repo.list_experiments().empty
    at.text_input(key="p_fixed_genotype").set_value("DARTS_V2")
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception and not at.error
    exp = repo.get_experiment(at.session_state["launched"])
    assert exp["strategy"] == "fixed" and exp["config"]["params"]["genotype"] == "DARTS_V2"
    repo.request_cancel(exp["id"])


@pytest.mark.parametrize(("strategy", "params", "warned"), [("darts", {}, True), ("fixed", {"genotype": "x"}, False)])
def test_the_collapse_warning_is_for_searches_that_read_weights(db: str, strategy: str, params: dict,
                                                                warned: bool) -> None:  # fmt: skip
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from storage import repo

    skips = "|skip_connect~0|+|skip_connect~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"
    exp_id = repo.create_experiment({"strategy": strategy, "space": "nb201", **TINY, "params": params})
    repo.finish_job(exp_id, "succeeded", result={"genotype": skips})
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120).run()
    at.switch_page("pages/monitor.py")
    at.query_params["id"] = str(exp_id)
    at.run()
    assert not at.exception and repo.get_experiment(exp_id)["genotype"] == skips
    assert any("performance collapse" in w.value for w in at.warning) == warned
