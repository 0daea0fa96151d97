"""Run progress

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

`run_progress`: the latest progress of each run's current attempt (stage, engine i of N,
counts, elapsed and what is left), written as the suite's events arrive, so the dashboard shows
a run while it runs.

The downgrade keeps its rows in `kept_0007_run_progress`; the upgrade puts them back on the
same runs (those that still exist) and drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.migrate import drop_kept, has_table, keep_rows

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = "kept_0007_run_progress"
COLUMNS = "run_id, attempt, updated_at, progress"


def upgrade() -> None:
    op.create_table(
        "run_progress",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_run_progress_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_progress")),
    )
    connection = op.get_bind()
    if has_table(connection, KEPT):
        op.execute(
            f"INSERT INTO run_progress ({COLUMNS}) SELECT {COLUMNS} FROM {KEPT} "
            f"WHERE run_id IN (SELECT id FROM runs)"
        )
        drop_kept(connection, KEPT)


def downgrade() -> None:
    keep_rows(op.get_bind(), KEPT, f"SELECT {COLUMNS} FROM run_progress")
    op.drop_table("run_progress")
