"""The confirmation flow through the scheduler's own machinery: a regressed release opens an
incident when the pipeline finishes its run, its confirmation run is dispatched to a real worker
process (the stand-in release environment of tests/scheduler_standin.py plays the suite), the
worker's pipeline judges it with the settings it was given, and the scheduler's `alerts` job
delivers to a real HTTP receiver on 127.0.0.1. A finding the re-run reproduces alerts once; one
it does not, never."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select

from jobs import tasks
from jobs.scheduler import alerts_job
from monitor.judge import judge_run
from monitor.pipeline import finish
from monitor.store import ingest_result
from monitor.store import models as m
from monitor.store.incident_reads import incident_detail
from monitor.store.models import CONFIRMATION, RunStatus
from tests.loopback import free_port
from tests.scheduler_standin import calls
from tests.store_factory import PROBE_ARMS, succeeded
from tests.test_alerts import receiver
from tests.test_incidents import FAILING
from tests.test_scheduler import Harness
from tests.test_scheduler import harness as harness

GATE = "token_mult_prob_error"


def tolerance_the_candidate_alone_breaks() -> tuple[str, float]:
    """A gate ("probe/arm/metric", limit) that the stand-in's 0.32.0 result breaks and 0.31.0
    passes: the two releases' values of one arm lie on either side of it."""
    before = {(a.probe, a.arm): a for a in succeeded("0.31.0").arms() if a.applicable}
    for arm in succeeded("0.32.0").arms():
        old = before.get((arm.probe, arm.arm))
        if old is not None and arm.metrics[GATE] > old.metrics[GATE]:
            key = f"{arm.probe}/{arm.arm}/{GATE}"
            return key, (arm.metrics[GATE] + old.metrics[GATE]) / 2
    raise AssertionError("no arm of 0.32.0 is worse than 0.31.0")


def start(make: Callable[..., Harness], tolerances: dict[str, float | None]) -> tuple[Harness, int]:
    """A harness whose settings (passed on to its workers, not their environment) name a
    receiver and the tolerances; returns it and the receiver's port."""
    port = free_port()
    url = f"json://127.0.0.1:{port}/alerts"
    h = make(
        ["succeed"],
        alert_urls=[url],
        tolerances=tolerances,
        dashboard_url="http://dash.example:8501",
    )
    return h, port


def open_incident(h: Harness, candidate_failing: tuple[str, ...]) -> tuple[int, int, int]:
    """Store 0.31.0, then finish a 0.32.0 result through the pipeline, which judges it; judging
    it again changes nothing. Returns (candidate run id, incident id, confirmation run id)."""
    ingest_result(h.store, succeeded("0.31.0"), runner="local")
    result = succeeded("0.32.0", failing=candidate_failing)
    candidate = finish(h.store, h.settings, result, runner="local")
    assert candidate.created and candidate.judged is not None, candidate.problem
    assert candidate.judged.action == "opened"
    assert judge_run(h.store, candidate.run_id, h.settings).action == "unchanged"
    with h.store.reading() as session:
        (incident,) = session.scalars(select(m.IncidentRow)).all()
        (rerun,) = session.scalars(
            select(m.RunRow).where(m.RunRow.requested_by == CONFIRMATION)
        ).all()
    assert incident.confirmation_run_id == rerun.id and rerun.status == RunStatus.QUEUED
    return candidate.run_id, incident.id, rerun.id


def deliver(h: Harness, port: int) -> list[dict[str, Any]]:
    """Two passes of the scheduler's alerts job with the receiver up; what it received."""
    received: list[dict[str, Any]] = []
    tasks.install(h.service)
    try:
        with receiver(port, received):
            alerts_job()
            alerts_job()
    finally:
        tasks.install(None)
    return received


def test_a_confirmed_regression_alerts_once_through_the_scheduler(
    harness: Callable[..., Harness],
) -> None:
    key, limit = tolerance_the_candidate_alone_breaks()
    h, port = start(harness, {key: limit})
    candidate, incident_id, rerun = open_incident(h, ())

    run = h.settle(rerun)
    assert run.status == RunStatus.SUCCEEDED and len(calls(h.env)) == 1
    assert json.loads(Path(calls(h.env)[0]["out"]).read_text())["config"]["probes"] == [
        key.split("/")[0]
    ]
    with h.store.reading() as session:
        detail = incident_detail(session, incident_id)
    assert detail.incident.confirmation == "confirmed"
    assert [a.state for a in detail.alerts] == ["pending"]
    assert detail.events[-1].note.startswith(f"confirmed by run {rerun}: {key} regressed again")

    received = deliver(h, port)
    assert len(received) == 1 and "vLLM 0.32.0" in received[0]["title"]
    assert key in received[0]["message"]
    with h.store.reading() as session:
        assert [a.state for a in incident_detail(session, incident_id).alerts] == ["sent"]
    assert h.hooks() == [f"{candidate} succeeded", f"{rerun} succeeded"]


def test_a_regression_the_rerun_does_not_reproduce_never_alerts(
    harness: Callable[..., Harness],
) -> None:
    h, port = start(harness, {})
    _, incident_id, rerun = open_incident(h, (FAILING,))

    assert h.settle(rerun).status == RunStatus.SUCCEEDED
    with h.store.reading() as session:
        detail = incident_detail(session, incident_id)
    assert detail.incident.confirmation == "not_confirmed" and detail.alerts == []
    assert deliver(h, port) == []
    assert set(PROBE_ARMS) >= set(detail.draft["probes"]) == {FAILING.split("/")[0]}
