"""Detection in the store, on SQLite and PostgreSQL, with realistic results ingested through the
real path: one incident per release however often a run is judged, a confirmation run queued
for the failing probes, triage history, "intended" moving the baseline, and alerts written in
the same transaction that confirms an incident (or not at all)."""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.incidents.outbox import target_hash
from monitor.incidents.triage import IncidentError, triage
from monitor.judge import DetectionOutcome, confirm, judge_run
from monitor.pipeline import final_status
from monitor.schema import SuiteResult
from monitor.store import Store, ingest_result
from monitor.store import models as m
from monitor.store.incident_reads import incident_detail, list_incidents
from monitor.store.models import CONFIRMATION
from monitor.store.queue import claim_next, store_held_result
from tests.store_factory import T0, failed, succeeded
from tests.store_fixtures import count_rows

FAILING = "prefix_cache/cache_on"
URLS = ["json://127.0.0.1:9/hook-a", "json://127.0.0.1:9/hook-b"]


@pytest.fixture
def settings(store_settings: Settings) -> Settings:
    return store_settings.model_copy(
        update={
            "alert_urls": list(URLS),
            "dashboard_url": "http://dash.example:8501",
        }
    )


def put(store: Store, version: str, *, failing: tuple[str, ...] = (), hours: int = 0) -> int:
    result = succeeded(version, failing=failing, started=T0 + timedelta(hours=hours))
    return ingest_result(store, result, runner="local").run_id


def confirmation_runs(store: Store) -> list[m.RunRow]:
    with store.reading() as session:
        query = select(m.RunRow).where(m.RunRow.requested_by == CONFIRMATION).order_by(m.RunRow.id)
        return list(session.scalars(query))


def run_confirmation(store: Store, result: SuiteResult) -> int:
    """Claim the queued confirmation run and store `result` (for its config) in it, as a
    worker does before the run is judged; returns its id."""
    with store.writing() as session:
        claimed = claim_next(session, "worker-1", 60.0)
    assert claimed is not None and claimed.requested_by == CONFIRMATION
    done = result.model_copy(update={"config": claimed.config})
    store_held_result(store, claimed.run_id, "worker-1", done, final_status(done))
    return claimed.run_id


class Regression(NamedTuple):
    base: int
    candidate: int
    opened: DetectionOutcome


def regress(store: Store, settings: Settings) -> Regression:
    """A good 0.31.0 run, then a 0.32.0 run failing FAILING, judged once."""
    base = put(store, "0.31.0")
    candidate = put(store, "0.32.0", failing=(FAILING,))
    return Regression(base, candidate, judge_run(store, candidate, settings))


def test_a_regressed_release_opens_one_incident_and_one_confirmation_run(
    store: Store, settings: Settings
) -> None:
    base, candidate, first = regress(store, settings)
    again = judge_run(store, candidate, settings)

    assert first.action == "opened" and again.action == "unchanged"
    assert first.incident_id == again.incident_id and first.baseline_run_id == base
    assert first.draft is not None and first.draft.probes == ["prefix_cache"]
    assert first.draft.severity == "major"
    assert {f.metric for f in first.draft.findings if f.severity == "major"} >= {
        "token_mult_prob_error",
        "clip_fraction",
    }
    assert count_rows(store, m.IncidentRow) == 1 and count_rows(store, m.IncidentEventRow) == 1
    (queued,) = confirmation_runs(store)
    assert queued.status == m.RunStatus.QUEUED and queued.id == first.confirmation_run_id
    assert queued.config["probes"] == ["prefix_cache"]
    assert queued.config["prompts_sha256"] == "ab" * 32
    assert count_rows(store, m.AlertRow) == 0
    with store.reading() as session:
        detail = incident_detail(session, first.incident_id or 0)
    assert detail.incident.status == "new" and detail.incident.confirmation == "pending"
    assert detail.incident.baseline_run_id == base and detail.incident.version == "0.32.0"
    assert judge_run(store, base, settings).action == "clean"


def test_a_clean_release_opens_nothing_and_a_failed_run_is_skipped(
    store: Store, settings: Settings
) -> None:
    put(store, "0.31.0")
    clean = put(store, "0.32.0")
    assert judge_run(store, clean, settings).action == "clean"
    broken = ingest_result(store, failed("0.33.0"), runner="local").run_id
    skipped = judge_run(store, broken, settings)
    assert skipped.action == "skipped" and skipped.reason == "run is failed"
    assert count_rows(store, m.IncidentRow) == 0 and confirmation_runs(store) == []


