"""Vega-Lite (Altair) charts of the dashboard, built from plain data (views, numpy arrays, trend
lines). Pure: no store, no Streamlit, so tests can call them and check the charts' data. Vega-Lite
draws text as text (no markup), so stored labels go in as they are, invisible characters spelled
out (`visible`); a Vega-Lite chart costs a page a fraction of a Plotly chart's time in the
browser (bench/chart_component.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import altair as alt
import numpy as np
import numpy.typing as npt
import pandas as pd

from dashboard.escape import visible
from dashboard.trend import IncidentMarker, TrendLine, release_order
from monitor.gates import Gate
from monitor.metrics import TokenArrays
from monitor.schema import Stratum

Scale = Literal["linear", "log"]
PALETTE = (
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
    "#b6e880",
    "#ff97ff",
    "#fecb52",
)
TOLERANCE_COLOR = "#c62828"
INCIDENT_COLOR = "crimson"
SCATTER_LIMIT = 4000
TOP_TOKENS_KEPT = 400
HISTOGRAM_BINS = 60
LEGEND = alt.Legend(orient="bottom", title=None, columns=2, labelLimit=400)


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _rgba(hex_color: str, alpha: float) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def _legend(names: Sequence[str], colors: Sequence[str]) -> alt.Color:
    """One color legend naming every layer's entries, in order, each with its own color."""
    return alt.Color(
        "name:N", scale=alt.Scale(domain=list(names), range=list(colors)), legend=LEGEND
    )


def trend_figure(
    lines: Sequence[TrendLine],
    metric: str,
    *,
    gates: Sequence[tuple[str, Gate]] = (),
    incidents: Sequence[IncidentMarker] = (),
    scale: Scale = "linear",
    title: str = "",
) -> alt.LayerChart:
    """Each series over releases on a categorical axis in version order, with its noise band
    (repeat runs of a release), change points, the tolerance lines and the incidents."""
    categories = release_order(v for line in lines for v in line.versions)
    x = alt.X(
        "release:N",
        sort=categories,
        scale=alt.Scale(domain=categories),
        axis=alt.Axis(labelAngle=-45),
        title="release",
    )
    y_scale = alt.Scale(type=scale)
    names: list[str] = []
    colors: list[str] = []
    bands, points, changes, rules = [], [], [], []
    for index, line in enumerate(lines):
        color, label = _color(index), visible(line.label)
        names.append(label)
        colors.append(color)
        points += [
            {"name": label, "release": v, "value": value, "run": run}
            for v, value, run in zip(line.versions, line.values, line.run_ids, strict=True)
        ]
        if line.bands:
            names.append(f"{label}: noise band")
            colors.append(_rgba(color, 0.25))
            bands += [
                {
                    "name": f"{label}: noise band",
                    "release": b.version,
                    "low": b.low,
                    "high": b.high,
                    "runs": b.n_runs,
                }
                for b in line.bands
            ]
        if line.change_points:
            at = dict(zip(line.versions, line.values, strict=True))
            names.append(f"{label}: change point")
            colors.append(color)
            changes += [
                {"name": f"{label}: change point", "release": v, "value": at[v]}
                for v in line.change_points
            ]
    for gate_label, gate in gates:
        name = f"tolerance {visible(gate_label)}"
        names.append(name)
        colors.append(TOLERANCE_COLOR)
        limits = [gate.limit, -gate.limit] if gate.absolute else [gate.limit]
        rules += [
            {"name": name, "limit": limit, "source": visible(gate.source)} for limit in limits
        ]
    if incidents:
        names.append("incident")
        colors.append(INCIDENT_COLOR)
    legend = _legend(names, colors)
    layers: list[alt.Chart] = []
    if bands:
        layers.append(
            alt.Chart(pd.DataFrame(bands))
            .mark_bar(size=14)
            .encode(
                x=x,
                y=alt.Y("low:Q", scale=y_scale),
                y2="high:Q",
                color=legend,
                tooltip=["name:N", "release:N", "runs:Q", "low:Q", "high:Q"],
            )
        )
    layers.append(
        alt.Chart(pd.DataFrame(points, columns=["name", "release", "value", "run"]))
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("value:Q", scale=y_scale, title=visible(metric)),
            color=legend,
            tooltip=["name:N", "release:N", alt.Tooltip("value:Q", format=".4g"), "run:Q"],
        )
    )
    if changes:
        layers.append(
            alt.Chart(pd.DataFrame(changes))
            .mark_point(shape="diamond", size=260, filled=False, strokeWidth=2)
            .encode(
                x=x,
                y=alt.Y("value:Q", scale=y_scale),
                color=legend,
                tooltip=["name:N", "release:N"],
            )
        )
    if rules:
        layers.append(
            alt.Chart(pd.DataFrame(rules))
            .mark_rule(strokeDash=[6, 4], strokeWidth=1.5)
            .encode(y="limit:Q", color=legend, tooltip=["name:N", "source:N", "limit:Q"])
        )
    if incidents:
        rows = [
            {
                "name": "incident",
                "release": m.version,
                "value": m.value,
                "incident": visible(f"{m.label}: {m.text}"),
            }
            for m in incidents
        ]
        layers.append(
            alt.Chart(pd.DataFrame(rows))
            .mark_point(shape="cross", size=260, strokeWidth=3)
            .encode(x=x, y=alt.Y("value:Q", scale=y_scale), color=legend, tooltip=["incident:N"])
        )
    return alt.LayerChart(layer=layers, title=visible(title), name="trend", height=420)


