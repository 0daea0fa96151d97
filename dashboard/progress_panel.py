"""Running runs' live progress (stage, engine i of N, prompts generated and sequences scored,
elapsed, what is left), read straight from the store and refreshed on its own every few
seconds; the whole page reruns when a run starts or ends, so the tables around it follow."""

from __future__ import annotations

import streamlit as st

from dashboard import data, ui
from dashboard.escape import md
from monitor.progress import duration, summary
from monitor.store.errors import StoreError
from monitor.store.progress import RunningRun, running_runs

REFRESH_S = 3.0
SEEN = "progress:running"


def _running(url: str) -> list[RunningRun]:
    with data.store(url).reading() as session:
        return running_runs(session)


def _title(run: RunningRun) -> str:
    asked = f", requested by {run.requested_by}" if run.requested_by else ""
    return md(f"Run {run.run_id}: {run.release} (attempt {run.attempt}{asked})")


def _detail(run: RunningRun, compact: bool) -> None:
    progress = run.progress
    if progress is None:
        st.progress(0.0, text=f"{_title(run)}: starting")
        return
    text = md(summary(progress))
    st.progress(progress.fraction() or 0.0, text=f"{_title(run)}: {text}" if compact else text)
    if compact:
        return
    engine = f"{max(progress.engine, 1)} of {progress.engines}" if progress.engines else "-"
    cells = st.columns(6)
    cells[0].metric("Stage", md(progress.stage))
    cells[1].metric("Engine", engine)
    cells[2].metric("Prompts generated", progress.prompts_generated)
    cells[3].metric("Sequences scored", progress.sequences_scored)
    cells[4].metric("Elapsed", duration(progress.elapsed_s()))
    cells[5].metric("Left (estimate)", duration(progress.left_s()))
    if progress.step:
        st.caption(f"Step: {md(progress.step)}")


def progress_panel(ctx: ui.Context, *, compact: bool = False) -> None:
    """The running runs with their progress; `compact` (the Overview) gives one bar per run and
    nothing at all when nothing runs."""

    @st.fragment(run_every=REFRESH_S)
    def panel() -> None:
        try:
            running = _running(ctx.url)
        except StoreError as exc:
            st.warning(f"Progress unavailable: {md(exc)}")
            return
        ids = [run.run_id for run in running]
        seen = st.session_state.get(SEEN)
        st.session_state[SEEN] = ids
        if seen is not None and seen != ids:
            data.clear()
            st.rerun()
        if running and compact:
            st.markdown("**Running now**")
        elif running:
            st.subheader("Running now")
        elif not compact:
            st.caption("Nothing is running now.")
        for run in running:
            if not compact:
                st.markdown(f"**{_title(run)}**")
            _detail(run, compact)

    panel()
