"""Jobs: every run and where it stands in the queue, and a form to request a run of a release
(signed-in users only: OIDC login, or the shared token when no login is configured)."""

from __future__ import annotations

from collections import Counter

import streamlit as st

from dashboard import auth, data, tables, ui
from dashboard.run_request import FORM_MODELS, RequestError, check_request
from dashboard.state import PageState
from monitor.engines import ENGINE_PACKAGES
from monitor.runners.base import RUNNER_KINDS, RunOptions
from monitor.store.errors import StoreError
from monitor.store.jobs import queue_run
from monitor.store.models import RunStatus
from monitor.store.views import JobView
from monitor.suite.probes import PROBE_NAMES

SHOWN_JOBS = 200
DTYPES = ("float32", "bfloat16")
DEFAULTS = RunOptions()
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
    """The request form; what it accepts is checked (token, release, options) before the store
    sees any of it."""
    packages = list(ENGINE_PACKAGES)
    configured = ctx.settings.engine_package
    with st.form("request", clear_on_submit=False):
        left, right = st.columns(2)
        package = left.selectbox(
            "Engine package",
            packages,
            index=packages.index(configured) if configured in packages else 0,
            key="request:package",
        )
        version = right.text_input(
            "Version", placeholder="e.g. 0.32.0", max_chars=64, key="request:version"
        )
        model = left.selectbox("Model", FORM_MODELS, key="request:model")
        runner = right.selectbox("Runner", RUNNER_KINDS, key="request:runner")
        probes = st.multiselect(
            "Probes", PROBE_NAMES, default=list(PROBE_NAMES), key="request:probes"
        )
        one, two, three, four = st.columns(4)
        max_tokens = one.number_input(
            "Max tokens", min_value=1, max_value=2048, value=DEFAULTS.max_tokens, key="request:max"
        )
        temperature = two.number_input(
            "Temperature", min_value=0.01, max_value=10.0, value=DEFAULTS.temperature
        )
        top_p = three.number_input("Top-p", min_value=0.01, max_value=1.0, value=DEFAULTS.top_p)
        top_k = four.number_input("Top-k", min_value=-1, value=DEFAULTS.top_k)
        seed = one.number_input("Seed", min_value=0, value=DEFAULTS.seed)
        engine_dtype = two.selectbox("Engine dtype", DTYPES)
        trainer_dtype = three.selectbox("Trainer dtype", DTYPES)
        name, token = auth.identity_inputs(access, "request", left, right)
        submitted = st.form_submit_button("Queue run")
    if not submitted:
        return
    if auth.token_refused(access, token, ctx.settings.dashboard_token):
        st.error("Wrong access token: nothing was queued.")
        return
    options = {
        "model": model,
        "probes": probes,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "seed": seed,
        "engine_dtype": engine_dtype,
        "trainer_dtype": trainer_dtype,
    }
    try:
        request = check_request(package, version, runner, options, name)
        with data.store(ctx.url).writing() as session:
            run_id = queue_run(
                session,
                request.package,
                request.version,
                request.options.model_dump(mode="json"),
                request.runner,
                request.requested_by,
            )
    except (RequestError, StoreError) as exc:
        st.error(f"Not queued: {exc}")
        return
    data.clear()
    st.session_state[QUEUED] = (run_id, request.release, request.requested_by)
    st.rerun()


def _show_queued() -> None:
    """Confirm the run queued by the previous submit (shown after the rerun that lists it)."""
    queued = st.session_state.pop(QUEUED, None)
    if queued is not None:
        run_id, release, requested_by = queued
        st.success(f"Queued run {run_id} of {release} for {requested_by}.")
        st.page_link(
            "app_pages/run_detail.py", label=f"Open run {run_id}", query_params={"run": run_id}
        )


ctx = ui.context()
state = PageState("jobs")
st.title("Runs and requests")
statuses = [status.value for status in RunStatus]
chosen = st.multiselect("Status", statuses, key=state.pick_many("status", statuses, []))
state.keep("status", chosen)
jobs = ui.read(lambda: data.jobs(ctx.url, tuple(chosen), SHOWN_JOBS))
if jobs:
    counts = Counter(job.status for job in jobs)
    st.caption(" · ".join(f"{status}: {n}" for status, n in sorted(counts.items())))
    st.dataframe(
        _job_rows(jobs),
        hide_index=True,
        column_config={"run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)")},
    )
elif chosen:
    st.info(f"No run is {' or '.join(chosen)}.")
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
