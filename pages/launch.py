"""Launch: a form generated from GENERAL_FIELDS and the chosen strategy's params; validated before queueing."""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

from dashboard.common import bootstrap, guarded, queue_experiment, show_queued
from nas_core.config import FINAL_RECIPE_FIELDS, GENERAL_FIELDS, ExperimentConfig
from nas_core.data import DATASETS
from nas_core.devices import describe_local, local_devices
from nas_core.params import ParamSpec
from nas_core.spaces import SPACES
from nas_core.strategies import STRATEGIES
from nas_core.validation import final_recipe_supported

bootstrap("Launch")  # first: this page may be the first request after a server start

#: General fields shown up front; final training's under "Final training"; the rest under "Network and runtime".
MAIN_FIELDS = ("epochs", "seed", "batch_size", "final_epochs")
FINAL_FIELDS = ("final_channels", "final_lr")


def _bounds(spec: ParamSpec) -> str:
    if spec.minimum is not None and spec.maximum is not None:
        return f" Allowed: {spec.minimum:g} to {spec.maximum:g}."
    if spec.minimum is not None:
        return f" At least {spec.minimum:g}."
    return ""


def param_widget(spec: ParamSpec, key: str) -> Any:
    """One input per ParamSpec. Bounds are not enforced by the widget: ExperimentConfig refuses them by name."""
    label, help_text = spec.name.replace("_", " "), (spec.help + _bounds(spec)).strip()
    if spec.name == "device":  # the devices this machine has; auto also finds a GPU on another worker's machine
        help_text += f". This machine: {describe_local()}."
        return st.selectbox(label, local_devices(), index=0, help=help_text, key=key)
    if spec.kind == "bool":
        return st.checkbox(label, value=bool(spec.default), help=help_text, key=key)
    if spec.kind == "text":
        return st.text_input(label, value=str(spec.default), help=help_text, key=key)
    if spec.kind == "choice":
        return st.selectbox(label, spec.choices, index=spec.choices.index(spec.default), help=help_text, key=key)
    if spec.kind == "int":
        return st.number_input(label, value=int(spec.default), step=1, help=help_text, key=key)
    default = float(spec.default)
    step = 10.0 ** math.floor(math.log10(abs(default))) if default else 0.01
    return st.number_input(label, value=default, step=step, format="%g", help=help_text, key=key)


def _columns(specs: list[ParamSpec], prefix: str, n: int = 4) -> dict[str, Any]:
    values, cols = {}, st.columns(n)
    for i, spec in enumerate(specs):
        with cols[i % n]:
            values[spec.name] = param_widget(spec, f"{prefix}{spec.name}")
    return values


def _final_training(space: str) -> dict[str, Any]:
    """Final-training inputs; the DARTS evaluation recipe's only where the space's network takes it.

    Elsewhere those fields are not sent, so the config keeps their defaults (validated() would refuse others).
    """
    st.caption("How the derived architecture is trained from scratch after the search (final epochs 0 skips it).")
    values = _columns([p for p in GENERAL_FIELDS if p.name in FINAL_FIELDS], "g_")
    if final_recipe_supported(SPACES[space]):
        st.markdown("**DARTS evaluation recipe**")
        st.caption(
            "The paper's CIFAR-10 network: 20 cells, C=36 (final channels), auxiliary head with loss weight 0.4, "
            "drop path 0.2, cutout 16. The auxiliary head needs inputs of at least 29x29 (image size 32 under "
            "Network and runtime for the 8x8 built-in sets)."
        )
        values |= _columns([p for p in GENERAL_FIELDS if p.name in FINAL_RECIPE_FIELDS], "g_")
    else:
        st.caption(
            f"{SPACES[space].label}: trained with its own recipe; the DARTS evaluation recipe (cells, auxiliary "
            "head, drop path, cutout) is for the DARTS cell space."
        )
    return values


@guarded
def main() -> None:
    st.title("Launch a search")
    strategy = st.selectbox("Strategy", list(STRATEGIES), format_func=lambda s: STRATEGIES[s].label, key="strategy")
    strat = STRATEGIES[strategy]
    st.caption(strat.description)
    spaces = [s for s in strat.spaces if s in SPACES]
    space = st.selectbox("Search space", spaces, format_func=lambda s: SPACES[s].label, key="space")

    with st.form("launch"):
        left, right = st.columns([1, 2])
        name = left.text_input("Name (optional)", max_chars=200, key="name")
        datasets = list(DATASETS)
        dataset = right.selectbox(
            "Data set", datasets, index=datasets.index("digits") if "digits" in datasets else 0,
            format_func=lambda d: f"{d}: {DATASETS[d]}", key="dataset",
        )  # fmt: skip
        folder = right.text_input("Data folder (only for data sets read from disk)", key="data_folder")
        general = _columns([p for p in GENERAL_FIELDS if p.name in MAIN_FIELDS], "g_")
        with st.expander("Network and runtime"):
            shown = (*MAIN_FIELDS, *FINAL_FIELDS, *FINAL_RECIPE_FIELDS)
            general |= _columns([p for p in GENERAL_FIELDS if p.name not in shown], "g_")
        with st.expander("Final training"):
            general |= _final_training(space)
        st.markdown(f"**{strat.label} hyperparameters**")
        params = _columns(list(strat.params), f"p_{strategy}_")
        submitted = st.form_submit_button("Launch", type="primary")

    if submitted:
        spec = f"{dataset}:{folder.strip()}" if folder.strip() else dataset
        config = {"strategy": strategy, "space": space, "dataset": spec, "name": name, **general, "params": params}
        queue_experiment(lambda: ExperimentConfig(**config).validated(), "launched")  # validated() checks the data
    show_queued("launched", "Watch #{id} on the Monitor page")


main()
