"""Cached reads of the results store for the dashboard's pages. Every read goes through
`monitor.store.queries`; results are cached per database URL for a short time, so a page
redraw does not query again and a new run shows up within `TTL_S` seconds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import Any, TypeVar

import streamlit as st
from sqlalchemy.orm import Session

from dashboard.trend import BandMode, TrendLine, trend_line
from monitor.config import Settings
from monitor.series import SeriesKey
from monitor.store import Store, open_store, queries
from monitor.store.db import database_url
from monitor.store.traces import TraceArrays
from monitor.store.views import (
    JobView,
    ModelView,
    ReleaseInfo,
    RunComparison,
    RunDetail,
    RunSummary,
    SeriesView,
    StatusMatrix,
)

TTL_S = 30
T = TypeVar("T")


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
) -> list[RunSummary]:
    return _read(
        url,
        lambda session: queries.list_runs(
            session, package=package, version=version, status=status, limit=limit
        ),
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def status_matrix(url: str, package: str | None = None) -> StatusMatrix:
    return _read(url, lambda session: queries.status_matrix(session, package=package))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run_detail(url: str, run_id: int) -> RunDetail:
    """A run without its token traces (those are read one arm at a time)."""
    return _read(url, lambda session: queries.run_detail(session, run_id, traces=False))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def arm_trace(url: str, run_id: int, probe: str, arm: str) -> TraceArrays:
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
def models(url: str) -> list[ModelView]:
    return _read(url, queries.list_models)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def jobs(url: str, statuses: tuple[str, ...] = (), limit: int = 100) -> list[JobView]:
    return _read(url, lambda session: queries.list_jobs(session, statuses=statuses, limit=limit))


INCIDENTS_QUERY = "list_incidents"


def incidents_stored() -> bool:
    """Whether the store has an incidents query yet (detection does not persist them yet)."""
    return callable(getattr(queries, INCIDENTS_QUERY, None))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def incidents(url: str) -> list[dict[str, Any]]:
    """Stored incidents as plain rows, through the store's incidents query."""
    query = getattr(queries, INCIDENTS_QUERY)
    return [_row(item) for item in _read(url, query)]


def _row(item: object) -> dict[str, Any]:
    if is_dataclass(item) and not isinstance(item, type):
        return asdict(item)
    dump = getattr(item, "model_dump", None)
    return dict(dump()) if callable(dump) else {"incident": str(item)}


def clear() -> None:
    """Forget every cached read (after this dashboard wrote to the store)."""
    st.cache_data.clear()
