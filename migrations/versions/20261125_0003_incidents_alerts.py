"""Incidents and alerts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Detection's results: one incident per regressed release and series configuration (its draft,
baseline, confirmation and triage state), the incident's triage history, and the alerts outbox
(one row per incident and alert target, unique, so an incident alerts each target once).

Below 0003 there are no incidents: the downgrade refuses while these tables hold rows unless
data loss is allowed; empty, they are dropped freely.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.migrate import counted, drop_kept, refuse_data_loss

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("engine_package", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("series_config", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "new",
                "investigating",
                "intended",
                "false_positive",
                "fixed",
                name="incident_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("draft", sa.JSON(), nullable=False),
        sa.Column("baseline_run_id", sa.Integer(), nullable=True),
        sa.Column("candidate_run_id", sa.Integer(), nullable=False),
        sa.Column(
            "confirmation",
            sa.Enum(
                "pending",
                "confirmed",
                "not_confirmed",
                name="confirmation",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("confirmation_run_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["baseline_run_id"],
            ["runs.id"],
            name=op.f("fk_incidents_baseline_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["candidate_run_id"],
            ["runs.id"],
            name=op.f("fk_incidents_candidate_run_id_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["confirmation_run_id"],
            ["runs.id"],
            name=op.f("fk_incidents_confirmation_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
            name=op.f("fk_incidents_release_id_releases"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incidents")),
        sa.UniqueConstraint(
            "release_id", "series_config", name=op.f("uq_incidents_release_id_series_config")
        ),
    )
    op.create_index(op.f("ix_incidents_confirmation_run_id"), "incidents", ["confirmation_run_id"])
    op.create_index(op.f("ix_incidents_status"), "incidents", ["status"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("target_index", sa.Integer(), nullable=False),
        sa.Column("target_hash", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "sent",
                "failed",
                name="alert_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_alerts_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint(
            "incident_id", "target_hash", name=op.f("uq_alerts_incident_id_target_hash")
        ),
    )
    op.create_index(op.f("ix_alerts_state_next_attempt_at"), "alerts", ["state", "next_attempt_at"])

    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("by", sa.String(length=255), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_incident_events_incident_id_incidents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_events")),
    )
    op.create_index(
        op.f("ix_incident_events_incident_id_id"), "incident_events", ["incident_id", "id"]
    )


def downgrade() -> None:
    connection = op.get_bind()
    nouns = {"incidents": "incident", "alerts": "alert", "incident_events": "incident event"}
    found = {
        table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
        for table in nouns
    }
    refuse_data_loss("0003", [counted(n, nouns[table]) for table, n in found.items() if n])
    drop_kept(connection, "kept_0006_alert_severity")
    op.drop_index(op.f("ix_incident_events_incident_id_id"), table_name="incident_events")

    op.drop_table("incident_events")
    op.drop_index(op.f("ix_alerts_state_next_attempt_at"), table_name="alerts")

    op.drop_table("alerts")
    op.drop_index(op.f("ix_incidents_status"), table_name="incidents")
    op.drop_index(op.f("ix_incidents_confirmation_run_id"), table_name="incidents")

    op.drop_table("incidents")
