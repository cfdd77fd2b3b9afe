"""Every figure of ``nas_core.viz.FIGURES`` keeps the contract, timm-style: one parametrised test per entry.

Each renders a ``plotly`` Figure that serialises, on a frame with no rows (it then explains itself with an
annotation and draws nothing) and on a tiny frame of realistic rows (it then draws data), and its ``*_info``
function returns the ``NamedTuple`` the registry names. The registry itself must list every public function
of the package that returns a Figure, and this file must know a frame for each.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from nas_core import viz
from storage.repo import ALPHA_COLUMNS, ARCHITECTURE_COLUMNS, EPOCH_COLUMNS, SERIES_COLUMNS

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
PARAM_FREE = frozenset({"none", "skip_connect", "avg_pool_3x3"})
FAKE_SPACE = SimpleNamespace(ops=NB201_OPS, param_free_ops=PARAM_FREE)
GENOTYPE = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|skip_connect~0|skip_connect~1|avg_pool_3x3~2|"


def _architectures() -> pd.DataFrame:
    """Three architectures of two experiments, with proxies, in the columns of ``repo.architectures_df``."""
    rows = [
        {"id": 11, "experiment_id": 1, "experiment_name": "run A", "strategy": "darts", "space": "nb201",
         "accuracy": 0.90, "params": 1e5, "macs": 10e6, "latency_ms": 1.0, "ntk_cond": 120.0, "linear_regions": 300},
        {"id": 12, "experiment_id": 1, "experiment_name": "run A", "strategy": "darts", "space": "nb201",
         "accuracy": 0.80, "params": 5e4, "macs": 5e6, "latency_ms": 2.0, "ntk_cond": 450.0, "linear_regions": 180},
        {"id": 13, "experiment_id": 2, "experiment_name": "run B", "strategy": "single-darts", "space": "nb201",
         "accuracy": 0.95, "params": 2e5, "macs": 20e6, "latency_ms": 3.0, "ntk_cond": 80.0, "linear_regions": 410},
    ]  # fmt: skip
    for r in rows:
        r.update(dataset="cifar10", genotype=GENOTYPE, accuracy_kind="test", origin="final")
    return pd.DataFrame(rows, columns=ARCHITECTURE_COLUMNS)


def _epochs() -> pd.DataFrame:
    """Two search epochs and one final-training epoch, in the columns of ``repo.epochs_df``."""
    rows = [
        {"experiment_id": 1, "phase": "search", "epoch": 0, "train_loss": 2.0, "train_acc": 0.30, "val_loss": 2.1,
         "val_acc": 0.25},
        {"experiment_id": 1, "phase": "search", "epoch": 1, "train_loss": 1.7, "train_acc": 0.40, "val_loss": 1.8,
         "val_acc": 0.35},
        {"experiment_id": 1, "phase": "train", "epoch": 0, "train_loss": 1.5, "train_acc": 0.50, "val_loss": np.nan,
         "val_acc": 0.60},
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=EPOCH_COLUMNS)


def _alphas() -> pd.DataFrame:
    """One edge's softmax weights at one step, in the columns of ``repo.alphas_df``."""
    rows = [
        {"experiment_id": 1, "step": 0, "epoch": 0, "cell": "normal", "edge": "1<-0", "op": op, "weight": w}
        for op, w in (("skip_connect", 0.5), ("nor_conv_3x3", 0.3), ("avg_pool_3x3", 0.2))
    ]
    return pd.DataFrame(rows, columns=ALPHA_COLUMNS)


def _series() -> pd.DataFrame:
    """The Gumbel temperature at three steps, in the columns of ``repo.series_df``."""
    rows = [{"experiment_id": 1, "step": s, "epoch": s // 5, "name": "tau", "value": v} for s, v in
            ((0, 10.0), (5, 5.05), (10, 0.1))]  # fmt: skip
    return pd.DataFrame(rows, columns=SERIES_COLUMNS)


#: Figure name -> (tiny frame, keyword arguments both the figure and its info function take).
CASES: dict[str, tuple[Callable[[], pd.DataFrame], dict[str, Any]]] = {
    "pareto_2d": (_architectures, {"x": "macs", "color_by": "experiment_name"}),
    "pareto_3d": (_architectures, {"color_by": "strategy"}),
    "training_curves": (_epochs, {}),
    "alpha_lines": (_alphas, {"ops": NB201_OPS}),
    "alpha_heatmap": (_alphas, {"step": None, "cell": "normal", "ops": NB201_OPS}),
    "param_free_share": (_alphas, {"param_free_ops": PARAM_FREE}),
    "node_top2": (_alphas, {"step": None, "cell": "normal", "space": FAKE_SPACE}),
    "series_figure": (_series, {"group": "tau"}),
    "proxy_scatter": (_architectures, {"color_by": "experiment_name"}),
}


def _has_data(trace: Any) -> bool:
    return any(getattr(trace, axis, None) is not None and len(getattr(trace, axis)) > 0 for axis in ("x", "y", "z"))


def test_the_registry_lists_every_public_figure_and_each_has_a_case() -> None:
    returns_figure = {
        name
        for name in viz.__all__
        if inspect.isfunction(obj := getattr(viz, name))
        and inspect.signature(obj).return_annotation in ("go.Figure", go.Figure)
    }
    assert returns_figure == set(viz.FIGURES)
    assert set(CASES) == set(viz.FIGURES)
    for name, spec in viz.FIGURES.items():
        assert spec.figure is getattr(viz, name)
        assert issubclass(spec.info_type, tuple) and spec.info_type._fields  # a NamedTuple
        assert spec.info.__name__.endswith("_info") and spec.info is getattr(viz, spec.info.__name__)


@pytest.mark.parametrize("name", sorted(viz.FIGURES))
def test_figure_on_a_tiny_frame_draws_data(name: str) -> None:
    spec, (frame, kwargs) = viz.FIGURES[name], CASES[name]
    fig = spec.figure(frame(), **kwargs)
    assert isinstance(fig, go.Figure)
    assert fig.to_json()
    assert any(_has_data(t) for t in fig.data), f"{name} drew no data from {len(frame())} rows"
    info = spec.info(frame(), **kwargs)
    assert type(info) is spec.info_type


@pytest.mark.parametrize("name", sorted(viz.FIGURES))
def test_figure_on_an_empty_frame_explains_itself(name: str) -> None:
    spec, (frame, kwargs) = viz.FIGURES[name], CASES[name]
    empty = frame().iloc[:0]
    fig = spec.figure(empty, **kwargs)
    assert isinstance(fig, go.Figure)
    assert fig.to_json()
    assert not any(_has_data(t) for t in fig.data)
    assert fig.layout.annotations and fig.layout.annotations[0].text
    assert type(spec.info(empty, **kwargs)) is spec.info_type
