"""NAS Dashboard: `streamlit run app.py`. Launch, watch, compare and export neural architecture searches.

This file wires the page scripts (pages/) together with ``st.navigation``; what every run needs first (wide
layout, a migrated database, a worker when none is alive) is ``dashboard.common.bootstrap``, which every page
runs too, so that a page's URL also works as the first request after a server start.
"""

from __future__ import annotations

import streamlit as st

from dashboard.common import PAGES, bootstrap

ICONS = {"launch": "rocket_launch", "overview": "list", "monitor": "monitoring", "compare": "scatter_plot",
         "export": "download"}  # fmt: skip

bootstrap()
pages = [
    st.Page(path, title=name.capitalize(), icon=f":material/{ICONS[name]}:", default=name == "launch")
    for name, path in PAGES.items()
]
st.navigation(pages).run()
