"""Reads of the incident tables (incidents with their history and alerts, as stored: the draft
is the JSON detection wrote) and of the runs that make one series configuration (what detection
compares: baseline, repeats, history)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from monitor.schema import SuiteConfig, validation_problem
from monitor.series import series_config
from monitor.store import models as m
from monitor.store.errors import NotFound, UnreadableRun
from monitor.store.models import CONFIRMATION, DISCOVERY
from monitor.store.queries import version_key
from monitor.store.views import view_of

OPEN_STATUSES = (m.IncidentStatus.NEW, m.IncidentStatus.INVESTIGATING)


@dataclass(frozen=True)
class StoredRun:
    """A succeeded run as detection sees it: its release and series configuration."""

    run_id: int
    release_id: int
    package: str
    version: str
    model: str
    device: str
    series_config: str
    requested_by: str | None
    finished_at: datetime | None


@dataclass(frozen=True)
class IncidentView:
    """One incident as lists show it."""

    id: int
    package: str
    version: str
    model: str
    device: str
    severity: str
    status: str
    owner: str | None
    confirmation: str
    probes: list[str]
    metrics: list[str]
    n_findings: int
    candidate_run_id: int
    baseline_release: str | None
    baseline_run_id: int | None
    confirmation_run_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def release(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class IncidentEventView:
    at: datetime
    by: str
    from_status: str | None
    to_status: str
    owner: str | None
    note: str


@dataclass(frozen=True)
class AlertView:
    id: int
    target_index: int
    state: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    sent_at: datetime | None
    title: str


@dataclass(frozen=True)
class IncidentDetail:
    """An incident with its draft as stored (findings, numbers, tokens), history and alerts."""

    incident: IncidentView
    draft: dict[str, Any]
    events: list[IncidentEventView]
    alerts: list[AlertView]


def incident_view(row: m.IncidentRow) -> IncidentView:
    draft = row.draft
    return view_of(
        IncidentView,
        row,
        package=row.engine_package,
        status=str(row.status),
        confirmation=str(row.confirmation),
        probes=list(draft.get("probes", [])),
        metrics=list(draft.get("metrics", [])),
        n_findings=len(draft.get("findings", [])),
        baseline_release=draft.get("baseline_release"),
    )


def list_incidents(
    session: Session,
    *,
    status: Sequence[str] = (),
    package: str | None = None,
    version: str | None = None,
    open_only: bool = False,
    limit: int = 200,
) -> list[IncidentView]:
    """Incidents, newest release first (PEP 440 order), filtered; `open_only`: new or
    investigating and not refuted by their confirmation run."""
    query = select(m.IncidentRow)
    if status:
        query = query.where(m.IncidentRow.status.in_([m.IncidentStatus(s) for s in status]))
    if open_only:
        query = query.where(
            m.IncidentRow.status.in_(OPEN_STATUSES),
            m.IncidentRow.confirmation != m.Confirmation.NOT_CONFIRMED,
        )
    if package:
        query = query.where(m.IncidentRow.engine_package == package)
    rows = [incident_view(row) for row in session.scalars(query)]
    if version:
        rows = [row for row in rows if version_key(row.version) == version_key(version)]
    rows.sort(key=lambda r: (r.package, version_key(r.version), r.id), reverse=True)
    return rows[:limit]


def incident_detail(session: Session, incident_id: int) -> IncidentDetail:
    row = session.get(m.IncidentRow, incident_id)
    if row is None:
        raise NotFound(f"no incident {incident_id} in the store")
    events = session.scalars(
        select(m.IncidentEventRow)
        .where(m.IncidentEventRow.incident_id == incident_id)
        .order_by(m.IncidentEventRow.id)
    )
    alerts = session.scalars(
        select(m.AlertRow)
        .where(m.AlertRow.incident_id == incident_id)
        .order_by(m.AlertRow.target_index)
    )
    return IncidentDetail(
        incident=incident_view(row),
        draft=dict(row.draft),
        events=[view_of(IncidentEventView, event) for event in events],
        alerts=[view_of(AlertView, alert, state=str(alert.state)) for alert in alerts],
    )


def incident_series(session: Session, package: str) -> list[tuple[int, str, str, str, list[str]]]:
    """(id, version, severity, status, regressed "probe/arm/metric" series) of every incident of
    `package`: what the trend charts mark."""
    rows = session.scalars(
        select(m.IncidentRow)
        .where(m.IncidentRow.engine_package == package)
        .order_by(m.IncidentRow.id)
    )
    return [
        (
            row.id,
            row.version,
            row.severity,
            str(row.status),
            sorted(
                {
                    f"{f['probe']}/{f['arm']}/{f['metric']}"
                    for f in row.draft.get("findings", [])
                    if f.get("severity") != "info"
                }
            ),
        )
        for row in rows
    ]


def stored_run(session: Session, run_id: int) -> StoredRun:
    """A run's release and series configuration; NotFound when there is no such run,
    UnreadableRun when its stored config does not validate."""
    row = session.execute(
        select(m.RunRow, m.ReleaseRow, m.ModelRow.fingerprint, m.EnvironmentRow.device)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .outerjoin(m.ModelRow, m.ModelRow.id == m.RunRow.model_id)
        .outerjoin(m.EnvironmentRow, m.EnvironmentRow.id == m.RunRow.environment_id)
        .where(m.RunRow.id == run_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no run {run_id} in the store")
    run, release, model, device = row
    try:
        config = SuiteConfig.model_validate(run.config)
    except ValidationError as exc:
        problem = validation_problem(exc)
        raise UnreadableRun(f"run {run_id}'s stored config is not valid: {problem}") from None
    return _stored(run, release, model or "", device or "", config)


def _config(run: m.RunRow) -> SuiteConfig | None:
    try:
        return SuiteConfig.model_validate(run.config)
    except ValidationError:
        return None


def _stored(
    run: m.RunRow, release: m.ReleaseRow, model: str, device: str, config: SuiteConfig
) -> StoredRun:
    return StoredRun(
        run_id=run.id,
        release_id=release.id,
        package=release.package,
        version=release.version,
        model=model,
        device=device,
        series_config=series_config(config, model, device),
        requested_by=run.requested_by,
        finished_at=run.finished_at,
    )


def _readable(rows: Sequence[Any]) -> list[StoredRun]:
    """(run, release, model, device) rows as StoredRuns, leaving out runs whose stored config
    does not validate: they belong to no series configuration (judging one says why)."""
    found = []
    for run, release, model, device in rows:
        config = _config(run)
        if config is not None:
            found.append(_stored(run, release, model, device, config))
    return found


def series_runs(session: Session, package: str, config: str) -> list[StoredRun]:
    """Succeeded runs of `package` in one series configuration, oldest release first, runs of
    one release oldest first."""
    rows = session.execute(
        select(m.RunRow, m.ReleaseRow, m.ModelRow.fingerprint, m.EnvironmentRow.device)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .join(m.ModelRow, m.ModelRow.id == m.RunRow.model_id)
        .join(m.EnvironmentRow, m.EnvironmentRow.id == m.RunRow.environment_id)
        .where(m.ReleaseRow.package == package, m.RunRow.status == m.RunStatus.SUCCEEDED)
    ).all()
    runs = _readable(rows)
    kept = [run for run in runs if run.series_config == config]
    kept.sort(key=lambda r: (version_key(r.version), _time(r.finished_at), r.run_id))
    return kept


def _time(moment: datetime | None) -> datetime:
    return moment or datetime.min.replace(tzinfo=UTC)


def release_incidents(session: Session, config: str) -> dict[int, m.IncidentRow]:
    """The incident of each release in one series configuration, by release id."""
    rows = session.scalars(select(m.IncidentRow).where(m.IncidentRow.series_config == config))
    return {row.release_id: row for row in rows}


def arm_metric_values(
    session: Session, run_ids: Sequence[int]
) -> dict[int, dict[tuple[str, str, str], float]]:
    """run id -> {(probe, arm, metric): value} of applicable arms."""
    values: dict[int, dict[tuple[str, str, str], float]] = defaultdict(dict)
    if not run_ids:
        return values
    rows = session.execute(
        select(
            m.MetricRow.run_id, m.ArmRow.probe, m.ArmRow.arm, m.MetricRow.name, m.MetricRow.value
        )
        .join(m.ArmRow, m.ArmRow.id == m.MetricRow.arm_result_id)
        .where(m.MetricRow.run_id.in_(list(run_ids)), m.ArmRow.applicable.is_(True))
    )
    for run_id, probe, arm, name, value in rows:
        values[run_id][probe, arm, name] = value
    return values


def release_runs(session: Session, package: str, version: str | None) -> list[StoredRun]:
    """The newest succeeded full run (not a confirmation re-run) of each series configuration
    of one release; with no version, of the newest release that has one."""
    rows = session.execute(
        select(m.RunRow, m.ReleaseRow, m.ModelRow.fingerprint, m.EnvironmentRow.device)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .join(m.ModelRow, m.ModelRow.id == m.RunRow.model_id)
        .join(m.EnvironmentRow, m.EnvironmentRow.id == m.RunRow.environment_id)
        .where(
            m.ReleaseRow.package == package,
            m.RunRow.status == m.RunStatus.SUCCEEDED,
            or_(m.RunRow.requested_by.is_(None), m.RunRow.requested_by != CONFIRMATION),
        )
    ).all()
    runs = _readable(rows)
    if version is None and runs:
        version = max((r.version for r in runs), key=version_key)
    wanted = [
        r for r in runs if version is not None and version_key(r.version) == version_key(version)
    ]
    wanted.sort(key=lambda r: (_time(r.finished_at), r.run_id))
    newest = {r.series_config: r for r in wanted}
    return sorted(newest.values(), key=lambda r: r.run_id)


def overdue_discovered_runs(session: Session, seen_before: datetime) -> list[int]:
    """The newest discovery run of each release first seen before `seen_before` that has no
    succeeded run at all: releases discovery asked for that nobody could measure."""
    measured = select(m.RunRow.release_id).where(m.RunRow.status == m.RunStatus.SUCCEEDED)
    rows = session.execute(
        select(m.RunRow.release_id, func.max(m.RunRow.id))
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .where(
            m.RunRow.requested_by == DISCOVERY,
            m.ReleaseRow.first_seen_at < seen_before,
            m.RunRow.release_id.not_in(measured),
        )
        .group_by(m.RunRow.release_id)
    )
    return sorted(run_id for _, run_id in rows)
