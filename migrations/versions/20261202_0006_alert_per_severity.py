"""An alert per severity reached

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

An open incident takes every new finding of its release, so its severity can rise after it was
confirmed and alerted; a rise is alerted again, once per severity reached. `alerts.severity` is
the severity an alert announces and joins the outbox's uniqueness (incident, severity, target).
Alerts stored before this revision announce their incident's severity at the time of upgrade.
A downgrade keeps the first alert of each incident and target and drops the later ones.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("severity", sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE alerts SET severity = "
        "(SELECT incidents.severity FROM incidents WHERE incidents.id = alerts.incident_id)"
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("severity", existing_type=sa.String(length=16), nullable=False)
        batch_op.drop_constraint("uq_alerts_incident_id_target_hash", type_="unique")
        batch_op.create_unique_constraint(
            "uq_alerts_incident_id_severity_target_hash",
            ["incident_id", "severity", "target_hash"],
        )


def downgrade() -> None:
    op.execute(
        "DELETE FROM alerts WHERE id NOT IN (SELECT MIN(id) FROM alerts "
        "GROUP BY incident_id, target_hash)"
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_alerts_incident_id_severity_target_hash", type_="unique")
        batch_op.create_unique_constraint(
            "uq_alerts_incident_id_target_hash", ["incident_id", "target_hash"]
        )
        batch_op.drop_column("severity")
