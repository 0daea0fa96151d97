"""Running runs' progress in the store: written by the process that holds a run (only while it
holds it), read by the dashboard and by `parity serve --first-run`'s terminal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitor.progress import RunProgress
from monitor.store import models as m
from monitor.store.models import RunStatus, utcnow


@dataclass(frozen=True)
class RunningRun:
    """A running run as a progress panel shows it; `progress` None before its first event."""

    run_id: int
    release: str
    requested_by: str | None
    attempt: int
    started_at: datetime | None
    progress: RunProgress | None


def save_progress(session: Session, run_id: int, owner: str, progress: RunProgress) -> bool:
    """Store the progress of a run `owner` holds; False (nothing written) when it does not."""
    run = session.get(m.RunRow, run_id)
    if run is None or run.status != RunStatus.RUNNING or run.claimed_by != owner:
        return False
    row = session.get(m.RunProgressRow, run_id)
    if row is None:
        row = m.RunProgressRow(run_id=run_id, attempt=run.attempt, progress={})
        session.add(row)
    row.attempt, row.updated_at, row.progress = run.attempt, utcnow(), progress.to_json()
    return True


def running_runs(session: Session) -> list[RunningRun]:
    """Every running run, oldest first, with its current attempt's progress if any."""
    rows = session.execute(
        select(m.RunRow, m.ReleaseRow, m.RunProgressRow)
        .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
        .outerjoin(m.RunProgressRow, m.RunProgressRow.run_id == m.RunRow.id)
        .where(m.RunRow.status == RunStatus.RUNNING)
        .order_by(m.RunRow.started_at, m.RunRow.id)
    ).all()
    return [
        RunningRun(
            run_id=run.id,
            release=f"{release.package}=={release.version}",
            requested_by=run.requested_by,
            attempt=run.attempt,
            started_at=run.started_at,
            progress=(
                RunProgress.from_json(row.progress)
                if row is not None and row.attempt == run.attempt
                else None
            ),
        )
        for run, release, row in rows
    ]


def expected_seconds(session: Session, run_id: int) -> float | None:
    """How long the last succeeded run of the same suite config as `run_id` took."""
    run = session.get(m.RunRow, run_id)
    if run is None:
        return None
    last = session.execute(
        select(m.RunRow.started_at, m.RunRow.finished_at)
        .where(
            m.RunRow.config_hash == run.config_hash,
            m.RunRow.id != run_id,
            m.RunRow.status == RunStatus.SUCCEEDED,
            m.RunRow.started_at.is_not(None),
            m.RunRow.finished_at.is_not(None),
        )
        .order_by(m.RunRow.finished_at.desc())
        .limit(1)
    ).first()
    if last is None:
        return None
    seconds = (last.finished_at - last.started_at).total_seconds()
    return seconds if seconds > 0 else None
