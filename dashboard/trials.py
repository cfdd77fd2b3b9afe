"""The Monitor's section for multi-trial searches: the trials' Pareto chart and table, and training any trial."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard.common import queue_experiment, show_queued
from nas_core import viz
from nas_core.pareto import pareto_mask
from nas_service.retrain import retrain_config
from storage import repo


def trials_section(exp: dict[str, Any]) -> None:
    """Multi-trial search: every trained candidate, its parent (evolution, progressive) and its score."""
    exp_id = exp["id"]
    table = viz.event_table(repo.events_df(exp_id, "trial"), "trial")
    st.subheader("Trials")
    if table.empty:
        st.caption("No trial finished yet.")
        return
    points, x = viz.trial_points(table)
    timed = bool(points["latency_ms"].notna().any())  # the search measured its trials' latency (latency=true)
    if timed:
        x = st.radio("Cost axis", [x, "latency_ms"], horizontal=True, key="trial_axis",
                     format_func=lambda a: viz.AXES[a][0])  # fmt: skip
    st.plotly_chart(viz.pareto_2d(points, x=x, color_by="origin"), key="trial_pareto")
    table["front"] = pareto_mask(points, [("accuracy", "max"), (x, "min")])  # rows in the same order
    if "macs" not in table.columns:  # trials recorded before MACs were
        table["macs"] = float("nan")
    key = "reward" if "reward" in table.columns else "val_acc"  # objective=mnas ranks by MnasNet's reward
    grown = "stage" in table.columns  # progressive search: the stage and the predictor's estimate
    if grown and "predicted" not in table.columns:
        table["predicted"] = float("nan")
    columns = ["trial", *(["stage"] if grown else []), "val_acc", *(["predicted"] if grown else []),
               *(["reward"] if key == "reward" else []), "front", "parent", "params", "macs",
               *(["latency_ms"] if timed else []), "seconds", "genotype"]  # fmt: skip
    table = table.rename(columns={"step": "trial"})[columns]
    best = table.loc[table[key].idxmax()]
    ranked = f"reward {best['reward']:.4f}, " if key == "reward" else ""
    st.caption(f"{len(table)} trial(s) finished; best: trial {int(best['trial'])} ({ranked}validation accuracy "
               f"{best['val_acc']:.4f}). Sorted best first by {key.replace('_', ' ')}; front = on the Pareto front "
               f"of accuracy against {viz.AXES[x][0]}; parent = the trial it "
               + ("grows by one node; predicted = the accuracy predictor's estimate before training (progressive)."
                  if grown else "mutates (evolution)."))  # fmt: skip
    number = st.column_config.NumberColumn
    st.dataframe(
        table.sort_values(key, ascending=False),
        hide_index=True,
        key="trial_table",
        column_config={
            "val_acc": number("val acc", format="%.4f"),
            "predicted": number("predicted", format="%.4f"),
            "reward": number("reward", format="%.4f"),
            "seconds": number("s", format="%.1f"),
            "macs": number("MACs", format="%d"),
            "latency_ms": number("latency ms", format="%.3f"),
        },
    )
    _retrain(exp, table.sort_values(key, ascending=False))


def _retrain(exp: dict[str, Any], table: pd.DataFrame) -> None:
    """Queue the final training of any trial: the search trains only its own pick, the front holds more."""
    st.markdown("**Train another trial at the final size**")
    st.caption("Queues a new experiment that trains the trial's architecture from scratch with this run's data, "
               "seed and final recipe, then measures, stores and exports it like a search result.")  # fmt: skip
    rows = table.set_index("trial")
    left, mid, right = st.columns([3, 1, 1], vertical_alignment="bottom")

    def label(t: int) -> str:
        macs = rows.loc[t, "macs"]
        cost = f", {macs / 1e6:.2f} M MACs" if pd.notna(macs) else ""
        return f"trial {t}: val acc {rows.loc[t, 'val_acc']:.4f}{cost}"

    pick = left.selectbox("Trial", list(rows.index), key="retrain_trial", format_func=label)
    parent = exp.get("config") or {}
    epochs = mid.number_input("Final epochs", value=int(parent.get("final_epochs") or 30), step=1, key="retrain_epochs")
    if right.button("Queue", key="retrain_queue"):
        source = f"experiment {exp['id']}, trial {int(pick)}"
        name = f"{exp.get('name') or exp['strategy']} · trial {int(pick)}"
        genotype = str(rows.loc[pick, "genotype"])
        queue_experiment(lambda: retrain_config(parent, genotype, source, int(epochs), name=name), "retrained")
    show_queued("retrained", "Watch #{id}")
