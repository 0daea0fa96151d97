"""Storing results: one suite result becomes one run, in one transaction, once. The same
result stored twice is found by its hash and not stored again; a result that cannot be stored
is rejected before anything is written."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Table, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from monitor.engines import EngineSpecError, parse_package, parse_version
from monitor.errors import one_line
from monitor.schema import (
    SHORT_LENGTH,
    ArmResult,
    SchemaError,
    SuiteResult,
    recheck,
    text_problem,
)
from monitor.series import config_hash, series_key
from monitor.store import models as m
from monitor.store.db import Store
from monitor.store.errors import IngestError
from monitor.store.traces import TRACE_DTYPES, pack_trace

INGEST_TRIES = 3
STRATUM_KINDS = ("probability", "position")
ARM_COLUMNS = set(m.ArmRow.__table__.columns.keys()) - {"id", "run_id"}
"""The arm's fields stored in its row as they are (metrics, strata and traces have tables)."""


@dataclass(frozen=True)
class IngestOutcome:
    run_id: int
    created: bool


def _table(model: type[m.Base]) -> Table:
    return m.Base.metadata.tables[model.__tablename__]


def result_hash(result: SuiteResult) -> str:
    """Content hash of a result, independent of key order and formatting of its file. Token
    arrays are hashed as their packed data, without re-encoding megabytes of JSON."""
    without_traces = {"probes": {"__all__": {"arms": {"__all__": {"tokens"}}}}}
    document = result.model_dump(mode="json", exclude=without_traces)
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())
    for arm in result.arms():
        if arm.tokens is None:
            continue
        for name in TRACE_DTYPES:
            packed = getattr(arm.tokens, name)
            digest.update(f"{arm.probe}/{arm.arm}/{name}:{packed.dtype}:{packed.n}:".encode())
            digest.update(packed.data.encode())
    return digest.hexdigest()


def release_of(result: SuiteResult) -> tuple[str, str]:
    """(package, normalised version) of the release the result measured."""
    return result.config.engine.package, str(result.config.engine.version)


def check_storable(result: SuiteResult, runner: str | None = None) -> None:
    """Everything that keeps a result out of the store, found before any write: whatever the
    result schema refuses (checked again, the object may have changed since it was read), a
    succeeded result or measured arm without the model and versions that key it, a runner
    name its column cannot hold."""
    try:
        recheck(result)
    except SchemaError as exc:
        raise IngestError(str(exc)) from None
    keyed = result.model is not None and result.versions is not None
    if result.status == "succeeded" and not keyed:
        raise IngestError("a succeeded result must name its model and versions")
    measured = next((arm for arm in result.arms() if arm.metrics), None)
    if measured is not None and not keyed:
        raise IngestError(
            f"arm {measured.probe}/{measured.arm} has metrics but the result names no model "
            "or versions"
        )
    if runner is not None:
        limit = SHORT_LENGTH
        problem = text_problem(runner)
        if problem or len(runner) > limit:
            shown_problem = problem or f"is {len(runner)} characters long (at most {limit})"
            raise IngestError(f"runner {shown_problem}")


