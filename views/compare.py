"""Compare: Pareto fronts over the chosen experiments' architectures; select points to see them side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from nas_core import viz
from nas_core.spaces import get_space
from storage import repo
from views.common import PAGES, experiment_label, guarded, no_experiments_yet, show_error

SELECT = ("points", "box", "lasso")
COLOR_BY = {"experiment_name": "experiment", "strategy": "strategy"}


def _pareto_chart(container: DeltaGenerator, archs: pd.DataFrame, x: str, color_by: str) -> list[int]:
    fig = viz.pareto_2d(archs, x=x, color_by=color_by)
    event = container.plotly_chart(fig, on_select="rerun", selection_mode=SELECT, key=f"pareto_{x}")
    return viz.selected_ids(event.selection.points if event else [], fig)


def _side_by_side(selected: pd.DataFrame) -> None:
    st.subheader(f"Selected architectures ({len(selected)})")
    st.dataframe(viz.architectures_table(selected), hide_index=True)
    per_row = 3
    records = selected.to_dict("records")
    for start in range(0, len(records), per_row):
        for col, arch in zip(st.columns(per_row), records[start : start + per_row]):
            with col:
                st.markdown(f"**#{arch['id']}** · {viz.format_number(arch['accuracy'], '.2f', ' %', 100.0)} · "
                            f"{viz.format_number(arch['macs'], '.2f', ' M MACs', 1e-6)}")  # fmt: skip
                try:
                    st.graphviz_chart(get_space(arch["space"]).to_dot(arch["genotype"]))
                except Exception as exc:  # noqa: BLE001
                    show_error("Cannot draw this genotype", exc)
                st.page_link(PAGES["export"], label="Export", icon=":material/download:",
                             query_params={"arch": str(arch["id"])})  # fmt: skip


@guarded
def main() -> None:
    st.title("Compare architectures")
    exps = repo.list_experiments()
    if exps.empty:
        no_experiments_yet()
        return
    all_archs = repo.architectures_df()
    have_archs = set(all_archs["experiment_id"].astype(int))
    with_archs = [int(i) for i in exps["id"] if int(i) in have_archs]
    labels = {int(r["id"]): experiment_label(r) for r in exps.to_dict("records")}
    chosen = st.multiselect("Experiments", with_archs, default=with_archs[:10], format_func=lambda i: labels[i],
                            placeholder="Experiments with architectures")  # fmt: skip
    if not chosen:
        st.info("Choose experiments that have produced architectures (finished ones have at least one).")
        return
    archs = all_archs[all_archs["experiment_id"].isin(chosen)]
    controls = st.columns(2)
    kinds = sorted(k for k in archs["accuracy_kind"].dropna().unique() if k)
    if len(kinds) > 1:
        kind = controls[0].radio("Accuracy", kinds, index=kinds.index("test") if "test" in kinds else 0,
                                 horizontal=True, help="Only compare accuracies measured the same way.")  # fmt: skip
        archs = archs[archs["accuracy_kind"] == kind]
    color_by = controls[1].radio("Colour by", list(COLOR_BY), format_func=COLOR_BY.get, horizontal=True)

    left, right = st.columns(2)
    picked = _pareto_chart(left, archs, "macs", color_by) + _pareto_chart(right, archs, "latency_ms", color_by)
    st.plotly_chart(viz.pareto_3d(archs, color_by=color_by), key="pareto_3d")

    ids = list(dict.fromkeys(picked))
    if not ids:
        st.caption("Click a point, or draw a box or lasso on either chart, to compare architectures side by side.")
        return
    _side_by_side(archs[archs["id"].isin(ids)])


main()
