"""NAS Dashboard: `streamlit run app.py`. Launch, watch, compare and export neural architecture searches.

This file wires the page scripts (pages/) together with ``st.navigation``. What every run needs first (wide
layout, a migrated database, a worker when none is alive) each page does itself, first thing, with
``dashboard.common.bootstrap``: a page's URL can be the first request after a server start, and run without
this file.
"""

from __future__ import annotations

import streamlit as st

from dashboard.common import PAGES

ICONS = {"launch": "rocket_launch", "overview": "list", "monitor": "monitoring", "compare": "scatter_plot",
         "export": "download"}  # fmt: skip

pages = [
    st.Page(path, title=name.capitalize(), icon=f":material/{ICONS[name]}:", default=name == "launch")
    for name, path in PAGES.items()
]
st.navigation(pages).run()