def histogram_edges(samples: Sequence[npt.NDArray[np.float64]], bins: int) -> npt.NDArray[Any]:
    """Shared bin edges covering every sample (one edge pair around a constant sample)."""
    joined = np.concatenate([s for s in samples if s.size]) if samples else np.array([])
    if joined.size == 0:
        return np.array([-1.0, 1.0])
    low, high = float(joined.min()), float(joined.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, bins + 1)


def delta_histogram(
    deltas: Mapping[str, npt.NDArray[np.float64]], bins: int = HISTOGRAM_BINS
) -> alt.Chart:
    """δ = reference − vLLM logprob per token: the share of tokens per bin, one bar series per
    label, overlaid on shared bins (so two runs compare bin by bin)."""
    edges = histogram_edges(list(deltas.values()), bins)
    names, colors, rows = [], [], []
    for index, (label, delta) in enumerate(deltas.items()):
        name = f"{visible(label)} ({delta.size} tokens)"
        names.append(name)
        colors.append(_color(index))
        counts, _ = np.histogram(delta, bins=edges)
        share = counts / max(delta.size, 1)
        rows += [
            {"name": name, "low": float(lo), "high": float(hi), "share": float(part)}
            for lo, hi, part in zip(edges[:-1], edges[1:], share, strict=True)
        ]
    return (
        alt.Chart(pd.DataFrame(rows, columns=["name", "low", "high", "share"]))
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X(
                "low:Q", scale=alt.Scale(zero=False), title="δ = log π_ref − log π_vLLM (nats)"
            ),
            x2="high:Q",
            y=alt.Y("share:Q", stack=None, axis=alt.Axis(format="%"), title="share of tokens"),
            y2=alt.datum(0),
            color=_legend(names, colors),
            tooltip=[
                "name:N",
                alt.Tooltip("low:Q", format=".3g"),
                alt.Tooltip("high:Q", format=".3g"),
                alt.Tooltip("share:Q", format=".2%"),
            ],
        )
        .properties(name="histogram")
    )


def sample_tokens(delta: npt.NDArray[np.float64], limit: int = SCATTER_LIMIT) -> npt.NDArray[Any]:
    """Indices of at most `limit` tokens to draw: the largest |δ| always, then an even stride
    through the rest, in token order. A browser cannot draw 20k points per chart quickly."""
    size = delta.size
    if size <= limit:
        return np.arange(size)
    keep = min(TOP_TOKENS_KEPT, limit)
    top = np.argsort(-np.abs(delta), kind="stable")[:keep]
    rest = np.setdiff1d(np.arange(size), top, assume_unique=True)
    stride = rest[np.linspace(0, rest.size - 1, limit - keep).astype(np.int64)]
    return np.union1d(top, stride)


def delta_by_position(trace: TokenArrays, limit: int = SCATTER_LIMIT) -> alt.LayerChart:
    """δ of (a sample of) the tokens against their position, with the mean δ per position."""
    delta = trace.delta
    shown = sample_tokens(delta, limit)
    positions, inverse = np.unique(trace.position, return_inverse=True)
    means = np.bincount(inverse.ravel(), weights=delta) / np.bincount(inverse.ravel())
    tokens = pd.DataFrame(
        {
            "position": trace.position[shown],
            "delta": delta[shown],
            "prompt": trace.prompt_index[shown],
            "token id": trace.token_id[shown],
        }
    )
    mean = pd.DataFrame({"position": positions, "delta": means})
    return _tokens_and_line(
        (f"tokens ({shown.size} of {delta.size})", tokens),
        ("mean δ per position", mean, _color(1), {"strokeWidth": 2}),
        alt.X("position:Q", title="position in the completion"),
        alt.Y("delta:Q", title="δ (nats)"),
        ["position:Q", alt.Tooltip("delta:Q", format=".3g"), "prompt:Q", "token id:Q"],
        name="position",
    )


