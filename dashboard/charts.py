"""Plotly figures of the dashboard, built from plain data (views, numpy arrays, trend lines).
Pure: no store, no Streamlit, so tests can call them and check the figure's data. Stored text
(labels, titles, buckets) is escaped for Plotly's pseudo-HTML here (versions are PEP 440)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
from plotly.colors import qualitative

from dashboard.escape import plot
from dashboard.trend import TrendLine, release_order
from monitor.gates import Gate
from monitor.metrics import TokenArrays
from monitor.schema import Stratum

Scale = Literal["linear", "log"]
PALETTE = qualitative.Plotly
SCATTER_LIMIT = 4000
TOP_TOKENS_KEPT = 400
HISTOGRAM_BINS = 60
LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "template": "plotly_white"}


def _color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _rgba(hex_color: str, alpha: float) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def trend_figure(
    lines: Sequence[TrendLine],
    metric: str,
    *,
    gates: Sequence[tuple[str, Gate]] = (),
    scale: Scale = "linear",
    title: str = "",
) -> go.Figure:
    """Each series over releases on a categorical axis in version order, with its noise band
    (repeat runs of a release), change points and the tolerance lines."""
    categories = release_order(v for line in lines for v in line.versions)
    figure = go.Figure()
    for index, line in enumerate(lines):
        color = _color(index)
        label = plot(line.label)
        if line.bands:
            figure.add_trace(
                go.Bar(
                    x=[b.version for b in line.bands],
                    base=[b.low for b in line.bands],
                    y=[b.high - b.low for b in line.bands],
                    customdata=[[b.n_runs, b.low, b.high] for b in line.bands],
                    name=f"{label}: noise band",
                    legendgroup=label,
                    marker={"color": _rgba(color, 0.25), "line": {"width": 0}},
                    width=0.5,
                    hovertemplate="%{x}: %{customdata[0]} runs, "
                    "%{customdata[1]:.4g} … %{customdata[2]:.4g}<extra></extra>",
                )
            )
        figure.add_trace(
            go.Scatter(
                x=line.versions,
                y=line.values,
                customdata=line.run_ids,
                mode="lines+markers",
                name=label,
                legendgroup=label,
                line={"color": color},
                hovertemplate="%{x}: %{y:.4g} (run %{customdata})<extra>" + label + "</extra>",
            )
        )
        if line.change_points:
            at = {v: value for v, value in zip(line.versions, line.values, strict=True)}
            figure.add_trace(
                go.Scatter(
                    x=line.change_points,
                    y=[at[v] for v in line.change_points],
                    mode="markers",
                    name=f"{label}: change point",
                    legendgroup=label,
                    marker={
                        "symbol": "diamond-open",
                        "size": 16,
                        "color": color,
                        "line": {"width": 2},
                    },
                    hovertemplate="new level from %{x}<extra></extra>",
                )
            )
    for gate_label, gate in gates:
        label = plot(gate_label)
        limits = [gate.limit, -gate.limit] if gate.absolute else [gate.limit]
        for sign, limit in enumerate(limits):
            figure.add_trace(
                go.Scatter(
                    x=[categories[0], categories[-1]] if categories else [],
                    y=[limit, limit],
                    mode="lines",
                    name=f"tolerance {label}",
                    legendgroup=f"gate {label}",
                    showlegend=sign == 0,
                    line={"color": "#c62828", "dash": "dash", "width": 1.5},
                    hovertemplate=f"{plot(gate.source)}: {limit:g}<extra></extra>",
                )
            )
    figure.update_layout(
        title=plot(title),
        xaxis={"type": "category", "categoryorder": "array", "categoryarray": categories},
        yaxis={"type": scale, "title": plot(metric)},
        xaxis_title="release",
        barmode="overlay",
        legend={"orientation": "h", "y": -0.2},
        hovermode="closest",
        **LAYOUT,
    )
    return figure


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
) -> go.Figure:
    """δ = reference − vLLM logprob per token: the share of tokens per bin, one bar series per
    label, overlaid on shared bins (so two runs compare bin by bin)."""
    edges = histogram_edges(list(deltas.values()), bins)
    centres = (edges[:-1] + edges[1:]) / 2
    figure = go.Figure()
    for index, (label, delta) in enumerate(deltas.items()):
        counts, _ = np.histogram(delta, bins=edges)
        share = counts / max(delta.size, 1)
        figure.add_trace(
            go.Bar(
                x=centres,
                y=share,
                width=float(edges[1] - edges[0]),
                name=f"{plot(label)} ({delta.size} tokens)",
                marker={"color": _rgba(_color(index), 0.55)},
                hovertemplate="δ ≈ %{x:.3g}: %{y:.2%}<extra></extra>",
            )
        )
    figure.update_layout(
        barmode="overlay",
        xaxis_title="δ = log π_ref − log π_vLLM (nats)",
        yaxis={"title": "share of tokens", "tickformat": ".0%"},
        legend={"orientation": "h", "y": -0.25},
        **LAYOUT,
    )
    return figure


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


def delta_by_position(trace: TokenArrays, limit: int = SCATTER_LIMIT) -> go.Figure:
    """δ of (a sample of) the tokens against their position, with the mean δ per position."""
    delta = trace.delta
    shown = sample_tokens(delta, limit)
    positions, inverse = np.unique(trace.position, return_inverse=True)
    means = np.bincount(inverse.ravel(), weights=delta) / np.bincount(inverse.ravel())
    figure = go.Figure()
    figure.add_trace(
        go.Scattergl(
            x=trace.position[shown],
            y=delta[shown],
            mode="markers",
            name=f"tokens ({shown.size} of {delta.size})",
            marker={"size": 4, "color": _rgba(_color(0), 0.35)},
            customdata=np.stack([trace.prompt_index[shown], trace.token_id[shown]], axis=1),
            hovertemplate="position %{x}, δ %{y:.3g}<br>prompt %{customdata[0]}, "
            "token id %{customdata[1]}<extra></extra>",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=positions,
            y=means,
            mode="lines",
            name="mean δ per position",
            line={"color": _color(1), "width": 2},
        )
    )
    figure.update_layout(
        xaxis_title="position in the completion",
        yaxis_title="δ (nats)",
        legend={"orientation": "h", "y": -0.25},
        **LAYOUT,
    )
    return figure


def abs_delta_by_probability(strata: Sequence[Stratum]) -> go.Figure:
    """Mean |δ| per bucket of the token's vLLM probability, with the share of tokens in each."""
    ordered = sorted(strata, key=lambda s: s.lo)
    figure = go.Figure(
        go.Bar(
            x=[plot(s.bucket) for s in ordered],
            y=[s.mean_abs_delta for s in ordered],
            customdata=[[s.n_tokens, s.fraction] for s in ordered],
            marker={"color": _color(0)},
            name="mean |δ|",
            hovertemplate="p in %{x}: mean |δ| %{y:.3g}<br>%{customdata[0]} tokens "
            "(%{customdata[1]:.1%})<extra></extra>",
        )
    )
    figure.update_layout(
        xaxis={"title": "token probability (vLLM)", "type": "category"},
        yaxis_title="mean |δ| (nats)",
        **LAYOUT,
    )
    return figure


