"""Monitor and Compare pages for training-free search: pruning rounds, search signals, proxy scatter, cost."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from nas_service.jobs import run_job
from storage import repo

ROOT = Path(__file__).resolve().parents[1]
TENAS = {"strategy": "tenas", "space": "nb201", "dataset": "synthetic", "epochs": 1, "final_epochs": 1,
         "channels": 4, "final_channels": 4, "cells_per_stage": 1, "threads": 1,
         "params": {"ntk_batch": 12, "repeats": 1, "region_samples": 100}}  # fmt: skip
ARCH = "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"


@pytest.fixture
def tenas_run(db: str) -> int:
    """A real tiny TE-NAS search with final training, run in this process through the job code."""
    exp_id = repo.create_experiment(TENAS, name="tenas-pages")
    summary = run_job(exp_id, heartbeat=False)
    assert summary["status"] == "succeeded", repo.get_experiment(exp_id)["traceback"]
    return exp_id


def _page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.switch_page(page)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _frame_with(at: AppTest, column: str):
    """The page's table that has ``column`` (AppTest does not look dataframes up by key)."""
    (df,) = [d.value for d in at.dataframe if column in d.value.columns]
    return df


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_monitor_shows_pruning_rounds_signals_supernet_and_cost(tenas_run: int) -> None:
    at = _page("pages/monitor.py", id=str(tenas_run))
    _clean(at)
    subheaders = [s.value for s in at.subheader]
    assert "Pruning rounds" in subheaders and "Search signals" in subheaders
    rounds = _frame_with(at, "rank_sum")
    assert len(rounds) == 18 and set(rounds["op"]) <= {"skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"}
    assert list(rounds["round"]) == sorted(rounds["round"]) and rounds["round"].max() == 3
    # The supernet diagram follows the round slider: 4 ops per edge before pruning, 1 after the last round.
    slider = at.select_slider(key="prune_round")
    assert slider.value == 3
    dots = [g.proto.spec for g in at.get("graphviz_chart")]
    assert any(d.count("->") == 6 and "\\n" not in d for d in dots)
    slider.set_value(0).run()
    _clean(at)
    dots = [g.proto.spec for g in at.get("graphviz_chart")]
    assert any(d.count("->") == 6 and d.count("\\n") == 18 for d in dots)  # 4 ops on each of 6 edges
    assert any(c.value.startswith("Cost: search ") for c in at.caption)


def test_compare_queues_proxies_and_plots_them_against_accuracy(tenas_run: int) -> None:
    # A second experiment's architecture without proxies next to the TE-NAS one, which has them.
    other = repo.create_experiment({"strategy": "darts", "space": "nb201", "dataset": "synthetic"}, name="other")
    repo.write_batch(other, architectures=[{"genotype": ARCH, "space": "nb201", "accuracy": 0.5,
                                            "accuracy_kind": "test", "macs": 1000, "latency_ms": 1.0}])  # fmt: skip
    repo.finish_job(other, "succeeded")
    at = _page("pages/compare.py")
    _clean(at)
    corr = _frame_with(at, "kendall_tau")
    assert list(corr["n"]) == [1, 1]  # only the TE-NAS architecture has both so far
    assert any("1 architecture(s)" in m.value for m in at.markdown)
    next(n for n in at.number_input if n.label == "workers").set_value(2)  # the repeats on 2 processes
    at.button[-1].click().run()  # the form's submit button
    _clean(at)
    runs = repo.list_experiments()
    proxies = runs[runs["kind"] == "proxies"]
    assert len(proxies) == 1 and proxies["status"].iloc[0] == "queued"
    arch_id = int(repo.architectures_df([other])["id"].iloc[0])
    queued = repo.get_experiment(int(proxies["id"].iloc[0]))["config"]
    assert queued["architecture_ids"] == [arch_id] and queued["settings"]["workers"] == 2
    # Run it in this process (the page would have started a worker) and look again.
    assert run_job(int(proxies["id"].iloc[0]), heartbeat=False)["status"] == "succeeded"
    at = _page("pages/compare.py")
    _clean(at)
    corr = _frame_with(at, "kendall_tau")
    assert list(corr["n"]) == [2, 2] and corr["kendall_tau"].abs().max() == pytest.approx(1.0)
    assert not any("have no proxies yet" in m.value for m in at.markdown)


ATOMNAS = {"strategy": "atomnas", "space": "mobilenet", "dataset": "digits", "epochs": 2, "final_epochs": 0,
           "batch_size": 128, "threads": 1, "max_train_per_class": 40, "params": {"target_macs": 0.6}}  # fmt: skip
PROXYLESS = {"strategy": "proxylessnas", "space": "mobilenet", "dataset": "digits", "epochs": 2, "final_epochs": 1,
             "batch_size": 32, "threads": 1, "max_train_per_class": 20,
             "params": {"lut_repeats": 3, "lut_warmup": 1, "lut_seconds": 0, "arch_every": 2,
                        "target_latency_ms": 1.0}}  # fmt: skip


def test_monitor_shows_atomnas_shrinks_and_proxylessnas_latency_table(db: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_RUNS_DIR", str(tmp_path / "runs"))  # where the latency table is stored
    atom = repo.create_experiment(ATOMNAS, name="atomnas-pages")
    proxy = repo.create_experiment(PROXYLESS, name="proxyless-pages")
    for exp_id in (atom, proxy):
        assert run_job(exp_id, heartbeat=False)["status"] == "succeeded", repo.get_experiment(exp_id)["traceback"]

    at = _page("pages/monitor.py", id=str(atom))
    _clean(at)
    subheaders = [s.value for s in at.subheader]
    assert "Shrinks" in subheaders and "Search signals" in subheaders
    shrinks = _frame_with(at, "removed_total")
    assert (shrinks["removed_total"] > 0).all() and (shrinks["macs_after"] < shrinks["macs_before"]).all()
    assert at.get("graphviz_chart")  # the network block by block

    at = _page("pages/monitor.py", id=str(proxy))
    _clean(at)
    (expander,) = [e for e in at.expander if e.label.startswith("Latency lookup table")]
    table = _frame_with(at, "latency_ms")
    assert {"block", "op"} <= set(table.columns) and (table["latency_ms"] >= 0).all()
    notes = [c.value for c in at.caption] + [w.value for w in at.warning]  # how steady the machine was
    assert any("between the two halves of the measurement" in n for n in notes), notes
    assert "Alpha evolution" in [s.value for s in at.subheader]
