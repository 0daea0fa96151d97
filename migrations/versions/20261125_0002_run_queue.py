"""Run queue

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

What the scheduler needs on `runs`: who asked for a run, the backoff time of a retry, the owner
token of the lease and the runner's handle on the job.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("requested_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("runner_job_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("runner_job_id")
        batch_op.drop_column("claimed_by")
        batch_op.drop_column("requested_by")
        batch_op.drop_column("not_before")
