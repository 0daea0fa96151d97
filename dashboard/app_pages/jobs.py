"""Jobs: the running runs' live progress, every run and where it stands in the queue, and a form
to request a run of a release (signed-in users only: OIDC login, or the shared token when no
login is configured)."""

from __future__ import annotations

from collections import Counter

import streamlit as st

from dashboard import auth, data, tables, ui
from dashboard.escape import md
from dashboard.progress_panel import progress_panel
from dashboard.request_form import ask_options
from dashboard.run_request import check_form_request
from dashboard.state import PageState
from monitor.config import RUNNER_KINDS
from monitor.engines import ENGINE_PACKAGES
from monitor.requests import RequestError, queue_request
from monitor.store.errors import StoreError
from monitor.store.models import RunStatus
from monitor.store.views import JobView

SHOWN_JOBS = 200
QUEUED = "jobs:queued"


def _when(job: JobView, name: str) -> str:
    moment = getattr(job, name)
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _job_rows(jobs: list[JobView]) -> list[dict[str, object]]:
    return [
        {
            "run": tables.run_link(job.id),
            "release": job.release,
            "status": job.status,
            "runner": job.runner,
            "attempt": job.attempt,
            "requested by": job.requested_by or "",
            "queued": _when(job, "queued_at"),
            "not before": _when(job, "not_before"),
            "started": _when(job, "started_at"),
            "finished": _when(job, "finished_at"),
            "lease until": _when(job, "lease_expires_at"),
            "error": job.error or "",
        }
        for job in jobs
    ]


def _request_form(ctx: ui.Context, access: auth.Access) -> None:
    """The request form, one widget per suite option; what it accepts is checked (token,
    release, options, requester) before the store sees any of it."""
    packages = list(ENGINE_PACKAGES)
    configured = ctx.settings.engine_package
    form = st.form("request", clear_on_submit=False)
    with form:
        first, second, third = st.columns(3)
        package = first.selectbox(
            "Engine package",
            packages,
            index=packages.index(configured) if configured in packages else 0,
            key="request:package",
        )
        version = second.text_input(
            "Version", placeholder="e.g. 0.32.0", max_chars=64, key="request:version"
        )
        runner = third.selectbox("Runner", RUNNER_KINDS, key="request:runner")
        options = ask_options(form, st.columns(4))
        name, token = auth.identity_inputs(access, "request", *st.columns(2))
        submitted = st.form_submit_button("Queue run")
    if not submitted:
        return
    if auth.token_refused(
        access, token, ctx.settings.dashboard_token, "run request", "nothing was queued.", name
    ):
        return
    try:
        request = check_form_request(package, version, runner, options, name)
        with data.store(ctx.url).writing() as session:
            run_id = queue_request(session, request, ctx.settings)
    except (RequestError, StoreError) as exc:
        st.error(f"Not queued: {md(exc)}")
        return
    data.clear()
    st.session_state[QUEUED] = (run_id, str(request.release), request.requested_by)
    st.rerun()


def _show_queued() -> None:
    """Confirm the run queued by the previous submit (shown after the rerun that lists it)."""
    queued = st.session_state.pop(QUEUED, None)
    if queued is not None:
        run_id, release, requested_by = queued
        st.success(f"Queued run {run_id} of {md(release)} for {md(requested_by)}.")
        st.page_link(
            "app_pages/run_detail.py", label=f"Open run {run_id}", query_params={"run": run_id}
        )


ctx = ui.context()
state = PageState("jobs")
st.title("Runs and requests")
progress_panel(ctx)
statuses = [status.value for status in RunStatus]
chosen = st.multiselect("Status", statuses, key=state.pick_many("status", statuses, []))
state.keep("status", chosen)
jobs = ui.read(lambda: data.jobs(ctx.url, tuple(chosen), SHOWN_JOBS))
if jobs:
    counts = Counter(job.status for job in jobs)
    st.caption(" · ".join(f"{md(status)}: {n}" for status, n in sorted(counts.items())))
    ui.table(
        _job_rows(jobs),
        hide_index=True,
        column_config={"run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)")},
    )
elif chosen:
    st.info(f"No run is {md(' or '.join(chosen))}.")
else:
    st.info("No run is stored or queued yet.")
    st.markdown(ui.EMPTY_HELP)

st.subheader("Request a run")
access = auth.signed_in(ctx.settings.dashboard_token, "Requesting runs")
if access is not None:
    st.caption(
        "The scheduler runs queued requests in order, people's requests first. The release "
        "must be known to the store (discovered or run before)."
    )
    _show_queued()
    _request_form(ctx, access)
state.publish()
