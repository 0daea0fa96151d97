"""Reads of detection's tables and of what detection needs from the store: incidents with their
history and alerts, a stored run rebuilt as the suite result detection takes, the runs that make
a series configuration (baseline, repeats, history)."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from monitor.detection.incidents import IncidentDraft
from monitor.schema import (
    ArmResult,
    ModelRef,
    PackedArray,
    ProbeResult,
    SuiteConfig,
    SuiteResult,
    TokenTrace,
    Versions,
)
from monitor.series import CONFIG_HASH_IGNORES
from monitor.store import models as m
from monitor.store.errors import NotFound
from monitor.store.queries import run_detail, version_key
from monitor.store.traces import TraceArrays

CONFIRMATION = "confirmation"
"""`requested_by` of the runs that re-run an incident's failing probes."""
SERIES_CONFIG_IGNORES = CONFIG_HASH_IGNORES | {"probes"}
OPEN_STATUSES = (m.IncidentStatus.NEW, m.IncidentStatus.INVESTIGATING)
MAX_REPEATS = 5


def series_config(config: dict[str, Any], model: str, device: str) -> str:
    """What makes runs of different releases comparable: the suite config without the release,
    the prompt file's path and the probe selection, plus the model's fingerprint and the device."""
    kept = {k: v for k, v in config.items() if k not in SERIES_CONFIG_IGNORES}
    text = json.dumps({"config": kept, "model": model, "device": device}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


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
    """An incident with its draft (findings, numbers, tokens), history and alerts."""

    incident: IncidentView
    draft: IncidentDraft
    events: list[IncidentEventView]
    alerts: list[AlertView]


def incident_view(row: m.Incident) -> IncidentView:
    draft = row.draft
    return IncidentView(
        id=row.id,
        package=row.engine_package,
        version=row.version,
        model=row.model,
        device=row.device,
        severity=row.severity,
        status=str(row.status),
        owner=row.owner,
        confirmation=str(row.confirmation),
        probes=list(draft.get("probes", [])),
        metrics=list(draft.get("metrics", [])),
        n_findings=len(draft.get("findings", [])),
        candidate_run_id=row.candidate_run_id,
        baseline_release=draft.get("baseline_release"),
        baseline_run_id=row.baseline_run_id,
        confirmation_run_id=row.confirmation_run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
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
    query = select(m.Incident)
    if status:
        query = query.where(m.Incident.status.in_([m.IncidentStatus(s) for s in status]))
    if open_only:
        query = query.where(
            m.Incident.status.in_(OPEN_STATUSES),
            m.Incident.confirmation != m.Confirmation.NOT_CONFIRMED,
        )
    if package:
        query = query.where(m.Incident.engine_package == package)
    rows = [incident_view(row) for row in session.scalars(query)]
    if version:
        rows = [row for row in rows if version_key(row.version) == version_key(version)]
    rows.sort(key=lambda r: (r.package, version_key(r.version), r.id), reverse=True)
    return rows[:limit]


def incident_detail(session: Session, incident_id: int) -> IncidentDetail:
    row = session.get(m.Incident, incident_id)
    if row is None:
        raise NotFound(f"no incident {incident_id} in the store")
    events = session.scalars(
        select(m.IncidentEvent)
        .where(m.IncidentEvent.incident_id == incident_id)
        .order_by(m.IncidentEvent.id)
    )
    alerts = session.scalars(
        select(m.Alert).where(m.Alert.incident_id == incident_id).order_by(m.Alert.target_index)
    )
    return IncidentDetail(
        incident=incident_view(row),
        draft=IncidentDraft.model_validate(row.draft),
        events=[
            IncidentEventView(e.at, e.by, e.from_status, e.to_status, e.owner, e.note)
            for e in events
        ],
        alerts=[
            AlertView(
                a.id,
                a.target_index,
                str(a.state),
                a.attempts,
                a.next_attempt_at,
                a.last_error,
                a.sent_at,
                a.title,
            )
            for a in alerts
        ],
    )


def incident_series(session: Session, package: str) -> list[tuple[int, str, str, str, list[str]]]:
    """(id, version, severity, status, regressed "probe/arm/metric" series) of every incident of
    `package`: what the trend charts mark."""
    rows = session.scalars(
        select(m.Incident).where(m.Incident.engine_package == package).order_by(m.Incident.id)
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
    """A run's release and series configuration; NotFound when there is no such run."""
    row = session.execute(
        select(m.Run, m.Release, m.Model.fingerprint, m.Environment.device)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .outerjoin(m.Model, m.Model.id == m.Run.model_id)
        .outerjoin(m.Environment, m.Environment.id == m.Run.environment_id)
        .where(m.Run.id == run_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no run {run_id} in the store")
    run, release, model, device = row
    return _stored(run, release, model or "", device or "")


def _stored(run: m.Run, release: m.Release, model: str, device: str) -> StoredRun:
    return StoredRun(
        run_id=run.id,
        release_id=release.id,
        package=release.package,
        version=release.version,
        model=model,
        device=device,
        series_config=series_config(run.config, model, device),
        requested_by=run.requested_by,
        finished_at=run.finished_at,
    )


def series_runs(session: Session, package: str, config: str) -> list[StoredRun]:
    """Succeeded runs of `package` in one series configuration, oldest release first, runs of
    one release oldest first."""
    rows = session.execute(
        select(m.Run, m.Release, m.Model.fingerprint, m.Environment.device)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .join(m.Model, m.Model.id == m.Run.model_id)
        .join(m.Environment, m.Environment.id == m.Run.environment_id)
        .where(m.Release.package == package, m.Run.status == m.RunStatus.SUCCEEDED)
    ).all()
    runs = [_stored(*row) for row in rows]
    kept = [run for run in runs if run.series_config == config]
    kept.sort(key=lambda r: (version_key(r.version), _time(r.finished_at), r.run_id))
    return kept


def _time(moment: datetime | None) -> datetime:
    return moment or datetime.min.replace(tzinfo=UTC)


def release_incidents(session: Session, config: str) -> dict[int, m.Incident]:
    """The incident of each release in one series configuration, by release id."""
    rows = session.scalars(select(m.Incident).where(m.Incident.series_config == config))
    return {row.release_id: row for row in rows}


def arm_metric_values(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """run id -> {"probe/arm/metric": value} of applicable arms."""
    values: dict[int, dict[str, float]] = defaultdict(dict)
    if not run_ids:
        return values
    rows = session.execute(
        select(m.Metric.run_id, m.ArmResult.probe, m.ArmResult.arm, m.Metric.name, m.Metric.value)
        .join(m.ArmResult, m.ArmResult.id == m.Metric.arm_result_id)
        .where(m.Metric.run_id.in_(list(run_ids)), m.ArmResult.applicable.is_(True))
    )
    for run_id, probe, arm, name, value in rows:
        values[run_id][f"{probe}/{arm}/{name}"] = value
    return values


def _packed(trace: TraceArrays) -> TokenTrace:
    return TokenTrace(
        prompt_index=PackedArray.pack(trace.prompt_index, "int32"),
        position=PackedArray.pack(trace.position, "int32"),
        token_id=PackedArray.pack(trace.token_id, "int32"),
        vllm_logprob=PackedArray.pack(trace.vllm_logprob, "float64"),
        reference_logprob=PackedArray.pack(trace.reference_logprob, "float64"),
    )


def stored_result(session: Session, run_id: int) -> SuiteResult:
    """A succeeded stored run rebuilt as the suite result detection takes: config, versions,
    model, and every arm with its metrics and token trace."""
    detail = run_detail(session, run_id, traces=True)
    if detail.status != m.RunStatus.SUCCEEDED:
        raise NotFound(f"run {run_id} is {detail.status}, not succeeded: it has no result")
    env, model = detail.environment, detail.model
    started = detail.started_at or detail.queued_at
    return SuiteResult(
        status="succeeded",
        started_at=started,
        finished_at=detail.finished_at or started,
        config=SuiteConfig.model_validate(detail.config),
        versions=Versions(
            engine_package=env.engine_package,
            vllm=env.vllm,
            torch=env.torch,
            transformers=env.transformers,
            python=env.python,
            platform=env.platform,
            device=env.device,
            monitor=env.monitor,
        )
        if env
        else None,
        model=ModelRef.model_validate(
            {
                "name": model.name,
                "source": model.source,
                "fingerprint": model.fingerprint,
                "architecture": model.architecture,
                "n_parameters": model.n_parameters,
            }
        )
        if model
        else None,
        probes=[
            ProbeResult(
                name=probe.probe,
                description=probe.description,
                finding=probe.finding,
                arms=[
                    ArmResult(
                        probe=arm.probe,
                        arm=arm.arm,
                        description=arm.description,
                        applicable=arm.applicable,
                        reason=arm.reason,
                        gated=arm.gated,
                        metrics=arm.metrics,
                        tokens=_packed(arm.trace) if arm.trace is not None else None,
                    )
                    for arm in probe.arms
                ],
            )
            for probe in detail.probes
        ],
    )


def release_runs(session: Session, package: str, version: str | None) -> list[StoredRun]:
    """The newest succeeded full run (not a confirmation re-run) of each series configuration
    of one release; with no version, of the newest release that has one."""
    rows = session.execute(
        select(m.Run, m.Release, m.Model.fingerprint, m.Environment.device)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .join(m.Model, m.Model.id == m.Run.model_id)
        .join(m.Environment, m.Environment.id == m.Run.environment_id)
        .where(
            m.Release.package == package,
            m.Run.status == m.RunStatus.SUCCEEDED,
            or_(m.Run.requested_by.is_(None), m.Run.requested_by != CONFIRMATION),
        )
    ).all()
    runs = [_stored(*row) for row in rows]
    if version is None and runs:
        version = max((r.version for r in runs), key=version_key)
    wanted = [
        r for r in runs if version is not None and version_key(r.version) == version_key(version)
    ]
    wanted.sort(key=lambda r: (_time(r.finished_at), r.run_id))
    newest = {r.series_config: r for r in wanted}
    return sorted(newest.values(), key=lambda r: r.run_id)
