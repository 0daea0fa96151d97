"""The alert outbox: one message per confirmed incident, severity reached and alert target,
written in the transaction that confirms the incident or raises its severity (monitor.alerts
delivers them)."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.detection.findings import IncidentDraft
from monitor.detection.render import render_alert
from monitor.store import models as m
from monitor.store.models import utcnow

TITLE_LENGTH = 255


def target_hash(url: str) -> str:
    """The outbox's name for an alert target: the Apprise URL's sha256 (URLs hold secrets)."""
    return hashlib.sha256(url.strip().encode()).hexdigest()


def alert_key(
    alert_id: int, incident_id: int, severity: str, digest: str, created_at: datetime
) -> str:
    """The idempotency key of one outbox row: the same on every delivery attempt of that row, so
    a receiver can drop a second copy (`Idempotency-Key` header for json://, form:// and xml://,
    and the message's last line everywhere). Readable incident, severity and row id, then 16 hex
    of a sha256 over them, the target's hash and the row's creation second: a new database whose
    ids start again does not reuse an old key."""
    created = int(created_at.timestamp())
    seed = f"{alert_id}|{incident_id}|{severity}|{digest}|{created}"
    tail = hashlib.sha256(seed.encode()).hexdigest()[:16]
    return f"parity-{incident_id}-{severity}-{alert_id}-{tail}"


def alert_message(
    incident_id: int, draft: IncidentDraft, confirmation_run_id: int | None, dashboard_url: str
) -> tuple[str, str]:
    """(title, body) of a confirmed incident's alert: the rendered draft, the confirmation and a
    link to the incident's page."""
    title, body = render_alert(draft, dashboard_url)
    base = dashboard_url.strip().rstrip("/")
    if confirmation_run_id is not None:
        body += f"\nConfirmed by run {confirmation_run_id} (a re-run of {', '.join(draft.probes)})."
    body += f"\nIncident {incident_id}: {base}/incidents?incident={incident_id}"
    return title[:TITLE_LENGTH], body


def write_outbox(
    session: Session, incident: m.IncidentRow, draft: IncidentDraft, settings: Settings
) -> int:
    """One pending alert per configured target not yet alerted for this incident at the draft's
    severity; returns how many were written. Called inside the transaction that confirms the
    incident or raises its severity."""
    title, body = alert_message(
        incident.id, draft, incident.confirmation_run_id, settings.dashboard_url
    )
    existing = set(
        session.scalars(
            select(m.AlertRow.target_hash).where(
                m.AlertRow.incident_id == incident.id, m.AlertRow.severity == draft.severity
            )
        )
    )
    written = 0
    for index, url in enumerate(settings.alert_urls):
        digest = target_hash(url)
        if digest in existing:
            continue
        existing.add(digest)
        session.add(
            m.AlertRow(
                incident_id=incident.id,
                target_index=index,
                target_hash=digest,
                severity=draft.severity,
                title=title,
                body=body,
                state=m.AlertState.PENDING,
                attempts=0,
                next_attempt_at=utcnow(),
                created_at=utcnow(),
            )
        )
        written += 1
    return written
