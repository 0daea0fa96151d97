"""Releases discovery asked for that still have no succeeded run `PARITY_MISSING_AFTER_H` hours
after they were first seen: each opens (or joins) its release's "unmeasured" incident, confirmed
by the wait itself, and alerts once."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from monitor.config import Settings
from monitor.detection.findings import unmeasured_incident
from monitor.incidents.lifecycle import open_confirmed
from monitor.store import models as m
from monitor.store.db import Store
from monitor.store.incident_reads import overdue_discovered_runs, stored_run
from monitor.store.models import utcnow


def flag_overdue(store: Store, settings: Settings, now: datetime | None = None) -> list[int]:
    """Open or update the incident of every overdue release; returns the incidents touched."""
    limit = (now or utcnow()) - timedelta(hours=settings.missing_after_h)
    touched = []
    with store.writing() as session:
        for run_id in overdue_discovered_runs(session, limit):
            run = stored_run(session, run_id)
            row = session.get_one(m.RunRow, run_id)
            seen = session.scalar(
                select(m.ReleaseRow.first_seen_at).where(m.ReleaseRow.id == run.release_id)
            )
            detail = (
                f"no succeeded run {settings.missing_after_h:g} h after it was first seen "
                f"({seen:%Y-%m-%d %H:%M} UTC); its discovery run {run_id} is {row.status}"
            )
            draft = unmeasured_incident(run.version, str(run_id), "missing", detail)
            touched.append(open_confirmed(session, run, draft, settings))
    return touched
