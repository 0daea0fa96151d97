"""Detection in the store: after a run succeeds (and on demand), judge its release against the
series' baseline with monitor.detection and keep one incident per release and series
configuration. A new incident does not alert at once: its failing probes are queued for one
confirmation run, and only when that run reproduces a finding is the incident confirmed and its
alerts written to the outbox, in the same transaction. Triage records who changed what and
when; an "intended" release becomes the series' baseline."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.detection.baseline import ReleaseState, ReleaseStatus, choose_baseline
from monitor.detection.detect import (
    DetectionPolicy,
    RunInput,
    detect_release,
    evaluate_release,
    series_key,
)
from monitor.detection.errors import DetectionError
from monitor.detection.incidents import SEVERITY_RANK, Finding, IncidentDraft
from monitor.detection.render import render_alert
from monitor.schema import SuiteResult
from monitor.store import models as m
from monitor.store.db import Store
from monitor.store.errors import NotFound, StoreError
from monitor.store.incident_queries import (
    CONFIRMATION,
    MAX_REPEATS,
    IncidentView,
    StoredRun,
    arm_metric_values,
    incident_view,
    release_incidents,
    series_runs,
    stored_result,
    stored_run,
)
from monitor.store.jobs import queue_run
from monitor.store.models import Confirmation, IncidentStatus, utcnow
from monitor.store.queries import version_key

logger = logging.getLogger(__name__)
WRITE_TRIES = 2
MAX_NAME = 255
MAX_NOTE = 4000
TITLE_LENGTH = 255
DETECTION = "detection"
"""`by` of the events detection itself records."""
Action = Literal[
    "skipped", "clean", "opened", "updated", "unchanged", "confirmed", "not_confirmed", "waiting"
]


class IncidentError(StoreError):
    """Bad triage input or an incident the store does not hold (one line naming the problem)."""


@dataclass(frozen=True)
class DetectionOutcome:
    """What detecting one run did: the action taken, the incident and its draft (None when
    nothing regressed), the findings judged and the runs involved."""

    run_id: int
    release: str
    action: Action
    incident_id: int | None = None
    draft: IncidentDraft | None = None
    findings: list[Finding] = field(default_factory=list)
    baseline_run_id: int | None = None
    confirmation_run_id: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Inputs:
    """Everything detection needs for one run, read from the store."""

    candidate: RunInput
    baseline: RunInput | None
    repeats: list[SuiteResult]
    history: dict[str, list[float]]


def release_state(incident: m.Incident | None) -> ReleaseStatus:
    """How a release of the series counts for the baseline choice: intended releases are the new
    reference, refuted and false-positive incidents leave it good, open or fixed ones failing."""
    if incident is None or incident.status == IncidentStatus.FALSE_POSITIVE:
        return "good"
    if incident.status == IncidentStatus.INTENDED:
        return "intended"
    if incident.confirmation == Confirmation.NOT_CONFIRMED:
        return "good"
    return "failing"


def _representatives(runs: Sequence[StoredRun]) -> dict[str, StoredRun]:
    """The newest full run (not a confirmation re-run) of each release, by version."""
    chosen: dict[str, StoredRun] = {}
    for run in runs:
        if run.requested_by != CONFIRMATION:
            chosen[run.version] = run
    return chosen


def _results(session: Session, run_ids: Sequence[int]) -> dict[int, SuiteResult]:
    return {run_id: stored_result(session, run_id) for run_id in dict.fromkeys(run_ids)}


def detection_inputs(
    session: Session,
    run: StoredRun,
    policy: DetectionPolicy,
    *,
    baseline_run_id: int | None = None,
    choose: bool = True,
) -> Inputs:
    """The candidate, its baseline (chosen, or the given run), repeat runs for the noise floor
    (the baseline release's, else the candidate release's) and earlier releases' values."""
    runs = series_runs(session, run.package, run.series_config)
    releases = _representatives(runs)
    if choose:
        incidents = release_incidents(session, run.series_config)
        states = [
            ReleaseState(version, release_state(incidents.get(each.release_id)))
            for version, each in releases.items()
            if version != run.version
        ]
        version = choose_baseline(states, run.version)
        baseline_run_id = releases[version].run_id if version is not None else None
    base = next((r for r in runs if r.run_id == baseline_run_id), None)
    repeats = [r.run_id for r in runs if base is not None and r.version == base.version]
    if len(repeats) < 2:
        repeats = [r.run_id for r in runs if r.version == run.version]
    repeats = repeats[-MAX_REPEATS:] if len(repeats) >= 2 else []
    target = [v for v in releases if v != run.version]
    earlier = [releases[v].run_id for v in target if _before(v, run.version)]
    values = arm_metric_values(session, earlier)
    history: dict[str, list[float]] = {}
    for run_id in earlier:
        for key, value in values[run_id].items():
            if key.rsplit("/", 1)[1] in policy.metrics:
                history.setdefault(key, []).append(value)
    loaded = _results(session, [run.run_id, *([base.run_id] if base else []), *repeats])
    return Inputs(
        candidate=RunInput(run.version, str(run.run_id), loaded[run.run_id]),
        baseline=RunInput(base.version, str(base.run_id), loaded[base.run_id]) if base else None,
        repeats=[loaded[run_id] for run_id in repeats],
        history=history,
    )


