"""Every read of the results store (CLI, dashboard, detection): the only module with SELECTs.
Releases are ordered by `packaging.version` (0.10.0 after 0.9.0), never as strings; results are
plain dataclasses from `monitor.store.views`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from packaging.version import Version
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from monitor.series import SeriesKey
from monitor.store import models as m
from monitor.store.errors import NotFound
from monitor.store.traces import TRACE_DTYPES, TraceArrays, unpack_trace
from monitor.store.views import (
    ArmView,
    EnvironmentView,
    ExportRow,
    JobView,
    MatrixCell,
    ModelView,
    ProbeView,
    ReleaseInfo,
    RunComparison,
    RunDetail,
    RunSummary,
    SeriesPoint,
    SeriesView,
    StatusMatrix,
    StratumView,
    compare_details,
)

SUCCEEDED = m.RunStatus.SUCCEEDED
SERIES_COLUMNS = tuple(f.name for f in fields(SeriesKey))
EXPORT_BATCH = 2000


def version_key(version: str) -> Version:
    return Version(version)


def _model_filter(model: str) -> Any:
    return or_(m.Model.name == model, m.Model.fingerprint == model)


def list_releases(session: Session, *, package: str | None = None) -> list[ReleaseInfo]:
    """Every known release, oldest version first, with its run count and newest run's status."""
    counts = (
        select(m.Run.release_id, func.count().label("n"), func.max(m.Run.id).label("newest"))
        .group_by(m.Run.release_id)
        .subquery()
    )
    newest = m.Run.__table__.alias("newest_run")
    query = (
        select(m.Release, counts.c.n, newest.c.status)
        .outerjoin(counts, counts.c.release_id == m.Release.id)
        .outerjoin(newest, newest.c.id == counts.c.newest)
    )
    if package:
        query = query.where(m.Release.package == package)
    releases = [
        ReleaseInfo(
            id=release.id,
            package=release.package,
            version=release.version,
            published_at=release.published_at,
            yanked=release.yanked,
            installable=release.installable,
            install_error=release.install_error,
            n_runs=n or 0,
            latest_status=str(status) if status is not None else None,
        )
        for release, n, status in session.execute(query)
    ]
    return sorted(releases, key=lambda r: (r.package, version_key(r.version)))


def list_runs(
    session: Session,
    *,
    package: str | None = None,
    version: str | None = None,
    status: str | None = None,
    model: str | None = None,
    probe: str | None = None,
    limit: int = 50,
) -> list[RunSummary]:
    """Runs, newest first, filtered; each with its arms' verdict counts."""
    query = (
        select(m.Run, m.Release.package, m.Release.version, m.Model.name, m.Environment.device)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .outerjoin(m.Model, m.Model.id == m.Run.model_id)
        .outerjoin(m.Environment, m.Environment.id == m.Run.environment_id)
        .order_by(m.Run.id.desc())
        .limit(limit)
    )
    if package:
        query = query.where(m.Release.package == package)
    if version:
        query = query.where(m.Run.release_id.in_(_releases_at(session, version, package)))
    if status:
        query = query.where(m.Run.status == m.RunStatus(status))
    if model:
        query = query.where(_model_filter(model))
    if probe:
        query = query.where(
            select(m.ProbeResult.id)
            .where(m.ProbeResult.run_id == m.Run.id, m.ProbeResult.probe == probe)
            .exists()
        )
    rows = session.execute(query).all()
    counts = _verdict_counts(session, [row[0].id for row in rows])
    return [
        RunSummary(
            id=run.id,
            package=package_name,
            version=release_version,
            status=str(run.status),
            runner=run.runner,
            attempt=run.attempt,
            model=model_name,
            device=device,
            config_hash=run.config_hash,
            started_at=run.started_at,
            finished_at=run.finished_at,
            n_pass=counts[run.id]["pass"],
            n_fail=counts[run.id]["fail"],
            n_not_applicable=counts[run.id]["n/a"],
            error=run.error,
        )
        for run, package_name, release_version, model_name, device in rows
    ]


def _releases_at(session: Session, version: str, package: str | None) -> list[int]:
    """Ids of the releases whose version equals `version` under PEP 440 (0.32 == 0.32.0)."""
    wanted = Version(version)
    query = select(m.Release.id, m.Release.version)
    if package:
        query = query.where(m.Release.package == package)
    return [id_ for id_, stored in session.execute(query) if Version(stored) == wanted]