def test_a_confirmed_incident_writes_one_alert_per_target_with_the_confirmation(
    store: Store, settings: Settings
) -> None:
    base, candidate, opened = regress(store, settings)
    rerun = run_confirmation(store, succeeded("0.32.0", failing=(FAILING,)))

    outcome = judge_run(store, rerun, settings)
    assert outcome.action == "confirmed" and outcome.incident_id == opened.incident_id
    assert judge_run(store, rerun, settings).action == "unchanged"

    with store.reading() as session:
        detail = incident_detail(session, opened.incident_id or 0)
        rows = list(session.scalars(select(m.AlertRow).order_by(m.AlertRow.target_index)))
    assert detail.incident.confirmation == "confirmed"
    assert [(a.target_index, a.target_hash) for a in rows] == [
        (0, target_hash(URLS[0])),
        (1, target_hash(URLS[1])),
    ]
    alert = rows[0]
    assert alert.state == m.AlertState.PENDING and alert.attempts == 0
    assert alert.title.startswith("[major] vLLM 0.32.0: ") and "vs 0.31.0" in alert.title
    assert f"(run {base})" in alert.body and "prefix_cache/cache_on/" in alert.body
    assert f"http://dash.example:8501/run_detail?run={candidate}" in alert.body
    assert f"http://dash.example:8501/incidents?incident={opened.incident_id}" in alert.body
    assert f"Confirmed by run {rerun}" in alert.body
    assert "127.0.0.1" not in alert.body + alert.title
    assert [e.note.split(":")[0] for e in detail.events] == [
        detail.events[0].note.split(":")[0],
        f"confirmed by run {rerun}",
    ]


def test_a_confirmation_that_does_not_reproduce_alerts_nobody(
    store: Store, settings: Settings
) -> None:
    opened = regress(store, settings).opened
    rerun = run_confirmation(store, succeeded("0.32.0"))

    assert judge_run(store, rerun, settings).action == "not_confirmed"
    assert count_rows(store, m.AlertRow) == 0
    with store.reading() as session:
        (shown,) = list_incidents(session)
        assert list_incidents(session, open_only=True) == []
    assert shown.id == opened.incident_id and shown.confirmation == "not_confirmed"


def test_confirmation_and_its_alerts_commit_together_after_a_failed_try(
    store: Store, settings: Settings
) -> None:
    opened = regress(store, settings).opened
    rerun = run_confirmation(store, succeeded("0.32.0", failing=(FAILING,)))

    def refuse(session: Session, _context: object, _instances: object) -> None:
        if any(isinstance(obj, m.AlertRow) for obj in session.new):
            raise RuntimeError("disk full while writing the outbox")

    event.listen(Session, "before_flush", refuse)
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            confirm(store, rerun, settings)
    finally:
        event.remove(Session, "before_flush", refuse)
    with store.reading() as session:
        pending = incident_detail(session, opened.incident_id or 0)
    assert pending.incident.confirmation == "pending" and len(pending.events) == 1
    assert count_rows(store, m.AlertRow) == 0

    assert confirm(store, rerun, settings).action == "confirmed"
    assert count_rows(store, m.AlertRow, m.AlertRow.incident_id == opened.incident_id) == 2


def test_triage_records_who_when_what_and_validates_its_input(
    store: Store, settings: Settings
) -> None:
    incident_id = regress(store, settings).opened.incident_id or 0
    with store.writing() as session:
        triage(session, incident_id, "investigating", "alice", "looking at the KV cache", "bob")
    with store.writing() as session:
        view = triage(session, incident_id, "false positive", None, "seed noise", "alice")
    assert view.status == "false_positive" and view.owner == "alice"

    with store.reading() as session:
        events = incident_detail(session, incident_id).events
    assert [(e.by, e.from_status, e.to_status, e.owner, e.note) for e in events[1:]] == [
        ("bob", "new", "investigating", "alice", "looking at the KV cache"),
        ("alice", "investigating", "false_positive", "alice", "seed noise"),
    ]
    assert events[1].at <= events[2].at and events[2].at.tzinfo is not None

    bad = [
        ((incident_id, "closed", None, "", "bob"), "status must be one of new, investigating"),
        ((incident_id + 99, "fixed", None, "", "bob"), f"no incident {incident_id + 99}"),
        ((incident_id, "fixed", None, "", "  "), "the triaging user must not be empty"),
        ((incident_id, "fixed", "a\nb", "", "bob"), "owner must be one line"),
        ((incident_id, "fixed", None, "x" * 5000, "bob"), "note is 5000 characters long"),
    ]
    for args, message in bad:
        with pytest.raises(IncidentError) as info, store.writing() as session:
            triage(session, *args)
        assert message in str(info.value) and "\n" not in str(info.value)
    assert count_rows(store, m.IncidentEventRow) == 3


def test_an_intended_release_becomes_the_baseline_of_later_detection(
    store: Store, settings: Settings
) -> None:
    good = put(store, "0.30.0")
    moved = put(store, "0.31.0", failing=(FAILING,))
    changed = judge_run(store, moved, settings)
    assert changed.action == "opened" and changed.baseline_run_id == good

    later = put(store, "0.32.0", failing=(FAILING,))
    before = judge_run(store, later, settings)
    assert before.action == "opened" and before.baseline_run_id == good

    with store.writing() as session:
        triage(session, changed.incident_id or 0, "intended", "carol", "new default", "carol")
    repeat = put(store, "0.32.0", failing=(FAILING,), hours=5)
    after = judge_run(store, repeat, settings)
    assert after.baseline_run_id == moved
    assert after.action == "clean"
    with store.reading() as session:
        shown = {i.version: i for i in list_incidents(session)}
    assert shown["0.32.0"].candidate_run_id == later and shown["0.31.0"].status == "intended"