def _before(version: str, candidate: str) -> bool:
    return version_key(version) < version_key(candidate)


def _event(
    session: Session,
    incident: m.Incident,
    to_status: str,
    note: str,
    *,
    by: str = DETECTION,
    from_status: str | None = None,
    owner: str | None = None,
) -> None:
    session.add(
        m.IncidentEvent(
            incident_id=incident.id,
            at=utcnow(),
            by=by,
            from_status=from_status,
            to_status=to_status,
            owner=owner,
            note=note,
        )
    )


def _queue_confirmation(
    session: Session, run: StoredRun, draft: IncidentDraft, settings: Settings
) -> int:
    """Queue one re-run of the release's failing probes with the candidate's suite config."""
    candidate = session.get_one(m.Run, run.run_id)
    config = dict(candidate.config)
    config["probes"] = list(draft.probes)
    return queue_run(
        session, run.package, run.version, config, settings.runner, requested_by=CONFIRMATION
    )


def _needs_confirmation_run(session: Session, incident: m.Incident) -> bool:
    """A pending incident whose confirmation run is gone or ended without a result."""
    if incident.confirmation != Confirmation.PENDING:
        return False
    if incident.confirmation_run_id is None:
        return True
    status = session.scalar(select(m.Run.status).where(m.Run.id == incident.confirmation_run_id))
    return status in (m.RunStatus.FAILED, m.RunStatus.TIMED_OUT, m.RunStatus.CANCELLED)


