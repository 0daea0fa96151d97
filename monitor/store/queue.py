"""The run queue: every write the scheduler and its workers make to a run's lifecycle, and the
reads they decide by. A run moves queued → running → succeeded | failed | timed_out; `running`
is held under a lease (an owner token and an expiry the worker renews). Claims and lease updates
are single guarded UPDATEs, so two schedulers never run the same run and a worker that lost its
lease can no longer touch the run. What a run is asked to do arrives as a finished SuiteConfig
(monitor.requests builds it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from packaging.version import Version
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.engines import EngineSpec
from monitor.schema import SuiteConfig, SuiteResult
from monitor.series import config_hash
from monitor.store import models as m
from monitor.store.db import Store
from monitor.store.errors import IngestError, StoreError
from monitor.store.ingest import INGEST_TRIES, IngestOutcome, ingest, result_hash
from monitor.store.models import SCHEDULED_REQUESTERS, RunStatus, utcnow

CLAIM_CANDIDATES = 5
MAX_REQUESTER: int = m.RunRow.__table__.c.requested_by.type.length  # type: ignore[attr-defined]


class QueueError(StoreError):
    """A run that cannot be queued (its release is unknown); one line naming the problem."""


class LeaseLost(StoreError):
    """The run is no longer held by this owner (its lease expired and it was taken over)."""


@dataclass(frozen=True)
class ClaimedRun:
    """A running run as its worker needs it."""

    run_id: int
    config: SuiteConfig
    runner: str
    attempt: int
    owner: str | None
    runner_job_id: str | None
    requested_by: str | None

    @property
    def spec(self) -> EngineSpec:
        return self.config.engine


def release_row(session: Session, spec: EngineSpec) -> m.ReleaseRow | None:
    """The stored release equal to `spec` under PEP 440 (0.32 is 0.32.0)."""
    exact = session.scalars(
        select(m.ReleaseRow).where(
            m.ReleaseRow.package == spec.package, m.ReleaseRow.version == str(spec.version)
        )
    ).one_or_none()
    if exact is not None:
        return exact
    releases = session.scalars(select(m.ReleaseRow).where(m.ReleaseRow.package == spec.package))
    return next((r for r in releases if Version(r.version) == spec.version), None)


def insert_run(
    session: Session, config: SuiteConfig, runner: str, requested_by: str | None = None
) -> int:
    """Queue one run of a known release (within the caller's transaction); returns its id."""
    release = release_row(session, config.engine)
    if release is None:
        raise QueueError(f"{config.engine} is not a known release (not discovered yet?)")
    if requested_by is not None and not 0 < len(requested_by) <= MAX_REQUESTER:
        raise QueueError(f"requested_by must be 1 to {MAX_REQUESTER} characters")
    run = m.RunRow(
        release_id=release.id,
        config_hash=config_hash(config),
        config=config.model_dump(mode="json"),
        runner=runner,
        status=RunStatus.QUEUED,
        attempt=1,
        queued_at=utcnow(),
        requested_by=requested_by,
        timings={},
        engines=[],
    )
    session.add(run)
    session.flush()
    return run.id


def _claimed(run: m.RunRow) -> ClaimedRun:
    return ClaimedRun(
        run_id=run.id,
        config=SuiteConfig.model_validate(run.config),
        runner=run.runner,
        attempt=run.attempt,
        owner=run.claimed_by,
        runner_job_id=run.runner_job_id,
        requested_by=run.requested_by,
    )


def _is_person() -> Any:
    """People's requests and confirmation runs: served before routine scheduled runs."""
    return m.RunRow.requested_by.is_not(None) & m.RunRow.requested_by.not_in(SCHEDULED_REQUESTERS)


def claim_next(
    session: Session,
    owner: str,
    lease_s: float,
    *,
    now: datetime | None = None,
    requested_only: bool = False,
) -> ClaimedRun | None:
    """Take the next queued run that is due (people's requests first, then oldest) and mark it
    running under `owner`'s lease; None when nothing is due. Atomic: the UPDATE only succeeds
    on a run that is still queued, so a run is claimed once however many schedulers ask."""
    now = now or utcnow()
    due = or_(m.RunRow.not_before.is_(None), m.RunRow.not_before <= now)
    query = select(m.RunRow.id).where(m.RunRow.status == RunStatus.QUEUED, due)
    if requested_only:
        query = query.where(_is_person())
    query = query.order_by(case((_is_person(), 0), else_=1), m.RunRow.queued_at, m.RunRow.id)
    for run_id in session.scalars(query.limit(CLAIM_CANDIDATES)).all():
        claimed = session.execute(
            update(m.RunRow)
            .where(m.RunRow.id == run_id, m.RunRow.status == RunStatus.QUEUED)
            .values(
                status=RunStatus.RUNNING,
                claimed_by=owner,
                started_at=now,
                lease_expires_at=now + timedelta(seconds=lease_s),
                runner_job_id=None,
            )
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            return held_run(session, run_id)
    return None


def held_run(session: Session, run_id: int) -> ClaimedRun | None:
    """A run as its worker needs it; None when there is no such run."""
    row = session.scalars(
        select(m.RunRow).where(m.RunRow.id == run_id).execution_options(populate_existing=True)
    ).one_or_none()
    return _claimed(row) if row else None


def _held(run_id: int, owner: str) -> Any:
    return (
        (m.RunRow.id == run_id)
        & (m.RunRow.status == RunStatus.RUNNING)
        & (m.RunRow.claimed_by == owner)
    )


def _update_held(session: Session, run_id: int, owner: str, **values: Any) -> bool:
    done = session.execute(
        update(m.RunRow)
        .where(_held(run_id, owner))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def renew_lease(
    session: Session, run_id: int, owner: str, lease_s: float, *, now: datetime | None = None
) -> bool:
    """Extend `owner`'s lease; False when the run is no longer its own (stop working on it)."""
    expires = (now or utcnow()) + timedelta(seconds=lease_s)
    return _update_held(session, run_id, owner, lease_expires_at=expires)


def record_job_id(session: Session, run_id: int, owner: str, job_id: str) -> bool:
    """Remember the runner's handle on the job, so a job whose worker died can be stopped."""
    return _update_held(session, run_id, owner, runner_job_id=job_id[:128])


def release_claim(session: Session, run_id: int, owner: str) -> bool:
    """Put a run back in the queue as it was (same attempt): its worker was asked to stop."""
    return _update_held(
        session,
        run_id,
        owner,
        status=RunStatus.QUEUED,
        claimed_by=None,
        lease_expires_at=None,
        started_at=None,
        runner_job_id=None,
    )


def retry_or_fail(
    session: Session,
    run_id: int,
    owner: str,
    reason: str,
    *,
    max_attempts: int,
    backoff_s: float,
    now: datetime | None = None,
) -> RunStatus | None:
    """A run whose runner was lost: queued again after a backoff (doubling per attempt), or
    failed with the reason once `max_attempts` are spent. None when `owner` does not hold it."""
    now = now or utcnow()
    run = session.get(m.RunRow, run_id, with_for_update=True, populate_existing=True)
    if run is None or run.status != RunStatus.RUNNING or run.claimed_by != owner:
        return None
    if run.attempt < max_attempts:
        delay = backoff_s * 2 ** (run.attempt - 1)
        run.status = RunStatus.QUEUED
        run.attempt += 1
        run.not_before = now + timedelta(seconds=delay)
        run.error = f"attempt {run.attempt - 1} lost: {reason}"
        run.started_at = None
    else:
        run.status = RunStatus.FAILED
        run.error = f"{reason} (attempt {run.attempt} of {max_attempts})"
        run.finished_at = now
    run.claimed_by, run.lease_expires_at, run.runner_job_id = None, None, None
    session.flush()
    return run.status


def fail_run(
    session: Session,
    run_id: int,
    owner: str,
    reason: str,
    *,
    tail: str | None = None,
    status: RunStatus = RunStatus.FAILED,
    now: datetime | None = None,
) -> bool:
    """End a held run without a result (its environment does not build, its result cannot be
    stored): failed for good, with the reason."""
    return _update_held(
        session,
        run_id,
        owner,
        status=status,
        error=reason[:2000],
        error_tail=tail,
        finished_at=now or utcnow(),
        lease_expires_at=None,
    )


def store_held_result(
    store: Store, run_id: int, owner: str, result: SuiteResult, status: RunStatus
) -> IngestOutcome:
    """Store the result of a held run in it (one transaction: the run, its probes, arms and
    metrics), end its lease and give it `status`. Storing the same result again is a no-op; a
    run no longer held raises LeaseLost, an unstorable result IngestError (nothing written)."""
    digest = result_hash(result)
    for attempt in range(1, INGEST_TRIES + 1):
        try:
            with store.writing() as session:
                return _store_held(session, run_id, owner, result, digest, status)
        except IntegrityError as exc:
            if attempt == INGEST_TRIES:
                raise IngestError(f"result could not be stored: {exc.orig}") from None
    raise AssertionError("unreachable")


def _store_held(
    session: Session,
    run_id: int,
    owner: str,
    result: SuiteResult,
    digest: str,
    status: RunStatus,
) -> IngestOutcome:
    run = session.get(m.RunRow, run_id, with_for_update=True, populate_existing=True)
    if run is not None and run.result_hash == digest:
        return IngestOutcome(run_id, created=False)
    if run is None or run.status != RunStatus.RUNNING or run.claimed_by != owner:
        raise LeaseLost(f"run {run_id} is no longer held by this worker")
    outcome = ingest(
        session, result, runner=run.runner, run_id=run_id, digest=digest, status=status
    )
    if outcome.run_id != run_id:
        raise IngestError(f"this result is already stored as run {outcome.run_id}")
    run.not_before = None
    session.flush()
    return outcome


def expired_runs(session: Session, *, now: datetime | None = None) -> list[ClaimedRun]:
    """Running runs whose lease has expired: their worker is gone (or cut off)."""
    rows = session.scalars(
        select(m.RunRow)
        .where(m.RunRow.status == RunStatus.RUNNING, m.RunRow.lease_expires_at < (now or utcnow()))
        .order_by(m.RunRow.id)
    )
    return [_claimed(run) for run in rows]


def take_over(
    session: Session,
    run_id: int,
    previous_owner: str | None,
    owner: str,
    lease_s: float,
    *,
    now: datetime | None = None,
) -> bool:
    """Become the owner of a run whose lease expired (to clean up after its worker); False when
    someone renewed or took it first."""
    now = now or utcnow()
    owned = (
        m.RunRow.claimed_by.is_(None)
        if previous_owner is None
        else m.RunRow.claimed_by == previous_owner
    )
    done = session.execute(
        update(m.RunRow)
        .where(
            m.RunRow.id == run_id,
            m.RunRow.status == RunStatus.RUNNING,
            m.RunRow.lease_expires_at < now,
            owned,
        )
        .values(claimed_by=owner, lease_expires_at=now + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def running_count(session: Session) -> int:
    return session.scalar(select(func.count()).where(m.RunRow.status == RunStatus.RUNNING)) or 0


def known_versions(session: Session, package: str) -> list[str]:
    return list(
        session.scalars(select(m.ReleaseRow.version).where(m.ReleaseRow.package == package))
    )


def newest_release(
    session: Session, package: str, *, prereleases: bool = False, yanked: bool = False
) -> str | None:
    """The newest known release of `package` (by PEP 440) that may run, or None."""
    rows = session.execute(
        select(m.ReleaseRow.version, m.ReleaseRow.yanked, m.ReleaseRow.installable).where(
            m.ReleaseRow.package == package
        )
    ).all()
    versions = [
        Version(version)
        for version, is_yanked, installable in rows
        if (yanked or not is_yanked) and installable is not False
    ]
    kept = [v for v in versions if prereleases or not v.is_prerelease]
    return str(max(kept)) if kept else None


def run_status(session: Session, run_id: int) -> RunStatus | None:
    return session.scalar(select(m.RunRow.status).where(m.RunRow.id == run_id))


def has_pending(session: Session, spec: EngineSpec, requested_by: str) -> bool:
    """Whether `requested_by` already has a queued or running run of this release."""
    release = release_row(session, spec)
    if release is None:
        return False
    found = session.scalar(
        select(m.RunRow.id)
        .where(
            m.RunRow.release_id == release.id,
            m.RunRow.requested_by == requested_by,
            m.RunRow.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)),
        )
        .limit(1)
    )
    return found is not None


def run_with_config(
    session: Session, config: SuiteConfig, *, status: RunStatus | None = None
) -> int | None:
    """The first run of this config's release with the same config hash (and `status`, when
    given): discovery queues a release once whatever became of its run, backfill skips one
    that succeeded."""
    release = release_row(session, config.engine)
    if release is None:
        return None
    query = select(m.RunRow.id).where(
        m.RunRow.release_id == release.id, m.RunRow.config_hash == config_hash(config)
    )
    if status is not None:
        query = query.where(m.RunRow.status == status)
    return session.scalar(query.order_by(m.RunRow.id).limit(1))
