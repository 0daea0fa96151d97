"""An incident's life as detection drives it: opened from a regressed run's draft (with one
confirmation re-run of the failing probes queued), updated by later runs of its release,
confirmed or not by its confirmation run (a confirmation writes the alerts in the same
transaction), and every step recorded as an event."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.detection.findings import SEVERITY_RANK, IncidentDraft, merge_drafts, regressed_series
from monitor.incidents.outbox import write_outbox
from monitor.requests import rerun_config
from monitor.schema import SuiteConfig
from monitor.store import models as m
from monitor.store.incident_reads import StoredRun
from monitor.store.models import CONFIRMATION, Confirmation, IncidentStatus, utcnow
from monitor.store.queue import insert_run, run_with_config

DETECTION = "detection"
"""`by` of the events detection itself records."""
Action = Literal[
    "skipped", "clean", "opened", "updated", "unchanged", "confirmed", "not_confirmed", "waiting"
]


def record_event(
    session: Session,
    incident: m.IncidentRow,
    to_status: str,
    note: str,
    *,
    by: str = DETECTION,
    from_status: str | None = None,
    owner: str | None = None,
) -> None:
    session.add(
        m.IncidentEventRow(
            incident_id=incident.id,
            at=utcnow(),
            by=by,
            from_status=from_status,
            to_status=to_status,
            owner=owner,
            note=note,
        )
    )


CLOSED = frozenset({IncidentStatus.INTENDED, IncidentStatus.FALSE_POSITIVE, IncidentStatus.FIXED})


def unmeasured(draft: IncidentDraft) -> bool:
    """Whether a draft says its release could not be measured at all (no arm to re-run)."""
    return any(f.kind == "unmeasured" for f in draft.findings)


def _queue_confirmation(
    session: Session, run: StoredRun, draft: IncidentDraft, settings: Settings
) -> int:
    """Queue one re-run with the candidate's suite config: of the failing probes, or of the
    whole run when the release could not be measured (a run of that config already waiting
    serves; else one by the same requester, so a re-run that succeeds is judged as a run of
    its own)."""
    candidate = SuiteConfig.model_validate(session.get_one(m.RunRow, run.run_id).config)
    if unmeasured(draft):
        for status in (m.RunStatus.RUNNING, m.RunStatus.QUEUED):
            waiting = run_with_config(session, candidate, status=status)
            if waiting is not None:
                return waiting
        return insert_run(session, candidate, settings.runner, requested_by=run.requested_by)
    config = rerun_config(candidate, draft.probes)
    return insert_run(session, config, settings.runner, requested_by=CONFIRMATION)


def _needs_confirmation_run(session: Session, incident: m.IncidentRow) -> bool:
    """A pending incident whose confirmation run is gone or ended without a result."""
    if incident.confirmation != Confirmation.PENDING:
        return False
    if incident.confirmation_run_id is None:
        return True
    status = session.scalar(
        select(m.RunRow.status).where(m.RunRow.id == incident.confirmation_run_id)
    )
    return status in (m.RunStatus.FAILED, m.RunStatus.TIMED_OUT, m.RunStatus.CANCELLED)


def _new_incident(
    session: Session, run: StoredRun, draft: IncidentDraft, confirmation: Confirmation
) -> m.IncidentRow:
    now = utcnow()
    incident = m.IncidentRow(
        release_id=run.release_id,
        engine_package=run.package,
        version=run.version,
        series_config=run.series_config,
        model=run.model,
        device=run.device,
        severity=draft.severity,
        status=IncidentStatus.NEW,
        draft=draft.model_dump(mode="json"),
        baseline_run_id=int(draft.baseline_run_id) if draft.baseline_run_id else None,
        candidate_run_id=run.run_id,
        confirmation=confirmation,
        created_at=now,
        updated_at=now,
    )
    session.add(incident)
    session.flush()
    return incident


def _held_incident(session: Session, run: StoredRun) -> m.IncidentRow | None:
    """The incident of the run's release and series configuration, locked for this change."""
    return session.scalars(
        select(m.IncidentRow)
        .where(
            m.IncidentRow.release_id == run.release_id,
            m.IncidentRow.series_config == run.series_config,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()


def open_confirmed(
    session: Session, run: StoredRun, draft: IncidentDraft, settings: Settings
) -> int:
    """An incident that needs no re-run to be believed (a release still unmeasured after the
    wait): opened confirmed with its alerts written, or the draft merged into the held one."""
    incident = _held_incident(session, run)
    if incident is not None:
        take_findings(session, incident, run, draft, settings)
        return incident.id
    incident = _new_incident(session, run, draft, Confirmation.CONFIRMED)
    sent = write_outbox(session, incident, draft, settings)
    record_event(
        session,
        incident,
        IncidentStatus.NEW,
        f"opened and confirmed: {draft.findings[0].detail}; {sent} alert(s) queued",
    )
    return incident.id


def open_or_update(
    session: Session, run: StoredRun, draft: IncidentDraft, settings: Settings
) -> tuple[Action, m.IncidentRow]:
    """The incident of the run's release and series configuration: opened (its confirmation
    run queued), or taking this judgement's findings (see `take_findings`)."""
    incident = _held_incident(session, run)
    if incident is None:
        incident = _new_incident(session, run, draft, Confirmation.PENDING)
        incident.confirmation_run_id = _queue_confirmation(session, run, draft, settings)
        record_event(
            session,
            incident,
            IncidentStatus.NEW,
            f"opened from run {run.run_id} ({draft.severity}); confirmation run "
            f"{incident.confirmation_run_id} queued for {', '.join(draft.probes)}",
        )
        return "opened", incident
    action = take_findings(session, incident, run, draft, settings)
    if _needs_confirmation_run(session, incident):
        incident.confirmation_run_id = _queue_confirmation(session, run, draft, settings)
        record_event(
            session,
            incident,
            incident.status,
            f"confirmation run {incident.confirmation_run_id} queued again",
        )
        action = "updated"
    return action, incident


def take_findings(
    session: Session,
    incident: m.IncidentRow,
    run: StoredRun,
    draft: IncidentDraft,
    settings: Settings,
) -> Action:
    """Merge a later judgement of the incident's release into it. New regressed series reopen
    a closed incident and send an unconfirmed one back to confirmation; a confirmed incident
    whose severity rises is alerted again, once per severity reached."""
    held = IncidentDraft.model_validate(incident.draft)
    merged = merge_drafts(held, draft)
    if merged == held:
        return "unchanged"
    new_series = sorted(regressed_series(merged) - regressed_series(held))
    rose = SEVERITY_RANK[merged.severity] > SEVERITY_RANK[incident.severity]
    incident.draft = merged.model_dump(mode="json")
    incident.severity = merged.severity
    incident.candidate_run_id = run.run_id
    incident.baseline_run_id = int(draft.baseline_run_id) if draft.baseline_run_id else None
    incident.updated_at = utcnow()
    note = f"findings updated from run {run.run_id} ({merged.severity})"
    if new_series:
        note += f"; new: {', '.join(new_series)}"
    from_status = incident.status
    if new_series and incident.status in CLOSED:
        incident.status = IncidentStatus.NEW
        note += f"; reopened (was {from_status})"
    if new_series and incident.confirmation == Confirmation.NOT_CONFIRMED:
        incident.confirmation = Confirmation.PENDING
        incident.confirmation_run_id = _queue_confirmation(session, run, merged, settings)
        note += f"; confirmation run {incident.confirmation_run_id} queued"
    elif rose and incident.confirmation == Confirmation.CONFIRMED:
        sent = write_outbox(session, incident, merged, settings)
        note += f"; severity rose to {merged.severity}, {sent} alert(s) queued"
    record_event(session, incident, incident.status, note, from_status=from_status)
    return "updated"


def confirmation_failed(session: Session, incident_id: int, run_id: int, status: str) -> None:
    """The confirmation run ended without a result: the incident stays pending."""
    incident = session.get_one(m.IncidentRow, incident_id, with_for_update=True)
    record_event(
        session,
        incident,
        incident.status,
        f"confirmation run {run_id} ended {status} without a result",
    )


def settle_confirmation(
    session: Session,
    incident_id: int,
    run_id: int,
    reproduced: list[str],
    draft: IncidentDraft,
    settings: Settings,
) -> Action:
    """Confirm the incident (and write its alerts) when its confirmation run reproduced some
    regressed series, else mark it not confirmed; unchanged when it was settled already."""
    return _settle(
        session,
        incident_id,
        draft,
        settings,
        confirmed=f"confirmed by run {run_id}: {', '.join(reproduced)} regressed again"
        if reproduced
        else None,
        refuted=f"not confirmed: run {run_id} did not reproduce any regressed series",
    )


def settle_unmeasured(
    session: Session,
    incident_id: int,
    run_id: int,
    status: str,
    draft: IncidentDraft,
    settings: Settings,
) -> Action:
    """The re-run of a release that could not be measured: ending without a result again
    confirms the incident (and writes its alerts); a succeeded re-run refutes it."""
    return _settle(
        session,
        incident_id,
        draft,
        settings,
        confirmed=f"confirmed by run {run_id}: it ended {status} too"
        if status != m.RunStatus.SUCCEEDED
        else None,
        refuted=f"not confirmed: run {run_id} measured the release",
    )


def _settle(
    session: Session,
    incident_id: int,
    draft: IncidentDraft,
    settings: Settings,
    *,
    confirmed: str | None,
    refuted: str,
) -> Action:
    """Confirm a pending incident with the note `confirmed` (and write its alerts), or refute
    it with `refuted` when `confirmed` is None; unchanged when it was settled already."""
    incident = session.get_one(
        m.IncidentRow, incident_id, with_for_update=True, populate_existing=True
    )
    if incident.confirmation != Confirmation.PENDING:
        return "unchanged"
    incident.updated_at = utcnow()
    action: Action
    if confirmed is not None:
        incident.confirmation = Confirmation.CONFIRMED
        sent = write_outbox(session, incident, draft, settings)
        note, action = f"{confirmed}; {sent} alert(s) queued", "confirmed"
    else:
        incident.confirmation = Confirmation.NOT_CONFIRMED
        note, action = refuted, "not_confirmed"
    record_event(session, incident, incident.status, note)
    return action
