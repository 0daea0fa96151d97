"""Upgrade: can we move from one release to another, and what must we set? The same verdict,
recipe and evidence as `parity upgrade` (monitor.advice), with the from/to choice in the URL so
a verdict can be shared as a link, and the pull-request comment ready to copy."""

from __future__ import annotations

import json

import streamlit as st

from dashboard import data, ui
from dashboard.escape import md, visible
from dashboard.state import PageState
from dashboard.trend import version_order
from monitor.advice import AdviceError, upgrade
from monitor.detection.errors import DetectionError
from monitor.upgrade import Upgrade, floors, markdown

ctx = ui.context()
state = PageState("upgrade")
st.title("Upgrade")
ui.require_runs(ctx)

releases = ui.read(lambda: data.releases(ctx.url))
measured = [r for r in releases if r.n_runs > 0]
packages = sorted({r.package for r in measured})
if not packages:
    ui.stop("No release has a run yet.")
default_package = (
    ctx.settings.engine_package if ctx.settings.engine_package in packages else packages[0]
)
package = st.selectbox(
    "Engine package",
    packages,
    format_func=visible,
    key=state.pick("package", packages, default_package),
)
state.keep("package", package)
versions = sorted({r.version for r in measured if r.package == package}, key=version_order)
if len(versions) < 2:
    st.info(f"{md(package)} has runs of one release only: an upgrade needs two.")
    state.publish()
    st.stop()
left, right = st.columns(2)
old = left.selectbox(
    "From (the release in use)", versions, key=state.pick("from", versions, versions[-2])
)
new = right.selectbox(
    "To (the release to move to)", versions, key=state.pick("to", versions, versions[-1])
)
state.keep("from", old)
state.keep("to", new)
if old == new:
    st.info("Choose two different releases.")
    state.publish()
    st.stop()


def _table_or(rows: list[dict[str, object]], empty: str) -> None:
    """The rows as a table, or one caption saying there are none."""
    if rows:
        ui.table(rows, hide_index=True)
    else:
        st.caption(empty)


def _advice() -> Upgrade | str:
    """The upgrade, or the one line saying why there is none."""
    try:
        with data.store(ctx.url).reading() as session:
            return upgrade(session, package, old, new, ctx.settings)
    except (AdviceError, DetectionError) as exc:
        return str(exc)


advice = ui.read(_advice, "judging the upgrade")
if isinstance(advice, str):
    st.warning(md(advice))
    state.publish()
    st.stop()

headline = f"{advice.package} {advice.old} → {advice.new}: **{md(advice.verdict)}**"
shown_verdict = {"safe as is": st.success, "safe with these recipe changes": st.warning}
shown_verdict.get(advice.verdict, st.error)(
    f"{headline} (exit code {advice.exit_code}; runs {advice.old_run} → {advice.new_run})"
)
for reason in advice.reasons:
    st.markdown(f"- {md(reason)}")

st.subheader("Recipe of the new release")
st.caption(md(advice.verified.text))
if advice.unmeasured:
    st.warning(f"Not measured, so not in the recipe: {md(', '.join(advice.unmeasured))}")
_table_or(
    [
        {
            "kind": line.kind,
            "key": line.key,
            "value": json.dumps(line.value),
            "why": line.why,
            "evidence": "; ".join(item.text() for item in line.evidence),
        }
        for line in advice.new_recipe.lines
    ],
    "Nothing to set among the probes measured."
    if advice.unmeasured
    else "Nothing to set: the defaults are at parity.",
)

st.subheader("Recipe changes")
_table_or(
    [
        {"line": c.key, advice.old: json.dumps(c.old), advice.new: json.dumps(c.new)}
        for c in advice.recipe_changes
    ],
    "The recipe is the same.",
)

st.subheader("Moved beyond the noise floor")
_table_or(
    [
        {
            "series": f.series,
            "direction": f.direction,
            "from": f.baseline_value,
            "to": f.candidate_value,
            "floors": floors(f) if f.effect_in_floors is not None else None,
            "severity": f.severity,
        }
        for f in advice.moved
    ],
    "No series moved beyond its noise floor.",
)

st.subheader("Defaults that changed")
_table_or(
    [
        {"setting": c.key, advice.old: str(c.old), advice.new: str(c.new)}
        for c in advice.config_changes
    ],
    "The default engine's effective settings are the same.",
)

st.subheader("Knobs")
st.markdown(f"- added: {md(', '.join(advice.knobs_added) or 'none')}")
st.markdown(f"- removed: {md(', '.join(advice.knobs_removed) or 'none')}")
st.markdown(f"Open incidents of {md(advice.new)}: {md(', '.join(advice.open_incidents) or 'none')}")

with st.expander("Pull-request comment (markdown)"):
    st.code(markdown(advice), language="markdown")
state.publish()
