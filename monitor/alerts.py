"""The alert sender: delivers the outbox's due rows with Apprise and marks them. A sender first
claims a row (a guarded UPDATE that sets its name and a claim expiry), so two senders never
deliver one row at once; a failed delivery is retried with exponential backoff until
`alert_max_attempts`; a sender that dies mid-send leaves its claim to expire, and the row is
taken up again then. Delivery is at least once: only a sender that dies between the receiver's
answer and marking the row can send it twice."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import apprise
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.incidents.outbox import target_hash
from monitor.store import models as m
from monitor.store.db import Store
from monitor.store.models import AlertState, utcnow

logger = logging.getLogger(__name__)
CLAIM_S = 300.0
"""How long a sender holds a claimed row (Apprise's own timeouts are a few seconds)."""
MAX_BACKOFF_S = 3600.0
BATCH = 50
ERROR_LENGTH = 2000


@dataclass(frozen=True)
class Delivery:
    """What one delivery attempt came to: None error means delivered; `final` errors are not
    retried (an invalid or unconfigured target)."""

    error: str | None = None
    final: bool = False


@dataclass(frozen=True)
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


def backoff_s(attempts: int, base_s: float) -> float:
    """Wait after the `attempts`-th failed delivery: base, then doubling, at most an hour."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))


def _due(now: datetime) -> ColumnElement[bool]:
    return (
        (m.AlertRow.state == AlertState.PENDING)
        & (m.AlertRow.next_attempt_at <= now)
        & or_(m.AlertRow.claimed_until.is_(None), m.AlertRow.claimed_until < now)
    )


def claim_due(session: Session, owner: str, now: datetime, limit: int = BATCH) -> list[int]:
    """Claim up to `limit` due pending rows for `owner`; each claim is one guarded UPDATE, so a
    row another sender holds (or just took) is skipped."""
    candidates = session.scalars(
        select(m.AlertRow.id).where(_due(now)).order_by(m.AlertRow.next_attempt_at, m.AlertRow.id)
    ).all()
    claimed = []
    for alert_id in candidates[:limit]:
        done = session.execute(
            update(m.AlertRow)
            .where(m.AlertRow.id == alert_id, _due(now))
            .values(claimed_by=owner, claimed_until=now + timedelta(seconds=CLAIM_S))
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(alert_id)
    return claimed


def deliver(url: str, title: str, body: str) -> Delivery:
    """Send one message to one Apprise URL and check Apprise's answer."""
    sender = apprise.Apprise()
    if not sender.add(url):
        return Delivery("not a valid Apprise URL (check PARITY_ALERT_URLS)", final=True)
    with apprise.LogCapture(level=logging.WARNING) as log:
        result = sender.notify(title=title, body=body)
    if result:
        return Delivery()
    lines = [line for line in log.getvalue().splitlines() if line.strip()]
    reason = lines[-1].split(" - ", 2)[-1] if lines else "Apprise reported a failed delivery"
    return Delivery(reason[:ERROR_LENGTH])


def settle(
    session: Session,
    alert_id: int,
    owner: str,
    outcome: Delivery,
    settings: Settings,
    now: datetime,
) -> AlertState | None:
    """Record a delivery attempt on a row `owner` holds: sent, pending again after a backoff,
    or failed for good. None when the claim was lost (another sender took the row over)."""
    row = session.get(m.AlertRow, alert_id, with_for_update=True, populate_existing=True)
    if row is None or row.claimed_by != owner or row.state != AlertState.PENDING:
        return None
    row.attempts += 1
    row.claimed_by, row.claimed_until = None, None
    if outcome.error is None:
        row.state, row.sent_at, row.last_error = AlertState.SENT, now, None
    elif outcome.final or row.attempts >= settings.alert_max_attempts:
        row.state, row.last_error = AlertState.FAILED, outcome.error
    else:
        row.last_error = outcome.error
        row.next_attempt_at = now + timedelta(
            seconds=backoff_s(row.attempts, settings.alert_backoff_s)
        )
    session.flush()
    return row.state


def send_due(
    store: Store, settings: Settings, *, owner: str | None = None, now: datetime | None = None
) -> SendReport:
    """Deliver every due pending alert once; returns how many were sent, are to be retried and
    failed for good."""
    owner = owner or uuid.uuid4().hex
    now = now or utcnow()
    targets = {target_hash(url): url.strip() for url in settings.alert_urls}
    with store.writing() as session:
        claimed = claim_due(session, owner, now)
    counts = {AlertState.SENT: 0, AlertState.PENDING: 0, AlertState.FAILED: 0}
    for alert_id in claimed:
        with store.reading() as session:
            row = session.get_one(m.AlertRow, alert_id)
            digest, title, body = row.target_hash, row.title, row.body
        url = targets.get(digest)
        if url is None:
            outcome = Delivery("alert target no longer configured in PARITY_ALERT_URLS", True)
        else:
            outcome = deliver(url, title, body)
        with store.writing() as session:
            state = settle(session, alert_id, owner, outcome, settings, now)
        if state is None:
            logger.warning("alert %d: claim lost before it was marked", alert_id)
            continue
        counts[state] += 1
        if outcome.error is not None:
            logger.warning("alert %d: %s; now %s", alert_id, outcome.error, state)
    return SendReport(
        sent=counts[AlertState.SENT],
        retrying=counts[AlertState.PENDING],
        failed=counts[AlertState.FAILED],
    )
