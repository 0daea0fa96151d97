"""Compare: two runs (of two releases, or repeats of one) side by side: metric deltas, the δ
distributions overlaid, and which engine settings took effect differently."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, tables, ui
from dashboard.escape import visible
from dashboard.state import PageState
from dashboard.trend import version_order
from monitor.store.views import RunDetail, RunSummary

RUN_CHOICES = 500
ALL = "all probes"

ctx = ui.context()
state = PageState("compare")
st.title("Compare two runs")
ui.require_runs(ctx)

runs = ui.read(lambda: data.runs(ctx.url, limit=RUN_CHOICES))
runs.sort(key=lambda r: (r.package, version_order(r.version), r.id))
by_id = {run.id: run for run in runs}
ids = list(by_id)


def _label(run_id: int) -> str:
    run = by_id[run_id]
    return visible(f"{run.release} · run {run.id} · {run.status}")


def _defaults(runs: list[RunSummary]) -> tuple[int, int]:
    """b: the newest succeeded run; a: the newest succeeded run of the highest release below
    it (same suite config preferred), else the run before it."""
    done = [run for run in runs if run.status == "succeeded"] or runs
    newest = max(done, key=lambda r: r.id)
    earlier = [
        run
        for run in done
        if run.package == newest.package
        and version_order(run.version) < version_order(newest.version)
    ]
    preferred = [run for run in earlier if run.config_hash == newest.config_hash] or earlier
    if preferred:
        return max(preferred, key=lambda r: (version_order(r.version), r.id)).id, newest.id
    others = [run.id for run in runs if run.id != newest.id]
    return (max(others) if others else newest.id), newest.id


def _has_trace(detail: RunDetail, label: str) -> bool:
    arm = detail.arm(*label.split("/", 1))
    return arm is not None and arm.trace_tokens > 0


default_a, default_b = _defaults(runs)
left, right = st.columns(2)
a = left.selectbox("Run a (before)", ids, format_func=_label, key=state.pick("a", ids, default_a))
b = right.selectbox("Run b (after)", ids, format_func=_label, key=state.pick("b", ids, default_b))
state.keep("a", a)
state.keep("b", b)
if a == b:
    st.info("Choose two different runs.")
    state.publish()
    st.stop()

comparison = ui.read(lambda: data.compare_runs(ctx.url, a, b), "comparing the runs")
names = (f"a: {comparison.release_a} (run {a})", f"b: {comparison.release_b} (run {b})")
if not comparison.comparable:
    st.warning(
        "The two runs were asked to do different things (suite configs differ, see below): "
        "their numbers are not strictly comparable."
    )

st.subheader("Defaults that changed")
defaults = tables.changed_defaults(comparison)
if defaults:
    st.caption("Effective engine settings that changed the same way in every arm of both runs.")
    ui.table(defaults, hide_index=True)
else:
    st.caption("No effective setting changed across every arm.")

st.subheader("Metric deltas (b − a)")
probes = [ALL, *sorted({arm.probe for arm in comparison.arms})]
left, right = st.columns(2)
probe = left.selectbox("Probe", probes, format_func=visible, key=state.pick("probe", probes, ALL))
metric = right.selectbox(
    "Metric to chart",
    tables.KEY_METRICS,
    key=state.pick("metric", tables.KEY_METRICS, tables.KEY_METRICS[0]),
)
state.keep("probe", None if probe == ALL else probe)
state.keep("metric", metric)
rows = tables.metric_delta_rows(
    comparison, ctx.settings.tolerances, probe=None if probe == ALL else probe
)
if rows:
    st.altair_chart(charts.metric_comparison(rows, metric, names), width="stretch", key="metrics")
    ui.table(
        rows,
        hide_index=True,
        column_config={
            name: st.column_config.NumberColumn(format="%.4g") for name in ("a", "b", "b − a")
        },
    )
else:
    st.info("Neither run has metrics for this choice.")

st.subheader("δ distributions")
shared = [
    f"{arm.probe}/{arm.arm}"
    for arm in comparison.arms
    if arm.in_a and arm.in_b and (probe == ALL or arm.probe == probe)
]
detail_a = ui.read(lambda: data.run_detail(ctx.url, a))
detail_b = ui.read(lambda: data.run_detail(ctx.url, b))
traced = [label for label in shared if _has_trace(detail_a, label) and _has_trace(detail_b, label)]
if traced:
    arm_label = st.selectbox(
        "Arm", traced, format_func=visible, key=state.pick("arm", traced, traced[0])
    )
    state.keep("arm", arm_label)
    arm_probe, arm_name = arm_label.split("/", 1)
    with st.spinner("reading tokens"):
        trace_a = ui.read(lambda: data.arm_trace(ctx.url, a, arm_probe, arm_name))
        trace_b = ui.read(lambda: data.arm_trace(ctx.url, b, arm_probe, arm_name))
    st.altair_chart(
        charts.delta_histogram({names[0]: trace_a.delta, names[1]: trace_b.delta}),
        width="stretch",
        key="deltas",
    )
else:
    st.info("The two runs share no arm with a token trace.")

st.subheader("Effective config per arm")
diff = tables.effective_config_diff_rows(comparison)
if diff:
    ui.table(diff, hide_index=True)
else:
    st.caption("Every shared arm's effective engine config is the same in both runs.")
setup = tables.run_config_diff_rows(comparison)
st.subheader("Suite config and environment")
if setup:
    ui.table(setup, hide_index=True)
else:
    st.caption("Same suite config and environment.")
state.publish()
