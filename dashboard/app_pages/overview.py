"""Overview: the newest release of each engine package, every tested release × probe verdict
(each cell links to its run; releases only discovered behind a switch), incidents and the most
recent runs."""

from __future__ import annotations

import streamlit as st

from dashboard import data, tables, ui
from dashboard.escape import code, visible
from dashboard.incident_tables import INCIDENT_LINKS, incident_rows
from dashboard.progress_panel import progress_panel
from dashboard.state import PageState

RECENT_RUNS = 15
ALL = "all packages"

ctx = ui.context()
state = PageState("overview")
st.title("vLLM parity")
st.caption(f"Database {code(ctx.shown_url)}")
progress_panel(ctx, compact=True)
ui.require_runs(ctx)

releases = ui.read(lambda: data.releases(ctx.url))
st.subheader("Newest releases")
ui.table(
    [
        {
            "package": release.package,
            "version": release.version,
            "published": release.published_at.strftime("%Y-%m-%d") if release.published_at else "",
            "runs": release.n_runs,
            "newest run": release.latest_status or "no run",
            "installable": {True: "yes", False: "no", None: "unknown"}[release.installable],
            "install error": release.install_error or "",
        }
        for release in tables.newest_per_package(releases)
    ],
    hide_index=True,
)

st.subheader("Status by release and probe")
packages = sorted({release.package for release in releases})
package: str | None = None
if len(packages) > 1:
    choice = st.selectbox(
        "Engine package",
        [ALL, *packages],
        format_func=visible,
        key=state.pick("package", [ALL, *packages], ALL),
    )
    package = None if choice == ALL else choice
    state.keep("package", package)
matrix = ui.read(lambda: data.status_matrix(ctx.url, package, ctx.judged_metrics))
if matrix.probes:
    counts = tables.release_counts(matrix.releases)
    show_all = False
    if counts.untested:  # releases only discovered (no run) are rows of dots: hidden unless asked
        show_all = st.toggle(counts.toggle_label(), key=state.pick("all", [False, True], False))
        state.keep("all", show_all or None)
    st.caption(
        "Each cell: the probe's verdict in the newest succeeded run of that release (fail when "
        "any of its arms breaks a tolerance gate). Click a cell to open the run."
    )
    shown = tables.shown_releases(matrix, show_all=show_all)
    st.html(tables.matrix_html(shown, ctx.settings.tolerances))
else:
    st.warning("No run has succeeded yet, so no verdict to show. See the runs below.")

st.subheader("Open incidents")
incidents = ui.read(lambda: data.incidents(ctx.url, package=package, open_only=True))
if incidents:
    st.caption("New or under investigation, not refuted by their confirmation run.")
    ui.table(incident_rows(incidents), hide_index=True, column_config=INCIDENT_LINKS)
else:
    st.success("No open incidents.")

st.subheader("Recent runs")
recent = ui.read(
    lambda: data.runs(ctx.url, package=package, limit=RECENT_RUNS, metrics=ctx.judged_metrics)
)
ui.table(
    tables.run_rows(recent, ctx.settings.tolerances),
    hide_index=True,
    column_config={
        "run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)"),
    },
)
state.publish()
