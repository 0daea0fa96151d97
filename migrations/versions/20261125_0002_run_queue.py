"""Run queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

What the scheduler needs on `runs`: who asked for a run, the backoff time of a retry, the owner
token of the lease and the runner's handle on the job.

The downgrade keeps these columns' values (of every run that has any) in `kept_0002_run_queue`,
with each run's id and queued_at; the upgrade puts them back on the same runs and drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.migrate import drop_kept, has_table, keep_rows

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = "kept_0002_run_queue"
COLUMNS = ("not_before", "requested_by", "claimed_by", "runner_job_id")


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("requested_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("runner_job_id", sa.String(length=128), nullable=True))
    connection = op.get_bind()
    if has_table(connection, KEPT):
        match = f"FROM {KEPT} kept WHERE kept.run_id = runs.id AND kept.queued_at = runs.queued_at"
        values = ", ".join(f"{column} = (SELECT kept.{column} {match})" for column in COLUMNS)
        op.execute(f"UPDATE runs SET {values} WHERE EXISTS (SELECT 1 {match})")
        drop_kept(connection, KEPT)


def downgrade() -> None:
    keep_rows(
        op.get_bind(),
        KEPT,
        f"SELECT id AS run_id, queued_at, {', '.join(COLUMNS)} FROM runs WHERE "
        + " OR ".join(f"{column} IS NOT NULL" for column in COLUMNS),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("runner_job_id")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("requested_by")
        batch_op.drop_column("not_before")