def _verdict_counts(session: Session, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = defaultdict(lambda: {"pass": 0, "fail": 0, "n/a": 0})
    if not run_ids:
        return counts
    query = (
        select(m.ArmResult.run_id, m.ArmResult.verdict, func.count())
        .where(m.ArmResult.run_id.in_(run_ids))
        .group_by(m.ArmResult.run_id, m.ArmResult.verdict)
    )
    for run_id, verdict, n in session.execute(query):
        counts[run_id][verdict] = n
    return counts


def _get_run(session: Session, run_id: int) -> tuple[m.Run, m.Release]:
    row = session.execute(
        select(m.Run, m.Release).join(m.Release).where(m.Run.id == run_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no run {run_id} in the store")
    return row[0], row[1]


def _columns_of(row: object, view: type) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in fields(view)}


def run_detail(session: Session, run_id: int, *, traces: bool = True) -> RunDetail:
    """One run with its environment, model, probes, arms, metrics, strata and (unless
    `traces=False`) decoded token traces."""
    run, release = _get_run(session, run_id)
    environment = session.get(m.Environment, run.environment_id) if run.environment_id else None
    model = session.get(m.Model, run.model_id) if run.model_id else None
    arm_rows = session.scalars(
        select(m.ArmResult).where(m.ArmResult.run_id == run_id).order_by(m.ArmResult.id)
    ).all()
    arm_ids = [arm.id for arm in arm_rows]
    metrics: dict[int, dict[str, float]] = defaultdict(dict)
    series: dict[int, dict[str, str]] = defaultdict(dict)
    for arm_id, name, value, digest in session.execute(
        select(m.Metric.arm_result_id, m.Metric.name, m.Metric.value, m.Metric.series_hash)
        .where(m.Metric.run_id == run_id)
        .order_by(m.Metric.id)
    ):
        metrics[arm_id][name] = value
        series[arm_id][name] = digest
    strata: dict[tuple[int, str], list[StratumView]] = defaultdict(list)
    if arm_ids:
        for stratum in session.scalars(
            select(m.Stratum).where(m.Stratum.arm_result_id.in_(arm_ids)).order_by(m.Stratum.id)
        ):
            strata[stratum.arm_result_id, stratum.kind].append(
                StratumView(**_columns_of(stratum, StratumView))
            )
    trace_sizes, decoded = _traces(session, arm_ids, decode=traces)
    arms_by_probe: dict[str, list[ArmView]] = defaultdict(list)
    for arm in arm_rows:
        arms_by_probe[arm.probe].append(
            ArmView(
                probe=arm.probe,
                arm=arm.arm,
                description=arm.description,
                applicable=arm.applicable,
                reason=arm.reason,
                engine_config=arm.engine_config,
                effective_config=arm.effective_config,
                sampling=arm.sampling,
                reference=arm.reference,
                gated=arm.gated,
                verdict=arm.verdict,
                verdict_reasons=arm.verdict_reasons,
                extra=arm.extra,
                metrics=metrics[arm.id],
                series=series[arm.id],
                by_probability=strata[arm.id, "probability"],
                by_position=strata[arm.id, "position"],
                trace_tokens=trace_sizes.get(arm.id, 0),
                trace=decoded.get(arm.id),
            )
        )
    probes = [
        ProbeView(
            probe=probe.probe,
            description=probe.description,
            finding=probe.finding,
            verdict=probe.verdict,
            arms=arms_by_probe[probe.probe],
        )
        for probe in session.scalars(
            select(m.ProbeResult).where(m.ProbeResult.run_id == run_id).order_by(m.ProbeResult.id)
        )
    ]
    return RunDetail(
        id=run.id,
        package=release.package,
        version=release.version,
        status=str(run.status),
        runner=run.runner,
        attempt=run.attempt,
        config=run.config,
        config_hash=run.config_hash,
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        lease_expires_at=run.lease_expires_at,
        error=run.error,
        error_tail=run.error_tail,
        schema_version=run.schema_version,
        environment=EnvironmentView(**_columns_of(environment, EnvironmentView))
        if environment
        else None,
        model=ModelView(**_columns_of(model, ModelView)) if model else None,
        engine_starts=run.engine_starts,
        trainer_forwards=run.trainer_forwards,
        timings=run.timings,
        engines=run.engines,
        probes=probes,
    )


def _traces(
    session: Session, arm_ids: Sequence[int], *, decode: bool
) -> tuple[dict[int, int], dict[int, TraceArrays]]:
    if not arm_ids:
        return {}, {}
    where = m.TokenTrace.arm_result_id.in_(arm_ids)
    if not decode:
        sizes = session.execute(
            select(m.TokenTrace.arm_result_id, m.TokenTrace.n_tokens).where(where)
        )
        return {arm_id: n for arm_id, n in sizes}, {}
    decoded = {
        trace.arm_result_id: _decode(trace)
        for trace in session.scalars(select(m.TokenTrace).where(where))
    }
    return {arm_id: trace.n_tokens for arm_id, trace in decoded.items()}, decoded


def _decode(trace: m.TokenTrace) -> TraceArrays:
    return unpack_trace({name: getattr(trace, name) for name in TRACE_DTYPES}, trace.n_tokens)


def arm_trace(session: Session, run_id: int, probe: str, arm: str) -> TraceArrays:
    """One arm's decoded token trace (for drill-down without loading the whole run)."""
    trace = session.scalars(
        select(m.TokenTrace)
        .join(m.ArmResult, m.ArmResult.id == m.TokenTrace.arm_result_id)
        .where(m.ArmResult.run_id == run_id, m.ArmResult.probe == probe, m.ArmResult.arm == arm)
    ).one_or_none()
    if trace is None:
        raise NotFound(f"run {run_id} has no token trace for {probe}/{arm}")
    return _decode(trace)


def compare_runs(session: Session, a: int, b: int) -> RunComparison:
    """Metric deltas (b − a) per arm and the effective-config differences of two runs."""
    return compare_details(
        run_detail(session, a, traces=False), run_detail(session, b, traces=False)
    )


def _series_key(row: m.Series) -> SeriesKey:
    return SeriesKey(**{name: getattr(row, name) for name in SERIES_COLUMNS})


def series_keys(
    session: Session,
    *,
    probe: str | None = None,
    arm: str | None = None,
    metric: str | None = None,
    model: str | None = None,
) -> list[SeriesKey]:
    """The stored series matching the filters, sorted by probe, arm, metric."""
    query = select(m.Series).order_by(m.Series.probe, m.Series.arm, m.Series.metric)
    for column, value in (
        (m.Series.probe, probe),
        (m.Series.arm, arm),
        (m.Series.metric, metric),
        (m.Series.model, model),
    ):
        if value is not None:
            query = query.where(column == value)
    return [_series_key(row) for row in session.scalars(query)]


def metric_series(
    session: Session,
    key: SeriesKey | str,
    *,
    package: str | None = None,
    latest_per_release: bool = True,
) -> SeriesView:
    """One series' values over releases (ordered by version) from succeeded runs; by default
    only the newest run of each release."""
    digest = key if isinstance(key, str) else key.hash
    row = session.get(m.Series, digest)
    if row is None:
        raise NotFound(f"no series {digest} in the store")
    query = (
        select(
            m.Metric.run_id,
            m.Release.package,
            m.Release.version,
            m.Metric.value,
            m.Run.finished_at,
        )
        .join(m.Run, m.Run.id == m.Metric.run_id)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .where(m.Metric.series_hash == digest, m.Run.status == SUCCEEDED)
    )
    if package:
        query = query.where(m.Release.package == package)
    points = [SeriesPoint(*fields_) for fields_ in session.execute(query)]
    points.sort(
        key=lambda p: (p.package, version_key(p.version), _time_key(p.finished_at), p.run_id)
    )
    if latest_per_release:
        newest = {(p.package, p.version): p for p in points}
        points = list(newest.values())
    return SeriesView(key=_series_key(row), hash=digest, points=points)


def _time_key(moment: datetime | None) -> float:
    return moment.timestamp() if moment else float("-inf")


def status_matrix(
    session: Session,
    *,
    package: str | None = None,
    model: str | None = None,
    config_hash: str | None = None,
) -> StatusMatrix:
    """Every release × every probe seen: the probe verdict of the newest succeeded run."""
    newest = func.row_number().over(
        partition_by=(m.Run.release_id, m.ProbeResult.probe),
        order_by=(m.Run.finished_at.desc().nulls_last(), m.Run.id.desc()),
    )
    ranked = (
        select(
            m.Run.release_id,
            m.ProbeResult.probe,
            m.ProbeResult.verdict,
            m.Run.id.label("run_id"),
            m.Run.finished_at,
            newest.label("rank"),
        )
        .join(m.ProbeResult, m.ProbeResult.run_id == m.Run.id)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .where(m.Run.status == SUCCEEDED)
    )
    if package:
        ranked = ranked.where(m.Release.package == package)
    if model:
        ranked = ranked.join(m.Model, m.Model.id == m.Run.model_id).where(_model_filter(model))
    if config_hash:
        ranked = ranked.where(m.Run.config_hash == config_hash)
    subquery = ranked.subquery()
    cells = {
        (row.release_id, row.probe): MatrixCell(row.verdict, row.run_id, row.finished_at)
        for row in session.execute(select(subquery).where(subquery.c.rank == 1))
    }
    probes = sorted({probe for _, probe in cells})
    return StatusMatrix(
        releases=list_releases(session, package=package), probes=probes, cells=cells
    )


def export_rows(
    session: Session,
    *,
    package: str | None = None,
    probe: str | None = None,
    metric: str | None = None,
    run_ids: Sequence[int] | None = None,
    succeeded_only: bool = True,
) -> Iterator[ExportRow]:
    """Every stored metric value in long format with its series-key columns, streamed."""
    s = m.Series
    columns = {
        "run_id": m.Metric.run_id,
        "package": m.Release.package,
        "version": m.Release.version,
        "finished_at": m.Run.finished_at,
        "value": m.Metric.value,
        "model_name": m.Model.name,
        "series_hash": s.hash,
        **{name: getattr(s, name) for name in SERIES_COLUMNS},
    }
    query = (
        select(*(column.label(name) for name, column in columns.items()))
        .join(m.Run, m.Run.id == m.Metric.run_id)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .join(s, s.hash == m.Metric.series_hash)
        .outerjoin(m.Model, m.Model.id == m.Run.model_id)
        .order_by(m.Metric.id)
    )
    conditions = []
    if package:
        conditions.append(m.Release.package == package)
    if probe:
        conditions.append(s.probe == probe)
    if metric:
        conditions.append(s.metric == metric)
    if run_ids is not None:
        conditions.append(m.Metric.run_id.in_(list(run_ids)))
    if succeeded_only:
        conditions.append(m.Run.status == SUCCEEDED)
    if conditions:
        query = query.where(and_(*conditions))
    for row in session.execute(query.execution_options(yield_per=EXPORT_BATCH)):
        yield ExportRow(**row._asdict())


def table_counts(session: Session) -> dict[str, int]:
    """Rows per store table."""
    return {
        table.name: session.scalar(select(func.count()).select_from(table)) or 0
        for table in m.Base.metadata.sorted_tables
    }


def list_models(session: Session) -> list[ModelView]:
    """Every model that ran, by name then fingerprint (series keys name models by fingerprint)."""
    rows = session.scalars(select(m.Model).order_by(m.Model.name, m.Model.fingerprint))
    return [ModelView(**_columns_of(row, ModelView)) for row in rows]


def list_jobs(session: Session, *, statuses: Sequence[str] = (), limit: int = 100) -> list[JobView]:
    """Runs as the queue sees them (requester, queue and lease times), newest first; only the
    given statuses when some are given."""
    query = (
        select(m.Run, m.Release.package, m.Release.version)
        .join(m.Release, m.Release.id == m.Run.release_id)
        .order_by(m.Run.id.desc())
        .limit(limit)
    )
    if statuses:
        query = query.where(m.Run.status.in_([m.RunStatus(status) for status in statuses]))
    return [
        JobView(
            id=run.id,
            package=package,
            version=version,
            status=str(run.status),
            runner=run.runner,
            attempt=run.attempt,
            requested_by=run.requested_by,
            queued_at=run.queued_at,
            not_before=run.not_before,
            started_at=run.started_at,
            finished_at=run.finished_at,
            lease_expires_at=run.lease_expires_at,
            error=run.error,
        )
        for run, package, version in session.execute(query)
    ]


def list_incidents(session: Session, **filters: Any) -> list[Any]:
    """Stored incidents, newest release first (monitor.store.incident_queries.list_incidents,
    which reads through this module; imported here on use)."""
    from monitor.store.incident_queries import list_incidents as incidents

    return list(incidents(session, **filters))
