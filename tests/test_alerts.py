"""The alert sender against a real HTTP receiver on 127.0.0.1 through Apprise's json:// URL, on
SQLite and PostgreSQL: a receiver that is down leaves the alert pending with its attempt
counted and a backoff; once it is up, exactly one delivery; neither a second pass, a restarted
sender nor two senders at once deliver it again."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from monitor.alerts import MAX_BACKOFF_S, backoff_s, send_due
from monitor.config import Settings
from monitor.judge import judge_run
from monitor.store import Store, open_store
from monitor.store import models as m
from monitor.store.models import AlertState, utcnow
from tests.loopback import free_port
from tests.store_factory import succeeded
from tests.test_incidents import FAILING, put, run_confirmation


@contextmanager
def receiver(port: int, received: list[dict[str, Any]]) -> Iterator[None]:
    """A webhook receiver on 127.0.0.1:`port` that records every JSON body posted to it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append({"path": self.path, **json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        httpd.shutdown()
        httpd.server_close()


def confirmed_incident(store: Store, settings: Settings) -> int:
    """A release with a confirmed regression; returns the incident id (its alerts are queued)."""
    put(store, "0.31.0")
    opened = judge_run(store, put(store, "0.32.0", failing=(FAILING,)), settings)
    rerun = run_confirmation(store, succeeded("0.32.0", failing=(FAILING,)))
    assert judge_run(store, rerun, settings).action == "confirmed"
    return opened.incident_id or 0


def alerts(store: Store) -> list[m.AlertRow]:
    with store.reading() as session:
        return list(session.scalars(select(m.AlertRow).order_by(m.AlertRow.id)))


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def settings(store_settings: Settings, port: int) -> Settings:
    return store_settings.model_copy(
        update={
            "alert_urls": [f"json://127.0.0.1:{port}/parity-hook"],
            "dashboard_url": "http://dash.example:8501",
            "alert_backoff_s": 60.0,
            "alert_max_attempts": 3,
        }
    )


def test_receiver_down_then_up_gives_exactly_one_delivery(
    store: Store, settings: Settings, port: int
) -> None:
    incident_id = confirmed_incident(store, settings)
    received: list[dict[str, Any]] = []
    start = utcnow()

    down = send_due(store, settings, now=start)
    assert (down.sent, down.retrying, down.failed) == (0, 1, 0)
    (row,) = alerts(store)
    assert row.state == AlertState.PENDING and row.attempts == 1 and row.sent_at is None
    assert row.last_error and "connection error" in row.last_error.lower()
    assert row.next_attempt_at == start + timedelta(seconds=60)
    assert row.claimed_by is None

    with receiver(port, received):
        early = send_due(store, settings, now=start + timedelta(seconds=30))
        assert early.sent == 0 and received == []
        later = start + timedelta(seconds=61)
        up = send_due(store, settings, now=later)
        assert (up.sent, up.retrying, up.failed) == (1, 0, 0)
        assert send_due(store, settings, now=later + timedelta(hours=2)).sent == 0
        restarted = open_store(settings)
        try:
            assert send_due(restarted, settings, now=later + timedelta(days=1)).sent == 0
        finally:
            restarted.close()

    assert len(received) == 1
    (message,) = received
    assert message["path"] == "/parity-hook"
    assert message["title"].startswith("[major] vLLM 0.32.0")
    assert "prefix_cache/cache_on/" in message["message"]
    assert f"incidents?incident={incident_id}" in message["message"]
    (row,) = alerts(store)
    assert row.state == AlertState.SENT and row.attempts == 2 and row.last_error is None
    assert row.sent_at == later


def test_two_senders_at_once_deliver_a_row_once(
    store: Store, settings: Settings, port: int
) -> None:
    confirmed_incident(store, settings)
    received: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)
    reports = []

    def sender() -> None:
        barrier.wait()
        reports.append(send_due(store, settings))

    with receiver(port, received):
        threads = [threading.Thread(target=sender) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert len(received) == 1
    assert sorted(r.sent for r in reports) == [0, 1]


def test_a_receiver_that_stays_down_fails_the_alert_after_the_last_attempt(
    store: Store, settings: Settings
) -> None:
    confirmed_incident(store, settings)
    now = utcnow()
    states = []
    for _ in range(4):
        report = send_due(store, settings, now=now)
        states.append((report.retrying, report.failed))
        now += timedelta(hours=2)
    assert states == [(1, 0), (1, 0), (0, 1), (0, 0)]
    (row,) = alerts(store)
    assert row.state == AlertState.FAILED and row.attempts == 3


def test_an_unconfigured_or_invalid_target_fails_at_once(store: Store, settings: Settings) -> None:
    confirmed_incident(store, settings)
    moved = settings.model_copy(update={"alert_urls": ["json://127.0.0.1:1/other"]})
    assert send_due(store, moved).failed == 1
    (row,) = alerts(store)
    assert row.state == AlertState.FAILED and row.attempts == 1
    assert row.last_error == "alert target no longer configured in PARITY_ALERT_URLS"


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(n, 30.0) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert backoff_s(40, 30.0) == MAX_BACKOFF_S


def test_alert_settings_are_checked_when_they_load() -> None:
    with pytest.raises(ValueError, match=r"alert_urls\[1\] is not an Apprise URL"):
        Settings(alert_urls=["json://127.0.0.1:1/a", "127.0.0.1:1/b"])
    with pytest.raises(ValueError, match="dashboard_url must be an http"):
        Settings(dashboard_url="dash.example")
    assert Settings(dashboard_url="https://dash.example/parity/").dashboard_url == (
        "https://dash.example/parity"
    )
