"""NAS Dashboard: `streamlit run app.py`. Launch, watch, compare and export neural architecture searches.

This file wires the pages (views/) together and does what every run needs first: wide layout, a migrated
database, and a worker when none is alive.
"""

from __future__ import annotations

import streamlit as st

from views.common import PAGES, ensure_worker, init_storage

ICONS = {"launch": "rocket_launch", "overview": "list", "monitor": "monitoring", "compare": "scatter_plot",
         "export": "download"}  # fmt: skip

st.set_page_config(page_title="NAS Dashboard", page_icon=":material/hub:", layout="wide")
init_storage()
if "worker_checked" not in st.session_state:
    # Once per browser session: queued jobs need a worker even if the one that ran them has stopped.
    st.session_state["worker_checked"] = True
    warning = ensure_worker()
    if warning:
        st.warning(warning)

pages = [
    st.Page(path, title=name.capitalize(), icon=f":material/{ICONS[name]}:", default=name == "launch")
    for name, path in PAGES.items()
]
st.navigation(pages).run()