def abs_delta_by_probability(strata: Sequence[Stratum]) -> alt.Chart:
    """Mean |δ| per bucket of the token's vLLM probability, with the share of tokens in each."""
    ordered = sorted(strata, key=lambda s: s.lo)
    rows = pd.DataFrame(
        {
            "bucket": [visible(s.bucket) for s in ordered],
            "mean |δ|": [s.mean_abs_delta for s in ordered],
            "tokens": [s.n_tokens for s in ordered],
            "share": [s.fraction for s in ordered],
        }
    )
    return (
        alt.Chart(rows)
        .mark_bar(color=_color(0))
        .encode(
            x=alt.X("bucket:N", sort=list(rows["bucket"]), title="token probability (vLLM)"),
            y=alt.Y("mean |δ|:Q", title="mean |δ| (nats)"),
            tooltip=[
                "bucket:N",
                alt.Tooltip("mean |δ|:Q", format=".3g"),
                "tokens:Q",
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
        .properties(name="buckets")
    )


def logprob_scatter(
    trace: TokenArrays, reference: str = "trainer", limit: int = SCATTER_LIMIT
) -> alt.LayerChart:
    """Reference (trainer) logprob against vLLM's for (a sample of) the tokens, with y = x."""
    shown = sample_tokens(trace.delta, limit)
    both = np.concatenate([trace.vllm_logprob, trace.reference_logprob])
    low, high = (float(both.min()), float(both.max())) if both.size else (-1.0, 0.0)
    tokens = pd.DataFrame(
        {"vllm": trace.vllm_logprob[shown], "reference": trace.reference_logprob[shown]}
    )
    diagonal = pd.DataFrame({"vllm": [low, high], "reference": [low, high]})
    return _tokens_and_line(
        (f"tokens ({shown.size} of {trace.n_tokens})", tokens),
        ("y = x", diagonal, "#616161", {"strokeDash": [2, 2], "strokeWidth": 1}),
        alt.X("vllm:Q", title="vLLM logprob"),
        alt.Y("reference:Q", title=f"reference logprob ({visible(reference)})"),
        [alt.Tooltip("vllm:Q", format=".4g"), alt.Tooltip("reference:Q", format=".4g")],
        name="scatter",
    )


def _tokens_and_line(
    tokens: tuple[str, pd.DataFrame],
    line: tuple[str, pd.DataFrame, str, dict[str, Any]],
    x: alt.X,
    y: alt.Y,
    tooltip: list[Any],
    name: str,
) -> alt.LayerChart:
    """(A sample of) the tokens as faint points, with one line over them, each in the legend."""
    tokens_name, points = tokens
    line_name, line_rows, line_color, line_style = line
    color = _legend([tokens_name, line_name], [_rgba(_color(0), 0.35), line_color])
    return alt.LayerChart(
        layer=[
            alt.Chart(points.assign(name=tokens_name))
            .mark_circle(size=22)
            .encode(x=x, y=y, color=color, tooltip=tooltip),
            alt.Chart(line_rows.assign(name=line_name))
            .mark_line(**line_style)
            .encode(x=x, y=y, color=color),
        ],
        name=name,
    )


def metric_comparison(
    rows: Sequence[Mapping[str, Any]], metric: str, labels: tuple[str, str]
) -> alt.Chart:
    """One metric per arm in run a and run b, side by side, arms down the chart (rows from
    `tables.metric_delta_rows`)."""
    chosen = [row for row in rows if row["metric"] == metric]
    arms = [visible(f"{row['probe']}/{row['arm']}") for row in chosen]
    names = [visible(label) for label in labels]
    bars = pd.DataFrame(
        [
            {"arm": arm, "name": name, "value": row[side]}
            for arm, row in zip(arms, chosen, strict=True)
            for side, name in zip(("a", "b"), names, strict=True)
        ],
        columns=["arm", "name", "value"],
    )
    return (
        alt.Chart(bars)
        .mark_bar()
        .encode(
            y=alt.Y(
                "arm:N", sort=list(dict.fromkeys(arms)), title=None, axis=alt.Axis(labelLimit=400)
            ),
            yOffset=alt.YOffset("name:N", sort=names),
            x=alt.X("value:Q", title=visible(metric)),
            color=_legend(names, [_color(0), _color(1)]),
            tooltip=["arm:N", "name:N", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(name="metrics", height=alt.Step(14))
    )
