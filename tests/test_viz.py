"""Pareto fronts and figure functions on small hand-made DataFrames (no storage, no streamlit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from nas_core import viz
from nas_core.pareto import pareto_front_order, pareto_mask

ACC_MACS = [("accuracy", "max"), ("macs", "min")]
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_EDGES = ("1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2")
PARAM_FREE = {"none", "skip_connect", "avg_pool_3x3"}
FAKE_SPACE = SimpleNamespace(ops=NB201_OPS, param_free_ops=frozenset(PARAM_FREE))


def _frame(acc: list[float], macs: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"accuracy": acc, "macs": macs})


# ------------------------------------------------------------------------------------------- pareto_mask


def test_pareto_mask_basic_front() -> None:
    df = _frame([0.90, 0.80, 0.95, 0.85, 0.70], [10, 5, 20, 12, 6])
    # (0.85, 12) is beaten by (0.90, 10); (0.70, 6) by (0.80, 5).
    assert pareto_mask(df, ACC_MACS).tolist() == [True, True, True, False, False]


def test_pareto_mask_ties_on_one_objective() -> None:
    # Same MACs, different accuracy: only the more accurate one is non-dominated, and vice versa.
    df = _frame([0.9, 0.8, 0.9], [10, 10, 12])
    assert pareto_mask(df, ACC_MACS).tolist() == [True, False, False]


def test_pareto_mask_exact_duplicates_share_their_verdict() -> None:
    df = _frame([0.9, 0.9, 0.9, 0.5, 0.5], [10, 10, 10, 20, 20])
    assert pareto_mask(df, ACC_MACS).tolist() == [True, True, True, False, False]


def test_pareto_mask_nan_and_non_numeric_rows_never_on_front() -> None:
    df = pd.DataFrame({"accuracy": [0.9, np.nan, 0.99, None], "macs": [10, 1, "n/a", 1]})
    assert pareto_mask(df, ACC_MACS).tolist() == [True, False, False, False]
    assert pareto_mask(_frame([np.nan], [np.nan]), ACC_MACS).tolist() == [False]
    assert pareto_mask(_frame([], []), ACC_MACS).tolist() == []


def test_pareto_mask_three_objectives_and_index_independence() -> None:
    df = pd.DataFrame(
        {"accuracy": [0.9, 0.9, 0.8, 0.7], "macs": [10, 10, 5, 5], "latency_ms": [2.0, 1.0, 3.0, 0.5]},
        index=[40, 10, 30, 20],
    )
    mask = pareto_mask(df, [("accuracy", "max"), ("macs", "min"), ("latency_ms", "min")])
    assert mask.tolist() == [False, True, True, True]


def test_pareto_mask_agrees_with_brute_force() -> None:
    rng = np.random.default_rng(0)
    df = _frame(rng.integers(0, 5, 200).astype(float), rng.integers(0, 5, 200).astype(float))
    vals = np.column_stack([-df["accuracy"], df["macs"]])
    brute = [not any((vals[j] <= vals[i]).all() and (vals[j] < vals[i]).any() for j in range(200)) for i in range(200)]
    assert pareto_mask(df, ACC_MACS).tolist() == brute


def test_pareto_mask_rejects_bad_objectives() -> None:
    with pytest.raises(ValueError, match="goal"):
        pareto_mask(_frame([1], [1]), [("accuracy", "up")])
    with pytest.raises(KeyError, match="latency"):
        pareto_mask(_frame([1], [1]), [("latency", "min")])


def test_pareto_front_order_is_a_staircase_along_x() -> None:
    df = _frame([0.95, 0.80, 0.90, 0.85, 0.90], [20, 5, 10, 12, 10])
    order = pareto_front_order(df, ACC_MACS)
    assert df["macs"].iloc[order].tolist() == [5, 10, 10, 20]
    assert sorted(order.tolist()[1:3]) == [2, 4]  # both duplicates kept
    assert pareto_front_order(_frame([np.nan], [1.0]), ACC_MACS).tolist() == []


# -------------------------------------------------------------------------------------------- pareto charts


def _architectures() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [11, 12, 13, 14, 15],
            "experiment_id": [1, 1, 2, 2, 2],
            "experiment_name": ["run A", "run A", "run B", "run B", "run B"],
            "strategy": ["darts", "darts", "single-darts", "single-darts", "single-darts"],
            "genotype": ["|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|skip_connect~1|avg_pool_3x3~2|"] * 5,
            "accuracy": [0.90, 0.80, 0.95, 0.85, np.nan],
            "accuracy_kind": ["test"] * 5,
            "params": [1e5, 5e4, 2e5, 1.2e5, 1e5],
            "macs": [10e6, 5e6, 20e6, 12e6, 1e6],
            "latency_ms": [1.0, 2.0, 3.0, 0.5, 0.4],
            "origin": ["final"] * 5,
        }
    )


def test_pareto_2d_traces_highlight_and_customdata() -> None:
    fig = viz.pareto_2d(_architectures(), x="macs", color_by="experiment_name")
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == ["#1 run A", "#2 run B", "Pareto front (3)"]
    run_a, run_b, front = fig.data
    assert list(run_a.customdata) == [11, 12] and list(run_b.customdata) == [13, 14]  # 15 has no accuracy
    assert list(run_a.marker.symbol) == ["diamond", "diamond"]
    assert list(run_b.marker.symbol) == ["diamond", "circle"]
    assert list(front.x) == [5.0, 10.0, 20.0]  # MACs shown in millions, front joined left to right
    assert list(front.y) == pytest.approx([80.0, 90.0, 95.0])
    assert fig.layout.xaxis.title.text == "MACs (M)"
    assert "skip_connect~1" in run_a.hovertext[0] and "90.00% (test)" in run_a.hovertext[0]
    assert "1 with a missing value" in fig.layout.title.text


def test_pareto_2d_latency_and_strategy_colouring() -> None:
    fig = viz.pareto_2d(_architectures(), x="latency_ms", color_by="strategy")
    assert [t.name for t in fig.data][:2] == ["darts", "single-darts"]
    assert fig.layout.xaxis.title.text == "Latency (ms)"
    # On latency, (0.85, 0.5 ms) is non-dominated and (0.80, 2 ms) is not.
    sd = fig.data[1]
    assert dict(zip(sd.customdata, sd.marker.symbol))[14] == "diamond"
    assert dict(zip(fig.data[0].customdata, fig.data[0].marker.symbol))[12] == "circle"


def test_pareto_charts_on_empty_data_explain_themselves() -> None:
    empty = _architectures().iloc[:0]
    for fig in (viz.pareto_2d(empty), viz.pareto_3d(empty)):
        assert isinstance(fig, go.Figure) and len(fig.data) == 0
        assert "No architectures" in fig.layout.annotations[0].text
    with pytest.raises(ValueError, match="axis"):
        viz.pareto_2d(_architectures(), x="flops")


def test_selected_ids_from_customdata_or_figure() -> None:
    fig = viz.pareto_2d(_architectures())
    points = [
        {"curve_number": 0, "point_index": 1, "customdata": 12},
        {"curve_number": 1, "point_index": 0},  # no customdata: looked up in the figure
        {"curve_number": 2, "point_index": 0},  # the front line carries no ids
        {"curve_number": 0, "point_index": 1, "customdata": [12]},  # duplicates collapse
    ]
    assert viz.selected_ids(points, fig) == [12, 13]
    assert viz.selected_ids([]) == []


def test_pareto_3d_one_trace_per_group() -> None:
    fig = viz.pareto_3d(_architectures(), color_by="experiment_name")
    assert [type(t).__name__ for t in fig.data] == ["Scatter3d", "Scatter3d"]
    assert fig.layout.scene.xaxis.title.text == "MACs (M)"
    assert fig.layout.scene.zaxis.title.text == "Accuracy (%)"
    assert sorted(int(i) for t in fig.data for i in t.customdata) == [11, 12, 13, 14]


# ------------------------------------------------------------------------------------------ training curves


def _epochs() -> pd.DataFrame:
    rows = []
    for e in range(3):
        rows.append({"experiment_id": 1, "phase": "search", "epoch": e, "train_loss": 2.0 - e * 0.3,
                     "train_acc": 0.3 + e * 0.1, "val_loss": 2.1 - e * 0.3, "val_acc": 0.25 + e * 0.1})  # fmt: skip
    for e in range(2):
        rows.append({"experiment_id": 1, "phase": "train", "epoch": e, "train_loss": 1.5 - e * 0.5,
                     "train_acc": 0.5 + e * 0.2, "val_loss": np.nan, "val_acc": 0.6 + e * 0.1})  # fmt: skip
    return pd.DataFrame(rows)


def test_curve_data_puts_final_training_after_search() -> None:
    data, boundary = viz.curve_data(_epochs())
    assert boundary == 3.5
    assert sorted(data[data.phase == "search"].x.unique()) == [1, 2, 3]
    assert sorted(data[data.phase == "train"].x.unique()) == [4, 5]
    assert data[(data.phase == "train") & (data.metric == "loss") & (data.split == "val")].empty


def test_training_curves_traces() -> None:
    fig = viz.training_curves(_epochs())
    names = sorted((t.name, t.xaxis) for t in fig.data)
    assert names == sorted(
        [
            ("search · train", "x"), ("search · val", "x"), ("search · train", "x2"), ("search · val", "x2"),
            ("final training · train", "x"), ("final training · train", "x2"), ("final training · val", "x2"),
        ]
    )  # fmt: skip
    assert len(fig.layout.shapes) == 2  # the phase boundary on both panels
    assert len(viz.training_curves(pd.DataFrame()).data) == 0


# -------------------------------------------------------------------------------------------------- alphas


def _alphas(steps: int = 4, cells: tuple[str, ...] = ("normal",)) -> pd.DataFrame:
    """Weights that drift from uniform toward skip_connect on every edge."""
    rows = []
    for cell in cells:
        for step in range(steps):
            logits = np.zeros(len(NB201_OPS))
            logits[1] = step * 0.5
            w = np.exp(logits) / np.exp(logits).sum()
            for edge in NB201_EDGES:
                for op, weight in zip(NB201_OPS, w):
                    rows.append({"experiment_id": 1, "step": step * 10, "epoch": step, "cell": cell, "edge": edge,
                                 "op": op, "weight": float(weight)})  # fmt: skip
    return pd.DataFrame(rows)


def test_alpha_matrix_orders_and_thins() -> None:
    wide = viz.alpha_matrix(_alphas(steps=10), ops=NB201_OPS, max_steps=4)
    assert list(wide.index) == [0, 30, 60, 90]
    assert list(wide.columns[:5]) == [("1<-0", op) for op in NB201_OPS]
    assert viz.alpha_steps(_alphas(steps=3)) == [0, 10, 20]


def test_alpha_lines_one_panel_per_edge() -> None:
    fig = viz.alpha_lines(_alphas(), ops=NB201_OPS)
    assert len(fig.data) == len(NB201_EDGES) * len(NB201_OPS)
    assert [t.name for t in fig.data if t.showlegend] == list(NB201_OPS)
    assert [a.text for a in fig.layout.annotations] == [f"edge {e}" for e in NB201_EDGES]
    assert len(viz.alpha_lines(pd.DataFrame()).data) == 0


def test_alpha_heatmap_picks_latest_step_at_or_before() -> None:
    df = _alphas()
    fig = viz.alpha_heatmap(df, step=25, ops=NB201_OPS)
    (heat,) = fig.data
    assert isinstance(heat, go.Heatmap)
    assert np.array(heat.z).shape == (6, 5)
    assert list(heat.x) == list(NB201_OPS)
    assert "step 20" in fig.layout.title.text
    assert np.array(heat.z).sum(axis=1) == pytest.approx(np.ones(6))
    assert "step 30" in viz.alpha_heatmap(df).layout.title.text
    assert "step 0" in viz.alpha_heatmap(df, step=-5).layout.title.text


def test_param_free_share_values_and_figure() -> None:
    df = _alphas(steps=3, cells=("normal", "reduce"))
    share = viz.param_free_share_df(df, PARAM_FREE)
    total = share.groupby(["cell", "step"])["share"].sum()
    # Step 0 is uniform: 3 of 5 ops are parameter-free.
    assert total[("normal", 0)] == pytest.approx(0.6)
    assert total[("normal", 20)] > total[("normal", 10)] > total[("normal", 0)]
    fig = viz.param_free_share(df, PARAM_FREE)
    assert len(fig.data) == 2 * len(PARAM_FREE)
    assert {t.stackgroup for t in fig.data} == {"cell0", "cell1"}
    assert len(viz.param_free_share(df, {"no_such_op"}).data) == 0


def test_collapse_flag() -> None:
    skippy = "|skip_connect~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|"
    convy = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_1x1~0|nor_conv_3x3~1|none~2|"
    half = "|skip_connect~0|+|skip_connect~0|none~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    msg = viz.collapse_flag(skippy, FAKE_SPACE)
    assert msg is not None and "5 of 6" in msg and "skip_connect ×3" in msg
    assert viz.collapse_flag(convy, FAKE_SPACE) is None
    assert viz.collapse_flag(half, FAKE_SPACE) is None  # exactly half does not dominate
    assert viz.collapse_flag("", FAKE_SPACE) is None


# --------------------------------------------------------------------------------------- progress, tables


def test_progress_info_eta_and_states() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    running = {"status": "running", "progress": 0.25, "phase": "search", "epoch": 2, "total_epochs": 8,
               "started_at": (now - timedelta(seconds=60)).replace(tzinfo=None)}  # fmt: skip
    info = viz.progress_info(running, now=now)
    assert info.fraction == 0.25 and info.elapsed_s == pytest.approx(60)
    assert info.eta_s == pytest.approx(180)
    assert "epoch 2/8" in info.text and "ETA 3 min 00 s" in info.text
    assert viz.progress_info({"status": "queued"}, now=now).text.startswith("queued")
    done = viz.progress_info(
        {"status": "succeeded", "progress": 1.0, "started_at": now - timedelta(seconds=130), "finished_at": now}
    )
    assert done.fraction == 1.0 and "2 min 10 s" in done.text
    failed = viz.progress_info({"status": "failed", "progress": 0.4, "duration_s": 5.0}, now=now)
    assert failed.text.startswith("failed at 40%")


def test_format_duration() -> None:
    assert viz.format_duration(None) == "–"
    assert viz.format_duration(45) == "45 s"
    assert viz.format_duration(185) == "3 min 05 s"
    assert viz.format_duration(3725) == "1 h 02 min"


def test_experiments_and_architectures_tables() -> None:
    exps = pd.DataFrame(
        {
            "id": [1, 2], "name": ["a", None], "strategy": ["darts", "single-darts"], "space": "nb201",
            "dataset": "digits", "status": ["succeeded", "running"], "progress": [1.0, 0.5], "phase": [None, "search"],
            "epoch": [None, 1], "total_epochs": [None, 2], "best_accuracy": [0.9, None], "macs": [12e6, None],
            "latency_ms": [1.5, None], "duration_s": [120.0, None],
            "started_at": [pd.Timestamp("2025-01-01 10:00"), pd.Timestamp("2025-01-01 11:00")],
            "finished_at": [pd.Timestamp("2025-01-01 10:02"), None],
        }
    )  # fmt: skip
    table = viz.experiments_table(exps)
    assert table["id"].tolist() == [2, 1]
    assert table.loc[1, "accuracy (%)"] == pytest.approx(90.0) and table.loc[1, "MACs (M)"] == pytest.approx(12.0)
    assert table.loc[1, "duration"] == "2 min 00 s" and table.loc[1, "state"] == ""
    assert table.loc[0, "state"].startswith("search · epoch 1/2 · 50%")
    assert table.loc[0, "strategy"] == "single-darts / nb201"
    arch = viz.architectures_table(_architectures())
    assert arch["MACs (M)"].tolist() == pytest.approx([10, 5, 20, 12, 1])
