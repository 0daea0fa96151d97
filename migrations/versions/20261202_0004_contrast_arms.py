"""Contrast arms

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

`arm_results.gated`: false for a contrast arm (schema 1.1), whose two sides use different
logprob semantics on purpose; it has no verdict and detection never gates it. Arms stored
before this revision were all gated.

Below 0004 there is no place for it: the downgrade keeps which arms were contrasts in
`kept_0004_contrast_arms` (arm id, run, probe, arm), and the upgrade marks those arms
`gated = false` again (where the same arm still exists) and drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.migrate import drop_kept, has_table, keep_rows

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = "kept_0004_contrast_arms"


def upgrade() -> None:
    with op.batch_alter_table("arm_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("gated", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    connection = op.get_bind()
    if has_table(connection, KEPT):
        connection.execute(
            sa.text(
                f"UPDATE arm_results SET gated = :contrast WHERE EXISTS (SELECT 1 FROM {KEPT} "
                f"kept WHERE kept.arm_result_id = arm_results.id AND kept.run_id = "
                "arm_results.run_id AND kept.probe = arm_results.probe AND kept.arm = "
                "arm_results.arm)"
            ),
            {"contrast": False},
        )
        drop_kept(connection, KEPT)


def downgrade() -> None:
    keep_rows(
        op.get_bind(),
        KEPT,
        "SELECT id AS arm_result_id, run_id, probe, arm FROM arm_results WHERE NOT gated",
    )
    with op.batch_alter_table("arm_results", schema=None) as batch_op:
        batch_op.drop_column("gated")
