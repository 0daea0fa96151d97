"""The parity dashboard: `streamlit run dashboard/app.py`. Pages: overview, trends over
releases, one run in detail, two runs compared, the run queue, incidents, the
upgrade verdict between two releases. Reads the results store named by
the PARITY_* settings. The page scripts live in `app_pages/`, not `pages/`: Streamlit would
serve a `pages/` folder as its older file-based navigation to a fresh server's first visitor,
bypassing this entry point. A page that fails unexpectedly shows one line; the traceback goes
to the dashboard's log, never to the visitor."""

from __future__ import annotations

from pathlib import Path

import altair  # noqa: F401
import pandas  # noqa: F401
import streamlit as st

from dashboard import ui

# pandas and altair are imported here, before any page runs: sessions run in threads, so a
# page must never see either half-imported by another session.

PAGES = Path(__file__).parent / "app_pages"
FAILED = (
    "This page could not be drawn: an unexpected error, logged on the dashboard's server. "
    "Reload the page or open another one."
)

st.set_page_config(page_title="vLLM parity", page_icon=":material/balance:", layout="wide")
page = st.navigation(
    [
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page(PAGES / "trends.py", title="Trends", icon=":material/show_chart:"),
        st.Page(PAGES / "run_detail.py", title="Run detail", icon=":material/biotech:"),
        st.Page(PAGES / "compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/work_history:"),
        st.Page(
            PAGES / "incidents.py", title="Incidents", icon=":material/notification_important:"
        ),
        st.Page(PAGES / "upgrade.py", title="Upgrade", icon=":material/upgrade:"),
    ]
)
ui.setup_logging()
try:
    page.run()
except Exception:
    ui.LOG.exception("page %r failed (query %r)", page.title, st.query_params.to_dict())
    st.error(FAILED)
