"""Compare: Pareto fronts over the chosen experiments' architectures; select points to see them side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dashboard.common import PAGES, bootstrap, ensure_worker, experiment_label, guarded, no_experiments_yet, show_error
from nas_core import viz
from nas_core.proxies import INITS, PROXY_SPACES
from nas_core.spaces import get_space
from storage import repo

bootstrap("Compare")  # first: this page may be the first request after a server start

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
    if ids:
        _side_by_side(archs[archs["id"].isin(ids)])
    else:
        st.caption("Click a point, or draw a box or lasso on either chart, to compare architectures side by side.")
    _proxies(archs, exps)


def _queue_proxies(ids: list[int], settings: dict[str, object]) -> None:
    try:
        run_id = repo.create_proxy_run(ids, settings)
    except ValueError as exc:
        st.session_state["proxy_error"] = str(exc)
        return
    st.session_state.pop("proxy_error", None)
    warning = ensure_worker()
    st.toast(warning or f"Proxy run #{run_id} queued")


def _proxies(archs: pd.DataFrame, exps: pd.DataFrame) -> None:
    """Proxy-versus-accuracy scatter with rank correlations; compute missing proxies as a background run."""
    st.subheader("Training-free proxies against accuracy")
    st.caption("TE-NAS's proxies at initialisation: NTK condition number (lower should mean more trainable, so a "
               "good proxy correlates negatively with accuracy) and linear regions (higher, more expressive). "
               "Each architecture is scored on its own experiment's data set.")  # fmt: skip
    corr = viz.proxy_correlations(archs)
    if int(corr["n"].max()) > 0:
        st.plotly_chart(viz.proxy_scatter(archs), key="proxy_scatter")
        number = st.column_config.NumberColumn
        columns = {"kendall_tau": number("Kendall tau", format="%+.3f"),
                   "spearman_rho": number("Spearman rho", format="%+.3f")}  # fmt: skip
        st.dataframe(corr, hide_index=True, key="proxy_corr", column_config=columns)
    missing = viz.missing_proxies(archs, PROXY_SPACES)
    running = exps[(exps["kind"] == "proxies") & exps["status"].isin(["queued", "running"])]
    for row in running.to_dict("records"):
        st.info(f"Proxy run #{row['id']} is {row['status']} ({row['progress'] * 100:.0f} %).")
        st.page_link(PAGES["monitor"], label=f"Watch proxy run #{row['id']}", query_params={"id": str(row["id"])})
    if not missing:
        if int(corr["n"].max()) == 0:
            st.caption("None of these architectures is in a space the proxies support (NAS-Bench-201, DARTS).")
        return
    with st.form("proxy_form"):
        st.markdown(f"**{len(missing)} architecture(s)** of these experiments have no proxies yet.")
        cols = st.columns(5)
        settings = {
            "repeats": cols[0].number_input("repeats", 1, 20, 3, help="Inits and batches averaged (TE-NAS: 3)"),
            "ntk_batch": cols[1].number_input("NTK batch", 0, 512, 0, help="Samples in the NTK; 0 = TE-NAS's for the "
                                               "space (72 on NAS-Bench-201, 14 on DARTS)"),
            "region_samples": cols[2].number_input("region samples", 1, 10_000, 1000,
                                                   help="Inputs per linear-region count (TE-NAS: 1000)"),
            "init": cols[3].selectbox("init", INITS, help="Weight init of the proxy networks"),
            "workers": cols[4].number_input("workers", 1, 64, 1, help="Processes scoring an architecture's repeats "
                                            "at once (one core each; the same scores)"),
        }  # fmt: skip
        if st.form_submit_button("Compute proxies in the background", icon=":material/play_arrow:"):
            _queue_proxies(missing, {k: v if k == "init" else int(v) for k, v in settings.items()})
    if st.session_state.get("proxy_error"):
        st.error(f"Nothing was queued: {st.session_state['proxy_error']}")


main()
