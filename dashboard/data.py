"""Cached reads of the results store for the dashboard's pages. Every read goes through
`monitor.store.queries` or `monitor.store.incident_reads`; results are cached per database URL
for a short time, so a page redraw does not query again and a new run shows up within `TTL_S`
seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import streamlit as st
from sqlalchemy.orm import Session

from dashboard.trend import BandMode, TrendLine, trend_line
from monitor.config import Settings
from monitor.metrics import TokenArrays
from monitor.schema import ModelRef
from monitor.series import SeriesKey
from monitor.store import Store, incident_reads, open_store, queries
from monitor.store.db import database_url
from monitor.store.incident_reads import IncidentDetail, IncidentView
from monitor.store.views import (
    JobView,
    ReleaseInfo,
    RunComparison,
    RunDetail,
    RunSummary,
    SeriesView,
    StatusMatrix,
)

TTL_S = 30
T = TypeVar("T")
IncidentSeries = tuple[int, str, str, str, list[str]]


def store_url(settings: Settings) -> str:
    """The URL the dashboard reads (password included: it is a cache key, never shown)."""
    return database_url(settings).render_as_string(hide_password=False)


@st.cache_resource(show_spinner=False)
def store(url: str) -> Store:
    """One open store per database URL for the whole server (an engine is a connection pool)."""
    return open_store(Settings(database_url=url))


def _read(url: str, query: Callable[[Session], T]) -> T:
    with store(url).reading() as session:
        return query(session)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def table_counts(url: str) -> dict[str, int]:
    return _read(url, queries.table_counts)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def releases(url: str, package: str | None = None) -> list[ReleaseInfo]:
    return _read(url, lambda session: queries.list_releases(session, package=package))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def runs(
    url: str,
    *,
    package: str | None = None,
    version: str | None = None,
    status: str | None = None,
    limit: int = 50,
    metrics: tuple[str, ...] = (),
) -> list[RunSummary]:
    """Runs, newest first, each with its arms and their values of `metrics` (to judge them)."""
    return _read(
        url,
        lambda session: queries.list_runs(
            session, package=package, version=version, status=status, limit=limit, metrics=metrics
        ),
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def status_matrix(url: str, package: str | None, metrics: tuple[str, ...]) -> StatusMatrix:
    """Releases × probes, each cell's arms with their values of `metrics` (to judge them)."""
    return _read(
        url, lambda session: queries.status_matrix(session, package=package, metrics=metrics)
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_detail(url: str, run_id: int) -> RunDetail:
    """A run without its token traces (those are read one arm at a time)."""
    return _read(url, lambda session: queries.run_detail(session, run_id, traces=False))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def arm_trace(url: str, run_id: int, probe: str, arm: str) -> TokenArrays:
    return _read(url, lambda session: queries.arm_trace(session, run_id, probe, arm))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def compare_runs(url: str, a: int, b: int) -> RunComparison:
    return _read(url, lambda session: queries.compare_runs(session, a, b))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def series_keys(url: str) -> list[SeriesKey]:
    return _read(url, queries.series_keys)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def metric_series(url: str, digest: str, package: str | None) -> SeriesView:
    """Every succeeded run's value (repeats included) of one series, ordered by version."""
    return _read(
        url,
        lambda session: queries.metric_series(
            session, digest, package=package, latest_per_release=False
        ),
    )


def trend(url: str, digest: str, package: str | None, label: str, mode: BandMode) -> TrendLine:
    """One series drawn over releases: read (cached for TTL_S), then computed once per distinct
    content, since its change points cost a few hundred ms on a long history."""
    return _trend_of(metric_series(url, digest, package), label, mode)


@st.cache_data(max_entries=512, show_spinner=False)
def _trend_of(view: SeriesView, label: str, mode: BandMode) -> TrendLine:
    return trend_line(view, label, mode)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def models(url: str) -> list[ModelRef]:
    return _read(url, queries.list_models)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def jobs(url: str, statuses: tuple[str, ...] = (), limit: int = 100) -> list[JobView]:
    return _read(url, lambda session: queries.list_jobs(session, statuses=statuses, limit=limit))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def incidents(
    url: str,
    *,
    statuses: tuple[str, ...] = (),
    package: str | None = None,
    open_only: bool = False,
) -> list[IncidentView]:
    """Stored incidents, newest release first; `open_only`: new or investigating and not
    refuted by their confirmation run."""
    return _read(
        url,
        lambda session: incident_reads.list_incidents(
            session, status=statuses, package=package, open_only=open_only
        ),
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def incident_detail(url: str, incident_id: int) -> IncidentDetail:
    return _read(url, lambda session: incident_reads.incident_detail(session, incident_id))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def incident_series(url: str, package: str) -> list[IncidentSeries]:
    """Every incident of the package with the series it regressed (for the trend markers)."""
    return _read(url, lambda session: incident_reads.incident_series(session, package))


def clear() -> None:
    """Forget every cached read (after this dashboard wrote to the store)."""
    st.cache_data.clear()
