"""Trends: one metric over releases for a probe, model and device; several arms overlaid, with
the tolerance line, the noise band of repeat runs and the change points."""

from __future__ import annotations

from functools import partial

import streamlit as st

from dashboard import charts, data, tables, ui
from dashboard.charts import Scale
from dashboard.escape import md, visible
from dashboard.state import PageState
from dashboard.trend import (
    BAND_MODES,
    BandMode,
    TrendLine,
    incident_markers,
    penalty_multiple,
    series_labels,
)
from monitor.gates import Gate, resolve_gates
from monitor.series import SeriesKey

PREFERRED_PROBE = "prefix_cache"
PREFERRED_METRIC = "k3"
SCALES: tuple[Scale, ...] = ("linear", "log")
BANDS: tuple[BandMode, ...] = ("minmax", "2sd")

ctx = ui.context()
state = PageState("trends")
st.title("Trends over releases")
ui.require_runs(ctx)

keys = ui.read(lambda: data.series_keys(ctx.url))
if not keys:
    st.info("No metric is stored yet: no run has succeeded. See the Jobs page.")
    st.stop()
names = {model.fingerprint: model.name for model in ui.read(lambda: data.models(ctx.url))}
packages = sorted({release.package for release in ui.read(lambda: data.releases(ctx.url))})


def _prefer(options: list[str], wanted: str) -> str:
    return wanted if wanted in options else options[0]


def _matching(**wanted: object) -> list[SeriesKey]:
    return [k for k in keys if all(getattr(k, name) == value for name, value in wanted.items())]


left, middle, right = st.columns(3)
probes = sorted({k.probe for k in keys})
probe = left.selectbox(
    "Probe",
    probes,
    format_func=visible,
    key=state.pick("probe", probes, _prefer(probes, PREFERRED_PROBE)),
)
metrics = sorted({k.metric for k in _matching(probe=probe)})
metric = middle.selectbox(
    "Metric",
    metrics,
    format_func=visible,
    key=state.pick("metric", metrics, _prefer(metrics, PREFERRED_METRIC)),
)
package = right.selectbox(
    "Engine package",
    packages,
    format_func=visible,
    key=state.pick("package", packages, packages[0]),
)
models = sorted({k.model for k in _matching(probe=probe, metric=metric)})
model = left.selectbox(
    "Model",
    models,
    key=state.pick("model", models, models[0]),
    format_func=lambda fingerprint: visible(f"{names.get(fingerprint, '?')} ({fingerprint})"),
)
devices = sorted({k.device for k in _matching(probe=probe, metric=metric, model=model)})
device = middle.selectbox(
    "Device", devices, format_func=visible, key=state.pick("device", devices, devices[0])
)
arms = sorted({k.arm for k in _matching(probe=probe, metric=metric, model=model, device=device)})
chosen_arms = right.multiselect(
    "Arms (overlaid)", arms, format_func=visible, key=state.pick_many("arm", arms, arms[:1])
)
scale = left.radio("Scale", SCALES, horizontal=True, key=state.pick("scale", SCALES, "linear"))
band_mode = middle.radio(
    "Noise band",
    BANDS,
    format_func=BAND_MODES.__getitem__,
    horizontal=True,
    key=state.pick("band", BANDS, "minmax"),
)
for param, value in (
    ("probe", probe),
    ("metric", metric),
    ("package", package),
    ("model", model),
    ("device", device),
    ("arm", chosen_arms),
    ("scale", scale),
    ("band", band_mode),
):
    state.keep(param, value)

if not chosen_arms:
    st.info("Choose at least one arm.")
    state.publish()
    st.stop()

shown = [
    key
    for arm in chosen_arms
    for key in _matching(probe=probe, metric=metric, model=model, device=device, arm=arm)
]
lines: list[TrendLine] = []
with st.spinner("reading the series"):
    for key, label in zip(shown, series_labels(shown), strict=True):
        line = ui.read(partial(data.trend, ctx.url, key.hash, package, label, band_mode))
        if line.versions:
            lines.append(line)

if not lines:
    st.info(md(f"No succeeded {package} run carries {probe}/{metric} for this model and device."))
    state.publish()
    st.stop()

gates: dict[tuple[float, bool], tuple[str, Gate]] = {}
for line in lines:
    for gate in resolve_gates(probe, line.key.arm, ctx.settings.tolerances):
        if gate.metric == metric:
            gates.setdefault((gate.limit, gate.absolute), (line.label, gate))
gate_lines = [
    (f"{metric} ≤ {gate.limit:g}" + (f" ({label})" if len(gates) > 1 else ""), gate)
    for label, gate in gates.values()
]
marked = ui.read(lambda: data.incident_series(ctx.url, package))
markers = [marker for line in lines for marker in incident_markers(line, marked)]
figure = charts.trend_figure(
    lines,
    metric,
    gates=gate_lines,
    incidents=markers,
    scale=scale,
    title=f"{probe} · {metric} · {names.get(model, model)} on {device}",
)
st.altair_chart(figure, width="stretch", key="trend")

notes = []
for line in lines:
    floor = "no noise floor" if line.floor is None else f"noise floor {ui.number(line.floor)}"
    points = ", ".join(line.change_points) or "none"
    cost = penalty_multiple(len(line.versions))
    notes.append(
        f"**{md(line.label)}**: {len(line.versions)} releases, {len(line.bands)} with repeat "
        f"runs; {md(floor)} ({md(line.floor_source)}); change points at: {md(points)} (a new "
        f"level costs {cost:.1f} noise floors)"
    )
if not gate_lines:
    notes.append(f"No tolerance gate applies to {md(metric)}.")
notes.append(
    f"Incidents marked (×): {md(', '.join(sorted({m.text for m in markers})))}; see the "
    "Incidents page."
    if markers
    else "Incidents: none on this series."
)
st.markdown("\n".join(f"- {note}" for note in notes))

with st.expander("Values"):
    ui.table(
        [
            {
                "series": line.label,
                "release": version,
                metric: value,
                "run": tables.run_link(run_id),
            }
            for line in lines
            for version, value, run_id in zip(line.versions, line.values, line.run_ids, strict=True)
        ],
        hide_index=True,
        column_config={"run": st.column_config.LinkColumn("run", display_text=r"run=(\d+)")},
    )
state.publish()