def _fingerprint(fields: Mapping[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def record_release(
    session: Session,
    package: str,
    version: str,
    *,
    published_at: datetime | None = None,
    yanked: bool | None = None,
    installable: bool | None = None,
    install_error: str | None = None,
) -> int:
    """Insert or update one release (only the facts given are changed); returns its id.
    `installable=True` clears a previous install error."""
    try:
        package, version = parse_package(package), str(parse_version(version))
    except EngineSpecError as exc:
        raise IngestError(str(exc)) from None
    release = session.scalars(
        select(m.ReleaseRow).where(m.ReleaseRow.package == package, m.ReleaseRow.version == version)
    ).one_or_none()
    if release is None:
        release = m.ReleaseRow(package=package, version=version, yanked=False)
        session.add(release)
    if published_at is not None:
        release.published_at = published_at
    if yanked is not None:
        release.yanked = yanked
    if installable is not None:
        release.installable = installable
        release.install_error = None if installable else install_error
    session.flush()
    return release.id


class Published(Protocol):
    """What an index says of one release (monitor.releases.PublishedRelease has it)."""

    @property
    def package(self) -> str: ...
    @property
    def version(self) -> object: ...
    @property
    def published(self) -> datetime | None: ...
    @property
    def yanked(self) -> bool: ...


def record_published(session: Session, releases: Iterable[Published]) -> list[str]:
    """Store what the index says of each release (publication time, yanked); returns the
    versions the store did not know before."""
    known = {
        (package, version)
        for package, version in session.execute(select(m.ReleaseRow.package, m.ReleaseRow.version))
    }
    new = []
    for release in releases:
        package, version = parse_package(release.package), str(parse_version(str(release.version)))
        if (package, version) not in known:
            new.append(version)
        record_release(
            session, package, version, published_at=release.published, yanked=release.yanked
        )
    return new


def _environment_id(session: Session, result: SuiteResult) -> int | None:
    if result.versions is None:
        return None
    fields = result.versions.model_dump()
    fingerprint = _fingerprint(fields)
    found = session.scalar(
        select(m.EnvironmentRow.id).where(m.EnvironmentRow.fingerprint == fingerprint)
    )
    if found is not None:
        return found
    environment = m.EnvironmentRow(fingerprint=fingerprint, **fields)
    session.add(environment)
    session.flush()
    return environment.id


def _model_id(session: Session, result: SuiteResult) -> int | None:
    if result.model is None:
        return None
    found = session.scalar(
        select(m.ModelRow.id).where(m.ModelRow.fingerprint == result.model.fingerprint)
    )
    if found is not None:
        return found
    model = m.ModelRow(**result.model.model_dump())
    session.add(model)
    session.flush()
    return model.id


def _new_run(
    session: Session, result: SuiteResult, digest: str, runner: str, status: m.RunStatus
) -> m.RunRow:
    package, version = release_of(result)
    release_id = record_release(
        session, package, version, installable=True if result.versions else None
    )
    run = m.RunRow(
        release_id=release_id,
        environment_id=_environment_id(session, result),
        model_id=_model_id(session, result),
        config_hash=config_hash(result.config),
        config=result.config.model_dump(mode="json"),
        runner=runner,
        status=status,
        attempt=1,
        queued_at=result.started_at,
        result_hash=digest,
    )
    _fill_run(run, result)
    session.add(run)
    session.flush()
    return run


def _fill_run(run: m.RunRow, result: SuiteResult) -> None:
    run.started_at = result.started_at
    run.finished_at = result.finished_at
    run.error = result.error
    run.error_tail = result.error_tail
    run.schema_version = result.schema_version
    run.engine_starts = result.engine_starts
    run.trainer_forwards = result.trainer_forwards
    run.timings = dict(result.timings_s)
    run.engines = [engine.model_dump(mode="json") for engine in result.engines]


def _queued_run(
    session: Session, run_id: int, result: SuiteResult, digest: str, status: m.RunStatus
) -> m.RunRow:
    """A run the scheduler created before the suite ran: its result fills it in."""
    run = session.get(m.RunRow, run_id, with_for_update=True)
    if run is None:
        raise IngestError(f"no run {run_id} to store the result in")
    if run.result_hash is not None:
        raise IngestError(f"run {run_id} already holds another result")
    release = session.get_one(m.ReleaseRow, run.release_id)
    if (release.package, release.version) != release_of(result):
        raise IngestError(
            f"run {run_id} is for {release.package}=={release.version}, "
            f"the result for {result.config.engine}"
        )
    run.environment_id = _environment_id(session, result)
    run.model_id = _model_id(session, result)
    run.config_hash = config_hash(result.config)
    run.config = result.config.model_dump(mode="json")
    run.status = status
    run.result_hash = digest
    run.lease_expires_at = None
    _fill_run(run, result)
    session.flush()
    return run


def _store_arms(session: Session, run_id: int, result: SuiteResult) -> None:
    if result.probes:
        session.execute(
            _table(m.ProbeRow).insert(),
            [
                {
                    "run_id": run_id,
                    "probe": probe.name,
                    "description": probe.description,
                    "finding": probe.finding,
                }
                for probe in result.probes
            ],
        )
    arms = result.arms()
    if not arms:
        return
    rows = [
        m.ArmRow(run_id=run_id, **arm.model_dump(mode="json", include=ARM_COLUMNS)) for arm in arms
    ]
    session.add_all(rows)
    session.flush()
    stored = [(arm, row.id) for arm, row in zip(arms, rows, strict=True)]
    _store_series_and_metrics(session, run_id, result, stored)
    _store_strata(session, stored)
    _store_traces(session, stored)


def _store_series_and_metrics(
    session: Session, run_id: int, result: SuiteResult, arms: list[tuple[ArmResult, int]]
) -> None:
    keys = {}
    metric_rows = []
    if result.model is None or result.versions is None:
        return
    model, device = result.model.fingerprint, result.versions.device
    for arm, arm_id in arms:
        for name, value in arm.metrics.items():
            key = series_key(result.config, model, device, arm, name)
            keys[key.hash] = key
            metric_rows.append(
                {
                    "run_id": run_id,
                    "arm_result_id": arm_id,
                    "series_hash": key.hash,
                    "name": name,
                    "value": float(value),
                }
            )
    if not metric_rows:
        return
    known = set(session.scalars(select(m.SeriesRow.hash).where(m.SeriesRow.hash.in_(list(keys)))))
    missing = [
        {"hash": digest, **key.components()} for digest, key in keys.items() if digest not in known
    ]
    if missing:
        session.execute(_table(m.SeriesRow).insert(), missing)
    session.execute(_table(m.MetricRow).insert(), metric_rows)


def _store_strata(session: Session, arms: list[tuple[ArmResult, int]]) -> None:
    rows = [
        {"arm_result_id": arm_id, "kind": kind, **stratum.model_dump()}
        for arm, arm_id in arms
        for kind, strata in zip(STRATUM_KINDS, (arm.by_probability, arm.by_position), strict=True)
        for stratum in strata
    ]
    if rows:
        session.execute(_table(m.StratumRow).insert(), rows)


def _store_traces(session: Session, arms: list[tuple[ArmResult, int]]) -> None:
    for arm, arm_id in arms:
        if arm.tokens is not None:
            session.execute(
                _table(m.TraceRow).insert(),
                {
                    "arm_result_id": arm_id,
                    "n_tokens": arm.tokens.n_tokens,
                    **pack_trace(arm.tokens),
                },
            )


def ingest(
    session: Session,
    result: SuiteResult,
    *,
    runner: str,
    run_id: int | None = None,
    digest: str | None = None,
    status: m.RunStatus | None = None,
) -> IngestOutcome:
    """Store `result` within the caller's transaction (nothing is committed here), as a new run
    or into the queued run `run_id`; `status` defaults to the result's own."""
    check_storable(result, runner)
    digest = digest or result_hash(result)
    status = status or m.RunStatus(result.status)
    existing = session.scalar(select(m.RunRow.id).where(m.RunRow.result_hash == digest))
    if existing is not None:
        return IngestOutcome(existing, created=False)
    if run_id is None:
        run = _new_run(session, result, digest, runner, status)
    else:
        run = _queued_run(session, run_id, result, digest, status)
    _store_arms(session, run.id, result)
    return IngestOutcome(run.id, created=True)


def ingest_result(
    store: Store,
    result: SuiteResult,
    *,
    runner: str = "external",
    status: m.RunStatus | None = None,
) -> IngestOutcome:
    """Store `result` as a new run in its own transaction. A concurrent writer storing the same
    result (or the same new release) makes this one retry and find it. A value the database
    still refuses is an IngestError too (nothing is written)."""
    check_storable(result, runner)
    digest = result_hash(result)
    for attempt in range(1, INGEST_TRIES + 1):
        try:
            with store.writing() as session:
                return ingest(session, result, runner=runner, digest=digest, status=status)
        except IntegrityError as exc:
            if attempt == INGEST_TRIES:
                raise IngestError(f"result could not be stored: {one_line(exc)}") from None
        except (DataError, OverflowError) as exc:
            raise IngestError(f"result could not be stored: {one_line(exc)}") from None
    raise AssertionError("unreachable")
