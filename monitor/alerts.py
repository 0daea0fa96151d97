"""The alert sender: delivers the outbox's due rows with Apprise and marks them, so that each
alert reaches each target once.

A sender claims a batch of due rows (a guarded UPDATE that sets its name and a claim expiry), so
two senders never deliver one row at once, and renews a row's claim just before sending it. The
rows of different targets are sent at once (one lane per target, a target's rows in order), so a
slow target does not hold the others back. Every delivery carries the row's idempotency key
(`monitor.incidents.outbox.alert_key`: an `Idempotency-Key` header where the service sends
headers, and the message's last line) and waits `READ_TIMEOUT_S` for the receiver's answer. What
a delivery came to decides what follows:

- answered with success: `sent`;
- nothing was sent (connection refused, unknown host, connect timeout, TLS failure) or the
  receiver answered with an error status: `pending` again after an exponential backoff, and
  `failed` after `alert_max_attempts`;
- sent, but no answer came (read timeout, connection closed before the answer): the receiver may
  have acted on it, so it is never sent again automatically; the row is `failed` with a last
  error that begins `delivery uncertain`, logged as an error for a human to check;
- a target that is not a valid Apprise URL or no longer configured: `failed` at once.

Only a sender that dies between sending and marking leaves a row to be sent again (once its claim
expires); the key lets the receiver drop that copy."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import apprise
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.incidents.outbox import alert_key, target_hash
from monitor.store import models as m
from monitor.store.db import Store
from monitor.store.models import AlertState, utcnow

logger = logging.getLogger(__name__)
READ_TIMEOUT_S = 30.0
"""How long a delivery waits for the receiver's answer once the message is sent (Apprise's `rto`,
whose own default is 4 s), unless the target's URL sets its own `rto`. Well above what a slow
receiver takes (webhook relays and chat bridges that answer after 5 to 10 s): a sender that gives
up before the answer cannot know whether the alert arrived, and re-sending each such alert is how
receivers answering after 5 or 8 s got one alert six times in two minutes."""
CONNECT_TIMEOUT_S = 10.0
"""How long a delivery waits to connect (Apprise's `cto`, unless the URL sets one): a target that
never accepted the connection was sent nothing, so that failure is retried."""
CLAIM_S = 300.0
"""How long a sender holds a claimed row; renewed just before each delivery, and well above one
delivery's longest wait (CONNECT_TIMEOUT_S + READ_TIMEOUT_S), so no claim expires mid-send."""
MAX_BACKOFF_S = 3600.0
BATCH = 50
LANES = 8
"""How many targets one sender delivers to at once."""
ERROR_LENGTH = 2000
KEY_HEADER = "Idempotency-Key"
UNANSWERED = {
    "Read timed out": "sent, but no answer came within {timeout:g} s",
    "Connection aborted": "sent, but the connection closed before the receiver answered",
    "Connection broken": "sent, but the connection broke while the answer was read",
}
"""What requests/urllib3 say (on the `Socket Exception` line Apprise's services log) when a
request went out and its answer never came: the receiver may have acted on it."""
UNCERTAIN = "delivery uncertain"


@dataclass(frozen=True)
class Delivery:
    """What one delivery attempt came to: None error means delivered; `final` errors are not
    retried (an invalid or unconfigured target); `uncertain` ones were sent but never answered,
    and are not retried either (the receiver may have acted on them)."""

    error: str | None = None
    final: bool = False
    uncertain: bool = False


@dataclass(frozen=True)
class SendReport:
    """One pass's rows by what became of them: sent, pending again, failed for good (uncertain
    deliveries counted apart)."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    uncertain: int = 0


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


def renew_claim(session: Session, alert_id: int, owner: str, now: datetime) -> m.AlertRow | None:
    """Extend `owner`'s claim on a row just before sending it; None when the row is no longer
    pending or another sender took it over (this one's claim had expired)."""
    done = session.execute(
        update(m.AlertRow)
        .where(
            m.AlertRow.id == alert_id,
            m.AlertRow.claimed_by == owner,
            m.AlertRow.state == AlertState.PENDING,
        )
        .values(claimed_until=now + timedelta(seconds=CLAIM_S))
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get_one(m.AlertRow, alert_id, populate_existing=True)


class _Recorder(logging.Handler):
    """One delivery's Apprise log records, debug ones included (they name the socket error);
    warnings and errors still reach the `apprise` logger as before."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.upstream = logging.getLogger("apprise")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if record.levelno >= logging.WARNING and self.upstream.isEnabledFor(record.levelno):
            self.upstream.handle(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [record.getMessage() for record in self.records if record.levelno >= level]


def _delivery_logger(recorder: _Recorder) -> logging.Logger:
    """A logger of this delivery's own (not registered, not propagating), for the service object:
    its records stay apart from other deliveries running at the same time."""
    log = logging.Logger("apprise.delivery", logging.DEBUG)
    log.propagate = False
    log.addHandler(recorder)
    return log


def service_for(url: str, key: str) -> Any:
    """Apprise's service object for `url`, set up for one alert: READ_TIMEOUT_S and
    CONNECT_TIMEOUT_S as its `rto`/`cto` (unless the URL sets them), no retries of Apprise's own
    (it would re-send an unanswered request; the outbox retries, knowing what a failure means),
    and `key` as an `Idempotency-Key` header where the service takes `+Header=value` parameters
    (json://, form://, xml://, ...) and the URL does not set one. None for a URL Apprise cannot
    use."""
    parsed = apprise.plugins.url_to_dict(url.strip())
    if not parsed:
        return None
    given = {str(name).lower() for name in parsed.get("qsd") or {}}
    options = dict(parsed)
    if "rto" not in given:
        options["rto"] = READ_TIMEOUT_S
    if "cto" not in given:
        options["cto"] = CONNECT_TIMEOUT_S
    options["retry"] = 0
    headers = options.get("headers")
    if isinstance(headers, dict) and KEY_HEADER.lower() not in {h.lower() for h in headers}:
        options["headers"] = {**headers, KEY_HEADER: key}
    return apprise.Apprise.instantiate(options)


def deliver(url: str, title: str, body: str, key: str) -> Delivery:
    """Send one alert to one Apprise URL, the key on the message's last line, and say what came
    of it: delivered, not delivered (retried) or sent but unanswered (uncertain)."""
    service = service_for(url, key)
    if service is None:
        return Delivery("not a valid Apprise URL (check PARITY_ALERT_URLS)", final=True)
    recorder = _Recorder()
    service.logger = _delivery_logger(recorder)
    sender = apprise.Apprise()
    sender.add(service)
    if sender.notify(title=title, body=f"{body}\nAlert key: {key}"):
        return Delivery()
    sockets = [line for line in recorder.messages() if line.startswith("Socket Exception")]
    for marker, what in UNANSWERED.items():
        if any(marker in line for line in sockets):
            waited = getattr(service, "socket_read_timeout", READ_TIMEOUT_S)
            return Delivery(
                f"{UNCERTAIN}: {what.format(timeout=waited)}; the receiver may have acted on "
                f"it, so it is not sent again automatically (alert key {key})"[:ERROR_LENGTH],
                final=True,
                uncertain=True,
            )
    warnings = recorder.messages(logging.WARNING)
    reason = warnings[-1] if warnings else "Apprise reported a failed delivery"
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
    or failed for good (an uncertain delivery included). None when the claim was lost (another
    sender took the row over)."""
    row = session.get(m.AlertRow, alert_id, with_for_update=True, populate_existing=True)
    if row is None or row.claimed_by != owner or row.state != AlertState.PENDING:
        return None
    row.attempts += 1
    row.claimed_by, row.claimed_until = None, None
    if outcome.error is None:
        row.state, row.sent_at, row.last_error = AlertState.SENT, now, None
    elif outcome.final or outcome.uncertain or row.attempts >= settings.alert_max_attempts:
        row.state, row.last_error = AlertState.FAILED, outcome.error
    else:
        row.last_error = outcome.error
        row.next_attempt_at = now + timedelta(
            seconds=backoff_s(row.attempts, settings.alert_backoff_s)
        )
    session.flush()
    return row.state


def _send_one(
    store: Store,
    settings: Settings,
    owner: str,
    alert_id: int,
    targets: dict[str, str],
    now: datetime,
    clock: Callable[[], datetime],
) -> str | None:
    """Renew the claim, deliver and settle one row; what became of it (None: claim lost)."""
    with store.writing() as session:
        row = renew_claim(session, alert_id, owner, clock())
        if row is None:
            logger.warning("alert %d: claim lost before it was sent", alert_id)
            return None
        digest, title, body = row.target_hash, row.title, row.body
        key = alert_key(row.id, row.incident_id, row.severity, digest, row.created_at)
    url = targets.get(digest)
    if url is None:
        outcome = Delivery("alert target no longer configured in PARITY_ALERT_URLS", True)
    else:
        outcome = deliver(url, title, body, key)
    with store.writing() as session:
        state = settle(session, alert_id, owner, outcome, settings, now)
    if state is None:
        logger.warning("alert %d: claim lost before it was marked", alert_id)
        return None
    if outcome.uncertain:
        logger.error("alert %d: %s", alert_id, outcome.error)
        return UNCERTAIN
    if outcome.error is not None:
        logger.warning("alert %d: %s; now %s", alert_id, outcome.error, state)
    return str(state)


def send_due(
    store: Store, settings: Settings, *, owner: str | None = None, now: datetime | None = None
) -> SendReport:
    """Deliver every due pending alert once, one lane per target (LANES at once); returns how
    many were sent, are to be retried, failed for good and were sent but left unanswered."""
    owner = owner or uuid.uuid4().hex
    now = now or utcnow()
    started = time.monotonic()
    targets = {target_hash(url): url.strip() for url in settings.alert_urls}
    lanes: dict[str, list[int]] = {}
    with store.writing() as session:
        claimed = claim_due(session, owner, now)
        if claimed:
            found = session.execute(
                select(m.AlertRow.id, m.AlertRow.target_hash).where(m.AlertRow.id.in_(claimed))
            ).all()
            lane_of = {alert_id: digest for alert_id, digest in found}
            for alert_id in claimed:
                lanes.setdefault(lane_of[alert_id], []).append(alert_id)

    def clock() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    def lane(ids: list[int]) -> list[str | None]:
        return [_send_one(store, settings, owner, i, targets, now, clock) for i in ids]

    if len(lanes) <= 1:
        results = [lane(ids) for ids in lanes.values()]
    else:
        with ThreadPoolExecutor(min(LANES, len(lanes)), thread_name_prefix="alerts") as pool:
            results = list(pool.map(lane, lanes.values()))
    tally = Counter(kind for kinds in results for kind in kinds)
    return SendReport(
        sent=tally[str(AlertState.SENT)],
        retrying=tally[str(AlertState.PENDING)],
        failed=tally[str(AlertState.FAILED)],
        uncertain=tally[UNCERTAIN],
    )