def _record(
    session: Session, run: StoredRun, draft: IncidentDraft, settings: Settings
) -> tuple[Action, m.Incident]:
    incident = session.scalars(
        select(m.Incident)
        .where(
            m.Incident.release_id == run.release_id,
            m.Incident.series_config == run.series_config,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    baseline = int(draft.baseline_run_id) if draft.baseline_run_id else None
    if incident is None:
        now = utcnow()
        incident = m.Incident(
            release_id=run.release_id,
            engine_package=run.package,
            version=run.version,
            series_config=run.series_config,
            model=run.model,
            device=run.device,
            severity=draft.severity,
            status=IncidentStatus.NEW,
            draft=draft.model_dump(mode="json"),
            baseline_run_id=baseline,
            candidate_run_id=run.run_id,
            confirmation=Confirmation.PENDING,
            created_at=now,
            updated_at=now,
        )
        session.add(incident)
        session.flush()
        incident.confirmation_run_id = _queue_confirmation(session, run, draft, settings)
        _event(
            session,
            incident,
            IncidentStatus.NEW,
            f"opened from run {run.run_id} ({draft.severity}); confirmation run "
            f"{incident.confirmation_run_id} queued for {', '.join(draft.probes)}",
        )
        return "opened", incident
    action: Action = "unchanged"
    if incident.candidate_run_id != run.run_id:
        incident.draft = draft.model_dump(mode="json")
        incident.severity = draft.severity
        incident.candidate_run_id = run.run_id
        incident.baseline_run_id = baseline
        incident.updated_at = utcnow()
        _event(
            session,
            incident,
            incident.status,
            f"findings updated from run {run.run_id} ({draft.severity})",
        )
        action = "updated"
    if _needs_confirmation_run(session, incident):
        incident.confirmation_run_id = _queue_confirmation(session, run, draft, settings)
        _event(
            session,
            incident,
            incident.status,
            f"confirmation run {incident.confirmation_run_id} queued again",
        )
        action = "updated"
    return action, incident


def detect_and_record(
    store: Store, run_id: int, settings: Settings, *, policy: DetectionPolicy | None = None
) -> DetectionOutcome:
    """Judge a succeeded run's release and record the result once: a new incident (with its
    confirmation run queued), an updated one, or nothing. Running it twice for one run changes
    nothing the second time. A confirmation run is judged as a confirmation instead."""
    policy = policy or DetectionPolicy()
    with store.reading() as session:
        run = stored_run(session, run_id)
        status = session.scalar(select(m.Run.status).where(m.Run.id == run_id))
    if run.requested_by == CONFIRMATION:
        return confirm(store, run_id, settings, policy=policy)
    release = f"{run.package}=={run.version}"
    if status != m.RunStatus.SUCCEEDED:
        return DetectionOutcome(run_id, release, "skipped", reason=f"run is {status}")
    with store.reading() as session:
        inputs = detection_inputs(session, run, policy)
    draft = detect_release(
        inputs.candidate,
        inputs.baseline,
        repeats=inputs.repeats,
        history=inputs.history,
        overrides=settings.tolerances,
        policy=policy,
    )
    baseline_id = int(inputs.baseline.run_id) if inputs.baseline else None
    if draft is None:
        return DetectionOutcome(run_id, release, "clean", baseline_run_id=baseline_id)
    for attempt in range(1, WRITE_TRIES + 1):
        try:
            with store.writing() as session:
                action, incident = _record(session, run, draft, settings)
                return DetectionOutcome(
                    run_id,
                    release,
                    action,
                    incident.id,
                    draft,
                    list(draft.findings),
                    baseline_id,
                    incident.confirmation_run_id,
                )
        except IntegrityError:
            if attempt == WRITE_TRIES:
                raise
    raise AssertionError("unreachable")


def _series(findings: Sequence[Finding]) -> set[str]:
    return {series_key(f.probe, f.arm, f.metric) for f in findings if SEVERITY_RANK[f.severity] > 0}


def target_hash(url: str) -> str:
    """The outbox's name for an alert target: the Apprise URL's sha256 (URLs hold secrets)."""
    return hashlib.sha256(url.strip().encode()).hexdigest()


def alert_message(
    incident_id: int, draft: IncidentDraft, confirmation_run_id: int, dashboard_url: str
) -> tuple[str, str]:
    """(title, body) of a confirmed incident's alert: the rendered draft, the confirmation and a
    link to the incident's page."""
    title, body = render_alert(draft, dashboard_url)
    base = dashboard_url.strip().rstrip("/")
    body += (
        f"\nConfirmed by run {confirmation_run_id} (a re-run of {', '.join(draft.probes)})."
        f"\nIncident {incident_id}: {base}/incidents?incident={incident_id}"
    )
    return title[:TITLE_LENGTH], body


def write_outbox(
    session: Session, incident: m.Incident, draft: IncidentDraft, settings: Settings
) -> int:
    """One pending alert per configured target not yet alerted for this incident; returns how
    many were written. Called inside the transaction that confirms the incident."""
    assert incident.confirmation_run_id is not None
    title, body = alert_message(
        incident.id, draft, incident.confirmation_run_id, settings.dashboard_url
    )
    existing = set(
        session.scalars(select(m.Alert.target_hash).where(m.Alert.incident_id == incident.id))
    )
    written = 0
    for index, url in enumerate(settings.alert_urls):
        digest = target_hash(url)
        if digest in existing:
            continue
        existing.add(digest)
        session.add(
            m.Alert(
                incident_id=incident.id,
                target_index=index,
                target_hash=digest,
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


def confirm(
    store: Store, run_id: int, settings: Settings, *, policy: DetectionPolicy | None = None
) -> DetectionOutcome:
    """Judge a confirmation run: when it reproduces a regressed series of its incident (against
    the incident's baseline), confirm the incident and write its alerts in one transaction;
    otherwise mark it not confirmed. A confirmation run that failed leaves it pending (the next
    `parity detect` of the release queues another)."""
    policy = policy or DetectionPolicy()
    with store.reading() as session:
        run = stored_run(session, run_id)
        release = f"{run.package}=={run.version}"
        row = session.scalars(
            select(m.Incident).where(m.Incident.confirmation_run_id == run_id)
        ).one_or_none()
        if row is None:
            return DetectionOutcome(run_id, release, "skipped", reason="confirms no incident")
        incident_id, baseline_run_id = row.id, row.baseline_run_id
        draft = IncidentDraft.model_validate(row.draft)
        if row.confirmation != Confirmation.PENDING:
            return DetectionOutcome(run_id, release, "unchanged", incident_id, draft)
        status = session.scalar(select(m.Run.status).where(m.Run.id == run_id))
        inputs = None
        if status == m.RunStatus.SUCCEEDED:
            inputs = detection_inputs(
                session, run, policy, baseline_run_id=baseline_run_id, choose=False
            )
    if inputs is None:
        with store.writing() as session:
            incident = session.get_one(m.Incident, incident_id, with_for_update=True)
            _event(
                session,
                incident,
                incident.status,
                f"confirmation run {run_id} ended {status} without a result",
            )
        return DetectionOutcome(run_id, release, "waiting", incident_id, draft)
    findings = evaluate_release(
        inputs.candidate,
        inputs.baseline,
        repeats=inputs.repeats,
        history=inputs.history,
        overrides=settings.tolerances,
        policy=policy,
    )
    held = sorted(_series(findings) & _series(draft.findings))
    with store.writing() as session:
        incident = session.get_one(
            m.Incident, incident_id, with_for_update=True, populate_existing=True
        )
        if incident.confirmation != Confirmation.PENDING:
            return DetectionOutcome(run_id, release, "unchanged", incident_id, draft)
        incident.updated_at = utcnow()
        if held:
            incident.confirmation = Confirmation.CONFIRMED
            sent = write_outbox(session, incident, draft, settings)
            note = f"confirmed by run {run_id}: {', '.join(held)} regressed again"
            note += f"; {sent} alert(s) queued"
            action: Action = "confirmed"
        else:
            incident.confirmation = Confirmation.NOT_CONFIRMED
            note = f"not confirmed: run {run_id} did not reproduce any regressed series"
            action = "not_confirmed"
        _event(session, incident, incident.status, note)
    return DetectionOutcome(
        run_id,
        release,
        action,
        incident_id,
        draft,
        findings,
        baseline_run_id,
        run_id,
    )


def _checked_name(value: str | None, what: str, *, required: bool) -> str | None:
    if value is None or not value.strip():
        if required:
            raise IncidentError(f"{what} must not be empty")
        return None
    text = value.strip()
    if len(text) > MAX_NAME or "\n" in text:
        raise IncidentError(f"{what} must be one line of at most {MAX_NAME} characters")
    return text


def parse_status(status: str) -> IncidentStatus:
    """A triage status from user input ("false positive" and "false-positive" accepted)."""
    text = status.strip().lower().replace(" ", "_").replace("-", "_")
    try:
        return IncidentStatus(text)
    except ValueError:
        allowed = ", ".join(s.value for s in IncidentStatus)
        raise IncidentError(f"status must be one of {allowed}, not {status!r}") from None


def triage(
    session: Session,
    incident_id: int,
    status: str,
    owner: str | None,
    note: str,
    by: str,
) -> IncidentView:
    """Set an incident's status (and owner, when given) and record who did it, when, from which
    status, and why. "intended" makes the release the baseline of later detection."""
    new = parse_status(status)
    who = _checked_name(by, "the triaging user", required=True)
    assigned = _checked_name(owner, "owner", required=False)
    if len(note) > MAX_NOTE:
        raise IncidentError(f"note is {len(note)} characters long (at most {MAX_NOTE})")
    incident = session.get(m.Incident, incident_id, with_for_update=True)
    if incident is None:
        raise IncidentError(f"no incident {incident_id} in the store")
    old = str(incident.status)
    incident.status = new
    if assigned is not None:
        incident.owner = assigned
    incident.updated_at = utcnow()
    session.flush()
    _event(
        session,
        incident,
        new,
        note.strip(),
        by=str(who),
        from_status=old,
        owner=incident.owner,
    )
    session.flush()
    return incident_view(incident)


def detect_after_run(store: Store, run_id: int) -> None:
    """The after-run hook (jobs.hooks.AFTER_RUN): detection for a run that ended, with the
    settings of this process's environment (PARITY_*), as the scheduler and its workers share
    it. Idempotent: a run seen twice records nothing more."""
    settings = Settings()
    try:
        outcome = detect_and_record(store, run_id, settings)
    except (DetectionError, NotFound) as exc:
        logger.warning("detection of run %d: %s", run_id, exc)
        return
    logger.info(
        "detection of run %d (%s): %s%s",
        run_id,
        outcome.release,
        outcome.action,
        f", incident {outcome.incident_id}" if outcome.incident_id else "",
    )
