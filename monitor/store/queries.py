"""Reads of runs, releases, series and metrics (CLI, dashboard, detection); the incident tables
are read in `incident_reads`, the queue's own reads live in `queue`. Releases are ordered by
`packaging.version` (0.10.0 after 0.9.0), never as strings; results are plain dataclasses from
`monitor.store.views` holding what was measured (verdicts are judged by the reader)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from packaging.version import Version
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from monitor.metrics import TokenArrays
from monitor.schema import ModelRef, Stratum, Versions
from monitor.series import SeriesKey
from monitor.store import models as m
from monitor.store.errors import NotFound
from monitor.store.traces import TRACE_DTYPES, unpack_trace
from monitor.store.views import (
    ArmSummary,
    ArmView,
    ExportRow,
    JobView,
    MatrixCell,
    ProbeView,
    ReleaseInfo,
    RunComparison,
    RunDetail,
    RunSummary,
    SeriesPoint,
    SeriesView,
    StatusMatrix,
    compare_details,
    view_of,
)

SUCCEEDED = m.RunStatus.SUCCEEDED
SERIES_COLUMNS = tuple(f.name for f in fields(SeriesKey))
EXPORT_BATCH = 2000


def version_key(version: str) -> Version:
    return Version(version)


def _model_filter(model: str) -> Any:
    return or_(m.ModelRow.name == model, m.ModelRow.fingerprint == model)


def list_releases(session: Session, *, package: str | None = None) -> list[ReleaseInfo]:
    """Every known release, oldest version first, with its run count and newest run's status."""
    counts = (
        select(m.RunRow.release_id, func.count().label("n"), func.max(m.RunRow.id).label("newest"))
        .group_by(m.RunRow.release_id)
        .subquery()
    )
    newest = m.RunRow.__table__.alias("newest_run")
    query = (
        select(m.ReleaseRow, counts.c.n, newest.c.status)
        .outerjoin(counts, counts.c.release_id == m.ReleaseRow.id)
        .outerjoin(newest, newest.c.id == counts.c.newest)
    )
    if package:
        query = query.where(m.ReleaseRow.package == package)
    releases = [
        view_of(
            ReleaseInfo,
            release,
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
    metrics: Collection[str] = (),
) -> list[RunSummary]:
    """Runs, newest first, filtered; each with its arms and, of their metrics, those named in
    `metrics` (what judging them needs)."""
    query = (
        select(
            m.RunRow,
            m.ReleaseRow.package,
            m.ReleaseRow.version,
            m.ModelRow.name,
            m.EnvironmentRow.device,
        )
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .outerjoin(m.ModelRow, m.ModelRow.id == m.RunRow.model_id)
        .outerjoin(m.EnvironmentRow, m.EnvironmentRow.id == m.RunRow.environment_id)
        .order_by(m.RunRow.id.desc())
        .limit(limit)
    )
    if package:
        query = query.where(m.ReleaseRow.package == package)
    if version:
        query = query.where(m.RunRow.release_id.in_(_releases_at(session, version, package)))
    if status:
        query = query.where(m.RunRow.status == m.RunStatus(status))
    if model:
        query = query.where(_model_filter(model))
    if probe:
        query = query.where(
            select(m.ProbeRow.id)
            .where(m.ProbeRow.run_id == m.RunRow.id, m.ProbeRow.probe == probe)
            .exists()
        )
    rows = session.execute(query).all()
    arms = arm_summaries(session, [row[0].id for row in rows], metrics)
    return [
        view_of(
            RunSummary,
            run,
            package=package_name,
            version=release_version,
            status=str(run.status),
            model=model_name,
            device=device,
            arms=tuple(arms[run.id]),
        )
        for run, package_name, release_version, model_name, device in rows
    ]


def _releases_at(session: Session, version: str, package: str | None) -> list[int]:
    """Ids of the releases whose version equals `version` under PEP 440 (0.32 == 0.32.0)."""
    wanted = Version(version)
    query = select(m.ReleaseRow.id, m.ReleaseRow.version)
    if package:
        query = query.where(m.ReleaseRow.package == package)
    return [id_ for id_, stored in session.execute(query) if Version(stored) == wanted]


def arm_summaries(
    session: Session, run_ids: Sequence[int], metrics: Collection[str]
) -> dict[int, list[ArmSummary]]:
    """run id -> its arms in stored order, each with the metrics named in `metrics`."""
    found: dict[int, list[ArmSummary]] = defaultdict(list)
    if not run_ids:
        return found
    values: dict[int, dict[str, float]] = defaultdict(dict)
    if metrics:
        for arm_id, name, value in session.execute(
            select(m.MetricRow.arm_result_id, m.MetricRow.name, m.MetricRow.value).where(
                m.MetricRow.run_id.in_(list(run_ids)), m.MetricRow.name.in_(list(metrics))
            )
        ):
            values[arm_id][name] = value
    arms = m.ArmRow
    rows = session.execute(
        select(arms.id, arms.run_id, arms.probe, arms.arm, arms.applicable, arms.gated, arms.reason)
        .where(arms.run_id.in_(list(run_ids)))
        .order_by(arms.id)
    )
    for arm_id, run_id, probe, arm, applicable, gated, reason in rows:
        found[run_id].append(ArmSummary(probe, arm, applicable, gated, reason, values[arm_id]))
    return found


def _get_run(session: Session, run_id: int) -> tuple[m.RunRow, m.ReleaseRow]:
    row = session.execute(
        select(m.RunRow, m.ReleaseRow).join(m.ReleaseRow).where(m.RunRow.id == run_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no run {run_id} in the store")
    return row[0], row[1]


def run_detail(session: Session, run_id: int, *, traces: bool = True) -> RunDetail:
    """One run with its environment, model, probes, arms, metrics, strata and (unless
    `traces=False`) decoded token traces."""
    run, release = _get_run(session, run_id)
    environment = session.get(m.EnvironmentRow, run.environment_id) if run.environment_id else None
    model = session.get(m.ModelRow, run.model_id) if run.model_id else None
    arm_rows = session.scalars(
        select(m.ArmRow).where(m.ArmRow.run_id == run_id).order_by(m.ArmRow.id)
    ).all()
    arm_ids = [arm.id for arm in arm_rows]
    metrics: dict[int, dict[str, float]] = defaultdict(dict)
    series: dict[int, dict[str, str]] = defaultdict(dict)
    for arm_id, name, value, digest in session.execute(
        select(
            m.MetricRow.arm_result_id, m.MetricRow.name, m.MetricRow.value, m.MetricRow.series_hash
        )
        .where(m.MetricRow.run_id == run_id)
        .order_by(m.MetricRow.id)
    ):
        metrics[arm_id][name] = value
        series[arm_id][name] = digest
    strata: dict[tuple[int, str], list[Stratum]] = defaultdict(list)
    if arm_ids:
        for stratum in session.scalars(
            select(m.StratumRow)
            .where(m.StratumRow.arm_result_id.in_(arm_ids))
            .order_by(m.StratumRow.id)
        ):
            strata[stratum.arm_result_id, stratum.kind].append(
                Stratum.model_validate(stratum, from_attributes=True)
            )
    trace_sizes, decoded = _traces(session, arm_ids, decode=traces)
    arms_by_probe: dict[str, list[ArmView]] = defaultdict(list)
    for arm in arm_rows:
        arms_by_probe[arm.probe].append(
            view_of(
                ArmView,
                arm,
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
            arms=arms_by_probe[probe.probe],
        )
        for probe in session.scalars(
            select(m.ProbeRow).where(m.ProbeRow.run_id == run_id).order_by(m.ProbeRow.id)
        )
    ]
    return view_of(
        RunDetail,
        run,
        package=release.package,
        version=release.version,
        status=str(run.status),
        environment=Versions.model_validate(environment, from_attributes=True)
        if environment
        else None,
        model=ModelRef.model_validate(model, from_attributes=True) if model else None,
        probes=probes,
    )


def _traces(
    session: Session, arm_ids: Sequence[int], *, decode: bool
) -> tuple[dict[int, int], dict[int, TokenArrays]]:
    if not arm_ids:
        return {}, {}
    where = m.TraceRow.arm_result_id.in_(arm_ids)
    if not decode:
        sizes = session.execute(select(m.TraceRow.arm_result_id, m.TraceRow.n_tokens).where(where))
        return {arm_id: n for arm_id, n in sizes}, {}
    decoded = {
        trace.arm_result_id: _decode(trace)
        for trace in session.scalars(select(m.TraceRow).where(where))
    }
    return {arm_id: trace.n_tokens for arm_id, trace in decoded.items()}, decoded


def _decode(trace: m.TraceRow) -> TokenArrays:
    return unpack_trace({name: getattr(trace, name) for name in TRACE_DTYPES}, trace.n_tokens)


def arm_trace(session: Session, run_id: int, probe: str, arm: str) -> TokenArrays:
    """One arm's decoded token trace (for drill-down without loading the whole run)."""
    trace = session.scalars(
        select(m.TraceRow)
        .join(m.ArmRow, m.ArmRow.id == m.TraceRow.arm_result_id)
        .where(m.ArmRow.run_id == run_id, m.ArmRow.probe == probe, m.ArmRow.arm == arm)
    ).one_or_none()
    if trace is None:
        raise NotFound(f"run {run_id} has no token trace for {probe}/{arm}")
    return _decode(trace)


def compare_runs(session: Session, a: int, b: int) -> RunComparison:
    """Metric deltas (b − a) per arm and the effective-config differences of two runs."""
    return compare_details(
        run_detail(session, a, traces=False), run_detail(session, b, traces=False)
    )


def _series_key(row: m.SeriesRow) -> SeriesKey:
    return SeriesKey(**{name: getattr(row, name) for name in SERIES_COLUMNS})


def series_keys(session: Session, **equal: object) -> list[SeriesKey]:
    """The stored series whose key components equal the given ones (e.g. probe="prefix_cache",
    model=fingerprint), sorted by probe, arm, metric."""
    unknown = sorted(set(equal) - set(SERIES_COLUMNS))
    if unknown:
        raise ValueError(f"series keys have no component {', '.join(unknown)}")
    query = select(m.SeriesRow).order_by(m.SeriesRow.probe, m.SeriesRow.arm, m.SeriesRow.metric)
    for name, value in equal.items():
        query = query.where(getattr(m.SeriesRow, name) == value)
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
    row = session.get(m.SeriesRow, digest)
    if row is None:
        raise NotFound(f"no series {digest} in the store")
    query = (
        select(
            m.MetricRow.run_id,
            m.ReleaseRow.package,
            m.ReleaseRow.version,
            m.MetricRow.value,
            m.RunRow.finished_at,
        )
        .join(m.RunRow, m.RunRow.id == m.MetricRow.run_id)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .where(m.MetricRow.series_hash == digest, m.RunRow.status == SUCCEEDED)
    )
    if package:
        query = query.where(m.ReleaseRow.package == package)
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
    metrics: Collection[str] = (),
) -> StatusMatrix:
    """Every release × every probe seen: the newest succeeded run's arms of that probe, with
    the metrics named in `metrics` (what judging them needs)."""
    newest = func.row_number().over(
        partition_by=(m.RunRow.release_id, m.ProbeRow.probe),
        order_by=(m.RunRow.finished_at.desc().nulls_last(), m.RunRow.id.desc()),
    )
    ranked = (
        select(
            m.RunRow.release_id,
            m.ProbeRow.probe,
            m.RunRow.id.label("run_id"),
            m.RunRow.finished_at,
            newest.label("rank"),
        )
        .join(m.ProbeRow, m.ProbeRow.run_id == m.RunRow.id)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .where(m.RunRow.status == SUCCEEDED)
    )
    if package:
        ranked = ranked.where(m.ReleaseRow.package == package)
    if model:
        ranked = ranked.join(m.ModelRow, m.ModelRow.id == m.RunRow.model_id).where(
            _model_filter(model)
        )
    if config_hash:
        ranked = ranked.where(m.RunRow.config_hash == config_hash)
    subquery = ranked.subquery()
    newest_rows = session.execute(select(subquery).where(subquery.c.rank == 1)).all()
    arms = arm_summaries(session, sorted({row.run_id for row in newest_rows}), metrics)
    cells = {
        (row.release_id, row.probe): MatrixCell(
            row.run_id,
            row.finished_at,
            tuple(arm for arm in arms[row.run_id] if arm.probe == row.probe),
        )
        for row in newest_rows
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
    """Every stored metric value in long format with its series key, streamed."""
    series = m.SeriesRow
    query = (
        select(
            m.MetricRow.run_id,
            m.ReleaseRow.package,
            m.ReleaseRow.version,
            m.RunRow.finished_at,
            m.ModelRow.name,
            *(getattr(series, name) for name in SERIES_COLUMNS),
            m.MetricRow.value,
            series.hash,
        )
        .join(m.RunRow, m.RunRow.id == m.MetricRow.run_id)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .join(series, series.hash == m.MetricRow.series_hash)
        .outerjoin(m.ModelRow, m.ModelRow.id == m.RunRow.model_id)
        .order_by(m.MetricRow.id)
    )
    conditions = []
    if package:
        conditions.append(m.ReleaseRow.package == package)
    if probe:
        conditions.append(series.probe == probe)
    if metric:
        conditions.append(series.metric == metric)
    if run_ids is not None:
        conditions.append(m.MetricRow.run_id.in_(list(run_ids)))
    if succeeded_only:
        conditions.append(m.RunRow.status == SUCCEEDED)
    if conditions:
        query = query.where(and_(*conditions))
    for row in session.execute(query.execution_options(yield_per=EXPORT_BATCH)):
        run_id, package_name, version, finished_at, model_name, *key, value, digest = row
        run = (run_id, package_name, version, finished_at, model_name)
        yield ExportRow(*run, value=value, series_hash=digest, key=SeriesKey(*key))


def table_counts(session: Session) -> dict[str, int]:
    """Rows per store table."""
    return {
        table.name: session.scalar(select(func.count()).select_from(table)) or 0
        for table in m.Base.metadata.sorted_tables
    }


def list_models(session: Session) -> list[ModelRef]:
    """Every model that ran, by name then fingerprint (series keys name models by fingerprint)."""
    rows = session.scalars(select(m.ModelRow).order_by(m.ModelRow.name, m.ModelRow.fingerprint))
    return [ModelRef.model_validate(row, from_attributes=True) for row in rows]


def list_jobs(session: Session, *, statuses: Sequence[str] = (), limit: int = 100) -> list[JobView]:
    """Runs as the queue sees them (requester, queue and lease times), newest first; only the
    given statuses when some are given."""
    query = (
        select(m.RunRow, m.ReleaseRow.package, m.ReleaseRow.version)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .order_by(m.RunRow.id.desc())
        .limit(limit)
    )
    if statuses:
        query = query.where(m.RunRow.status.in_([m.RunStatus(status) for status in statuses]))
    return [
        view_of(JobView, run, package=package, version=version, status=str(run.status))
        for run, package, version in session.execute(query)
    ]
