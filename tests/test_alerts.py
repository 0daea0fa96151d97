"""The alert sender against real HTTP receivers on 127.0.0.1 through Apprise's json:// URL, on
SQLite and PostgreSQL: a receiver that is down leaves the alert pending with its attempt
counted and a backoff; once it is up, exactly one delivery; neither a second pass, a restarted
sender nor two senders at once deliver it again. Through the scheduler's `alerts` job, receivers
that answer after 3, 5 and 8 s (beyond Apprise's own 4 s timeout) get one delivery each, at once,
the row's idempotency key in its header and message; one that answers after the sender stopped
waiting is not sent the alert again; a retried alert keeps its key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from jobs import tasks
from jobs.scheduler import alerts_job
from monitor import alerts as sender
from monitor.alerts import (
    CONNECT_TIMEOUT_S,
    MAX_BACKOFF_S,
    READ_TIMEOUT_S,
    backoff_s,
    deliver,
    send_due,
    service_for,
)
from monitor.config import Settings
from monitor.incidents.outbox import alert_key
from monitor.judge import judge_run
from monitor.store import Store, open_store
from monitor.store import models as m
from monitor.store.models import AlertState, utcnow
from tests.loopback import Webhook, free_port, webhook
from tests.store_factory import succeeded
from tests.test_incidents import FAILING, put, run_confirmation


@contextmanager
def receiver(port: int, received: list[dict[str, Any]]) -> Iterator[None]:
    """A webhook receiver on 127.0.0.1:`port` that records every JSON body posted to it (with
    its path and headers) in `received`."""
    with webhook(port) as hook:
        hook.received = received
        yield


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


def key_of(row: m.AlertRow) -> str:
    return alert_key(row.id, row.incident_id, row.severity, row.target_hash, row.created_at)


@contextmanager
def alerts_job_on(store: Store, settings: Settings) -> Iterator[None]:
    """The scheduler's `alerts` job acting on `store` with `settings`, as the scheduler runs it."""
    tasks.install(tasks.Service(store, settings))
    try:
        yield
    finally:
        tasks.install(None)


def json_url(hook: Webhook) -> str:
    return f"json://127.0.0.1:{hook.port}/parity-hook"


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


def test_slow_receivers_get_one_delivery_each_through_the_alerts_job(
    store: Store, settings: Settings
) -> None:
    delays = (3.0, 5.0, 8.0)
    assert max(delays) > 4.0  # beyond Apprise's own read timeout, well within ours
    assert 3 * max(delays) <= READ_TIMEOUT_S
    with ExitStack() as stack:
        hooks = [stack.enter_context(webhook(delay_s=delay)) for delay in delays]
        slow = settings.model_copy(update={"alert_urls": [json_url(hook) for hook in hooks]})
        confirmed_incident(store, slow)
        rows = alerts(store)
        assert len(rows) == 3 and {row.state for row in rows} == {AlertState.PENDING}
        keys = [key_of(row) for row in rows]
        with alerts_job_on(store, slow):
            begun = time.monotonic()
            alerts_job()
            took = time.monotonic() - begun
            for _ in range(2):
                alerts_job()
        assert send_due(store, slow, now=utcnow() + timedelta(days=1)) == sender.SendReport()

    assert [len(hook.received) for hook in hooks] == [1, 1, 1]
    assert [hook.answered for hook in hooks] == [1, 1, 1]
    arrivals = [hook.received[0]["at"] for hook in hooks]
    assert max(arrivals) - min(arrivals) < 2.5, "the three targets were not sent to at once"
    assert max(delays) <= took
    for row, hook, key in zip(alerts(store), hooks, keys, strict=True):
        (message,) = hook.received
        assert message["headers"]["Idempotency-Key"] == key
        assert message["message"].endswith(f"\nAlert key: {key}")
        assert message["title"].startswith("[major] vLLM 0.32.0")
        assert row.state == AlertState.SENT and row.attempts == 1 and row.last_error is None
    assert len(set(keys)) == 3


def test_an_alert_sent_but_unanswered_is_not_sent_again(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sender, "READ_TIMEOUT_S", 1.0)
    with webhook(delay_s=2.5) as hook:
        late = settings.model_copy(update={"alert_urls": [json_url(hook)]})
        confirmed_incident(store, late)
        (row,) = alerts(store)
        key = key_of(row)
        report = send_due(store, late)
        assert report == sender.SendReport(uncertain=1)
        (row,) = alerts(store)
        assert row.state == AlertState.FAILED and row.attempts == 1 and row.sent_at is None
        assert row.last_error is not None
        assert row.last_error.startswith("delivery uncertain: sent, but no answer came within 1 s")
        assert key in row.last_error
        with alerts_job_on(store, late):
            alerts_job()
            time.sleep(2.0)  # the receiver answers (to nobody) meanwhile
            alerts_job()
        assert send_due(store, late, now=utcnow() + timedelta(days=1)) == sender.SendReport()
    assert len(hook.received) == 1
    assert hook.received[0]["headers"]["Idempotency-Key"] == key


def test_a_receiver_down_then_up_gets_one_delivery_through_the_alerts_job(
    store: Store, settings: Settings, port: int
) -> None:
    eager = settings.model_copy(update={"alert_backoff_s": 0.0})
    confirmed_incident(store, eager)
    with alerts_job_on(store, eager):
        alerts_job()
        (row,) = alerts(store)
        assert row.state == AlertState.PENDING and row.attempts == 1
        assert row.last_error and "connection error" in row.last_error.lower()
        with webhook(port) as hook:
            for _ in range(3):
                alerts_job()
    assert len(hook.received) == 1
    (row,) = alerts(store)
    assert row.state == AlertState.SENT and row.attempts == 2
    assert hook.received[0]["headers"]["Idempotency-Key"] == key_of(row)


def test_a_retried_alert_keeps_its_key(store: Store, settings: Settings) -> None:
    with webhook(statuses=[500]) as hook:
        eager = settings.model_copy(update={"alert_urls": [json_url(hook)], "alert_backoff_s": 0.0})
        confirmed_incident(store, eager)
        with alerts_job_on(store, eager):
            alerts_job()
            (row,) = alerts(store)
            assert row.state == AlertState.PENDING and row.attempts == 1
            assert row.last_error and "error=500" in row.last_error
            alerts_job()
            alerts_job()
    (row,) = alerts(store)
    assert row.state == AlertState.SENT and row.attempts == 2
    key = key_of(row)
    assert [r["headers"]["Idempotency-Key"] for r in hook.received] == [key, key]
    assert {r["message"] for r in hook.received} == {hook.received[0]["message"]}


def test_a_delivery_waits_long_sends_its_key_and_leaves_retries_to_the_outbox() -> None:
    plain = service_for("json://127.0.0.1:1/hook?retry=3", "k-1")
    assert (plain.socket_read_timeout, plain.socket_connect_timeout) == (
        READ_TIMEOUT_S,
        CONNECT_TIMEOUT_S,
    )
    assert plain.headers == {"Idempotency-Key": "k-1"} and plain.retry == 0
    own = service_for("json://127.0.0.1:1/hook?rto=12&cto=2&+idempotency-key=mine", "k-1")
    assert (own.socket_read_timeout, own.socket_connect_timeout) == (12.0, 2.0)
    assert own.headers == {"idempotency-key": "mine"}
    slack = service_for("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#general", "k-1")
    assert slack.socket_read_timeout == READ_TIMEOUT_S
    assert service_for("not a url", "k-1") is None
    assert deliver("not a url", "t", "b", "k-1") == sender.Delivery(
        "not a valid Apprise URL (check PARITY_ALERT_URLS)", final=True
    )