def logprob_scatter(
    trace: TokenArrays, reference: str = "trainer", limit: int = SCATTER_LIMIT
) -> go.Figure:
    """Reference (trainer) logprob against vLLM's for (a sample of) the tokens, with y = x."""
    shown = sample_tokens(trace.delta, limit)
    x = trace.vllm_logprob[shown]
    y = trace.reference_logprob[shown]
    both = np.concatenate([trace.vllm_logprob, trace.reference_logprob])
    low, high = (float(both.min()), float(both.max())) if both.size else (-1.0, 0.0)
    figure = go.Figure()
    figure.add_trace(
        go.Scattergl(
            x=x,
            y=y,
            mode="markers",
            name=f"tokens ({shown.size} of {trace.n_tokens})",
            marker={"size": 4, "color": _rgba(_color(0), 0.35)},
            hovertemplate="vLLM %{x:.4g}, reference %{y:.4g}<extra></extra>",
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="y = x",
            line={"color": "#616161", "dash": "dot", "width": 1},
        )
    )
    figure.update_layout(
        xaxis_title="vLLM logprob",
        yaxis_title=f"reference logprob ({plot(reference)})",
        legend={"orientation": "h", "y": -0.25},
        **LAYOUT,
    )
    return figure


def metric_comparison(
    rows: Sequence[Mapping[str, Any]], metric: str, labels: tuple[str, str]
) -> go.Figure:
    """One metric per arm in run a and run b, side by side, arms down the chart (rows from
    `tables.metric_delta_rows`)."""
    chosen = [row for row in rows if row["metric"] == metric]
    arms = [plot(f"{row['probe']}/{row['arm']}") for row in chosen]
    figure = go.Figure()
    for index, (side, run_label) in enumerate(zip(("a", "b"), labels, strict=True)):
        label = plot(run_label)
        figure.add_trace(
            go.Bar(
                y=arms,
                x=[row[side] for row in chosen],
                orientation="h",
                name=label,
                marker={"color": _color(index)},
                hovertemplate="%{y}: %{x:.4g}<extra>" + label + "</extra>",
            )
        )
    figure.update_layout(
        barmode="group",
        yaxis={"type": "category", "autorange": "reversed", "automargin": True},
        xaxis_title=plot(metric),
        height=120 + 26 * max(len(arms), 1),
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        **LAYOUT,
    )
    return figure
