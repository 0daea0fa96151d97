"""Contrast arms

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

`arm_results.gated`: false for a contrast arm (schema 1.1), whose two sides use different
logprob semantics on purpose; it has no verdict and detection never gates it. Arms stored
before this revision were all gated.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("arm_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("gated", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("arm_results", schema=None) as batch_op:
        batch_op.drop_column("gated")
