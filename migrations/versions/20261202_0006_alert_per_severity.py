"""An alert per severity reached

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

An open incident takes every new finding of its release, so its severity can rise after it was
confirmed and alerted; a rise is alerted again, once per severity reached. `alerts.severity` is
the severity an alert announces and joins the outbox's uniqueness (incident, severity, target).
Alerts stored before this revision announce their incident's severity at the time of upgrade.

Down to 0005 an incident alerts each target once: the later alerts of an incident and target
(one per severity reached) would be deleted, so the downgrade refuses while there are any unless
data loss is allowed (it then keeps the first). The severity each kept alert announced is kept
in `kept_0006_alert_severity`, which the upgrade reads back (instead of the incident's severity)
and drops.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.migrate import counted, drop_kept, has_table, keep_rows, refuse_data_loss

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT = "kept_0006_alert_severity"
REPEATS = (
    "FROM alerts WHERE id NOT IN (SELECT MIN(id) FROM alerts GROUP BY incident_id, target_hash)"
)


def upgrade() -> None:
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("severity", sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE alerts SET severity = "
        "(SELECT incidents.severity FROM incidents WHERE incidents.id = alerts.incident_id)"
    )
    connection = op.get_bind()
    if has_table(connection, KEPT):
        match = (
            f"FROM {KEPT} kept WHERE kept.alert_id = alerts.id "
            "AND kept.incident_id = alerts.incident_id AND kept.target_hash = alerts.target_hash"
        )
        op.execute(
            f"UPDATE alerts SET severity = (SELECT kept.severity {match}) "
            f"WHERE EXISTS (SELECT 1 {match})"
        )
        drop_kept(connection, KEPT)
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.alter_column("severity", existing_type=sa.String(length=16), nullable=False)
        batch_op.drop_constraint("uq_alerts_incident_id_target_hash", type_="unique")
        batch_op.create_unique_constraint(
            "uq_alerts_incident_id_severity_target_hash",
            ["incident_id", "severity", "target_hash"],
        )


def downgrade() -> None:
    connection = op.get_bind()
    repeats = connection.execute(sa.text(f"SELECT count(*) {REPEATS}")).scalar_one()
    if repeats:
        refuse_data_loss(
            "0006",
            [
                f"{counted(repeats, 'alert')} repeating an earlier alert of the same incident "
                "and target at another severity"
            ],
        )
    op.execute(f"DELETE {REPEATS}")
    keep_rows(
        connection,
        KEPT,
        "SELECT id AS alert_id, incident_id, target_hash, severity FROM alerts",
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_alerts_incident_id_severity_target_hash", type_="unique")
        batch_op.create_unique_constraint(
            "uq_alerts_incident_id_target_hash", ["incident_id", "target_hash"]
        )
        batch_op.drop_column("severity")
