"""Overview: every experiment with status, progress and results; cancel queued or running ones."""

from __future__ import annotations

import streamlit as st

from dashboard.common import PAGES, bootstrap, experiment_label, guarded, no_experiments_yet, worker_hint
from nas_core import viz
from storage import repo

bootstrap("Overview")  # first: this page may be the first request after a server start

COLUMNS = {
    "id": st.column_config.NumberColumn("id", format="%d", width="small"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
    "state": st.column_config.TextColumn(width="medium"),
    "name": st.column_config.TextColumn(width="small"),
    "accuracy (%)": st.column_config.NumberColumn(format="%.2f"),
    "MACs (M)": st.column_config.NumberColumn(format="%.2f"),
    "latency (ms)": st.column_config.NumberColumn(format="%.2f"),
    "started": st.column_config.DatetimeColumn("started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
}


@guarded
def _cancel(exp_id: int) -> None:
    """Runs before the rerun that the click starts, so the table below already shows the new state."""
    done = repo.request_cancel(exp_id)
    st.toast(f"Cancel requested for #{exp_id}" if done else f"#{exp_id} had already finished")


@st.fragment(run_every=3)
@guarded
def experiments() -> None:
    exps = repo.list_experiments()
    if exps.empty:
        no_experiments_yet()
        return
    st.dataframe(viz.experiments_table(exps), hide_index=True, column_config=COLUMNS, key="experiments")

    active = exps[exps["status"].isin(["queued", "running"])]
    if not active.empty:
        st.subheader("Active")
        if (active["status"] == "queued").any():
            worker_hint()
        for row in active.to_dict("records"):
            label, cancel, monitor = st.columns([5, 1, 2], vertical_alignment="center")
            label.write(experiment_label(row))
            cancel.button("Cancel", key=f"cancel_{row['id']}", on_click=_cancel, args=(int(row["id"]),))
            monitor.page_link(PAGES["monitor"], label="Monitor", query_params={"id": str(row["id"])})

    ids = [int(i) for i in exps["id"]]
    labels = {int(r["id"]): experiment_label(r) for r in exps.to_dict("records")}
    pick, link = st.columns([5, 3], vertical_alignment="bottom")
    chosen = pick.selectbox("Open an experiment", ids, format_func=lambda i: labels[i], key="open_experiment")
    link.page_link(PAGES["monitor"], label=f"Monitor #{chosen}", query_params={"id": str(chosen)},
                   icon=":material/monitoring:")  # fmt: skip


st.title("Experiments")
st.caption("Refreshes every few seconds. Jobs run in a background worker: closing this tab does not stop them.")
experiments()
