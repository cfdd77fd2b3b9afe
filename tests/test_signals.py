"""Search signals and costs in storage: series, events, proxies on architectures, background proxy runs."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from test_worker import procs  # noqa: F401  (fixture for the worker test)

from nas_core.reporting import ArchitectureRecord
from nas_service.jobs import DBReporter
from storage import repo

CONFIG = {"strategy": "darts", "space": "nb201", "dataset": "synthetic", "epochs": 1, "name": "signals"}
ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
ARCH2 = "|skip_connect~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def test_series_and_events_round_trip_through_the_reporter(db: str, tmp_path: Path) -> None:
    exp_id = repo.create_experiment(CONFIG)
    rep = DBReporter(exp_id, workdir=tmp_path, flush_interval=3600)
    rep.series(0, 0, {"tau": 10.0, "entropy/normal": 1.6})
    rep.series(5, 1, {"tau": 5.05, "entropy/normal": 1.2, "beta/normal/2<-0": float("nan")})
    rep.event("prune", 1, {"edge": "1<-0", "op": "avg_pool_3x3", "kappa_rank": 0})
    assert repo.series_df(exp_id).empty  # buffered until the flush
    rep.flush()
    series = repo.series_df(exp_id)
    assert list(series.columns) == repo.SERIES_COLUMNS
    assert list(series.loc[series["name"] == "tau", "value"]) == [10.0, 5.05]
    assert math.isnan(series.loc[series["name"] == "beta/normal/2<-0", "value"].iloc[0])  # NaN stored as NULL
    events = repo.events_df(exp_id)
    assert list(events.columns) == repo.EVENT_COLUMNS
    assert events["data"].iloc[0] == {"edge": "1<-0", "op": "avg_pool_3x3", "kappa_rank": 0}
    assert repo.events_df(exp_id, "shrink").empty
    repo.finish_job(exp_id, "cancelled")
    assert repo.delete_experiment(exp_id)
    assert repo.series_df(exp_id).empty and repo.events_df(exp_id).empty  # cascaded


def test_architecture_proxies_and_search_cost_are_stored(db: str, tmp_path: Path) -> None:
    exp_id = repo.create_experiment(CONFIG)
    rep = DBReporter(exp_id, workdir=tmp_path)
    rep.architecture(ArchitectureRecord(ARCH, "nb201", 0.9, "test", ntk_cond=123.5, linear_regions=77.0))
    rep.architecture(ArchitectureRecord(ARCH2, "nb201", 0.8, "test"))
    rep.flush()
    archs = repo.architectures_df([exp_id])
    assert list(archs["ntk_cond"].isna()) == [False, True] and archs["linear_regions"].iloc[0] == 77.0
    second = int(archs["id"].iloc[1])
    assert repo.set_architecture_proxies(second, 50.0, 12.5, {"repeats": 2})
    assert not repo.set_architecture_proxies(10_000, 1.0, 1.0)
    archs = repo.architectures_df([exp_id])
    assert archs["ntk_cond"].iloc[1] == 50.0 and archs["linear_regions"].iloc[1] == 12.5
    repo.finish_job(exp_id, "succeeded", result={"search_seconds": 12.5, "train_seconds": 3.0, "device": "cpu"})
    exp = repo.get_experiment(exp_id)
    assert exp["search_seconds"] == 12.5 and exp["train_seconds"] == 3.0 and exp["kind"] == "search"
    listed = repo.list_experiments()
    assert listed["search_seconds"].iloc[0] == 12.5 and listed["kind"].iloc[0] == "search"


def test_create_proxy_run_refuses_bad_input(db: str) -> None:
    with pytest.raises(ValueError, match="no architectures"):
        repo.create_proxy_run([], {})
    with pytest.raises(ValueError, match="no architecture with id 42"):
        repo.create_proxy_run([42], {})
    assert repo.list_experiments().empty
    with pytest.raises(ValueError, match="kind must be one of"):
        repo.create_experiment(CONFIG, kind="other")


def test_upgrade_from_the_first_schema_keeps_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database created by the first release migrates in place: old experiments read as searches."""
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setenv("NAS_RUNS_DIR", str(tmp_path / "runs"))
    cfg = Config()
    cfg.set_main_option("script_location", str(repo.MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001")
    with sqlite3.connect(tmp_path / "old.db") as con:
        con.execute(
            "INSERT INTO experiments (name, strategy, space, dataset, config, status, progress, epoch, total_epochs,"
            " created_at, cancel_requested) VALUES ('old', 'darts', 'nb201', 'digits', '{}', 'succeeded', 1.0, 3, 3,"
            " '2026-01-01 00:00:00.000000', 0)"
        )
        assert "series_points" not in {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    repo.init_db(url)
    listed = repo.list_experiments(url=url)
    assert list(listed["name"]) == ["old"] and list(listed["kind"]) == ["search"]
    assert math.isnan(listed["search_seconds"].iloc[0])
    assert repo.series_df(int(listed["id"].iloc[0]), url=url).empty


@pytest.mark.slow
def test_proxy_run_through_the_worker_scores_stored_architectures(db: str, procs: Callable) -> None:  # noqa: F811
    exp_id = repo.create_experiment(CONFIG | {"seed": 3})
    repo.write_batch(
        exp_id,
        architectures=[
            {"genotype": ARCH, "space": "nb201", "accuracy": 0.9, "accuracy_kind": "test"},
            {"genotype": ARCH2, "space": "nb201", "accuracy": 0.7, "accuracy_kind": "test"},
        ],
    )
    repo.finish_job(exp_id, "succeeded")
    ids = [int(i) for i in repo.architectures_df([exp_id])["id"]]
    settings = {"repeats": 2, "ntk_batch": 12, "region_samples": 50, "init": "kaiming", "seed": 0}
    run_id = repo.create_proxy_run(ids, settings | {"workers": 2})  # the repeats on 2 processes
    run = repo.get_experiment(run_id)
    assert run["kind"] == "proxies" and run["status"] == "queued" and run["total_epochs"] == 2
    worker = procs("worker", "--once", "--poll", "0.2")
    out, _ = worker.communicate(timeout=180)
    assert worker.returncode == 0, out
    run = repo.get_experiment(run_id)
    assert run["status"] == "succeeded", (run["error"], run["traceback"], out)
    assert run["progress"] == 1.0
    archs = repo.architectures_df([exp_id])
    assert archs["ntk_cond"].notna().all() and (archs["ntk_cond"] > 1).all()
    assert (archs["linear_regions"] >= 1).all()
    assert archs["ntk_cond"].iloc[0] != archs["ntk_cond"].iloc[1]  # two different cells score differently
    logs = repo.logs_df(run_id, tail=None)
    assert logs["message"].str.contains("ntk_cond").sum() == 2
    # The same settings through the engine give the same scores: the job rebuilt the right data and network.
    from nas_core.data import load_dataset
    from nas_core.proxies import genotype_proxies
    from nas_core.spaces import get_space

    data = load_dataset("synthetic", 3)
    direct = genotype_proxies(get_space("nb201").parse(ARCH), data.x_train, data.num_classes, **settings)
    assert archs["ntk_cond"].iloc[0] == pytest.approx(direct["ntk_cond"], rel=1e-6)
    assert archs["linear_regions"].iloc[0] == direct["linear_regions"]


def test_proxy_run_skips_an_architecture_without_proxy_networks(db: str) -> None:
    from nas_service.jobs import run_job

    partial = ("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1)], normal_concat=[2], "
               "reduce=[('sep_conv_3x3', 0), ('skip_connect', 1)], reduce_concat=[2])")  # fmt: skip
    exp_id = repo.create_experiment(CONFIG | {"space": "darts", "strategy": "progressive", "params": {}})
    repo.write_batch(exp_id, architectures=[{"genotype": partial, "space": "darts", "accuracy": 0.5,
                                             "accuracy_kind": "test"}])  # fmt: skip
    repo.finish_job(exp_id, "succeeded")
    ids = [int(i) for i in repo.architectures_df([exp_id])["id"]]
    run_id = repo.create_proxy_run(ids, {"repeats": 1})
    out = run_job(run_id, heartbeat=False)
    assert out["status"] == "succeeded", out["error"]
    result = repo.get_experiment(run_id)["result"]
    assert (result["skipped"], result["evaluated"]) == (1, 0)
    assert repo.logs_df(run_id, tail=None)["message"].str.contains("concatenate nodes.*; skipped").any()
    assert repo.architectures_df([exp_id])["ntk_cond"].isna().all()
