"""Results store

Revision ID: 0001
Revises:
Create Date: 2026-11-25

The results store: releases, environments, models, runs (with lease and idempotency
columns), probe and arm results, long-format metrics keyed by series, strata and packed
token traces.

The downgrade deletes everything the store holds: it refuses while any of these tables holds
rows unless data loss is allowed; empty, they are dropped freely (with any `kept_…` table a
later revision's downgrade left).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitor.store.migrate import KEPT_PREFIX, counted, drop_kept, refuse_data_loss

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEPT_SERIES = "kept_0005_series"
"""The series rows 0005's downgrade keeps (those no metric refers to): deleted here too."""
NOUNS = {
    "releases": ("release", "releases"),
    "environments": ("environment", "environments"),
    "models": ("model", "models"),
    "runs": ("run", "runs"),
    "probe_results": ("probe result", "probe results"),
    "arm_results": ("arm result", "arm results"),
    "metrics": ("metric value", "metric values"),
    "series": ("series", "series"),
    "strata": ("stratum", "strata"),
    "token_traces": ("token trace", "token traces"),
}


def upgrade() -> None:
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("engine_package", sa.String(length=64), nullable=False),
        sa.Column("vllm", sa.String(length=64), nullable=False),
        sa.Column("torch", sa.String(length=64), nullable=False),
        sa.Column("transformers", sa.String(length=64), nullable=False),
        sa.Column("python", sa.String(length=32), nullable=False),
        sa.Column("platform", sa.String(length=255), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=False),
        sa.Column("monitor", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_environments")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_environments_fingerprint")),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("architecture", sa.String(length=128), nullable=False),
        sa.Column("n_parameters", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_models_fingerprint")),
    )
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("package", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("yanked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("installable", sa.Boolean(), nullable=True),
        sa.Column("install_error", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
        sa.UniqueConstraint("package", "version", name=op.f("uq_releases_package_version")),
    )
    op.create_table(
        "series",
        sa.Column("hash", sa.String(length=32), nullable=False),
        sa.Column("probe", sa.String(length=64), nullable=False),
        sa.Column("arm", sa.String(length=64), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("device", sa.String(length=255), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("top_p", sa.Float(), nullable=False),
        sa.Column("top_k", sa.Integer(), nullable=False),
        sa.Column("max_tokens", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("ignore_eos", sa.Boolean(), nullable=False),
        sa.Column("trainer_dtype", sa.String(length=16), nullable=False),
        sa.Column("engine_dtype", sa.String(length=16), nullable=False),
        sa.Column("prompts_sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_series")),
    )
    op.create_index(op.f("ix_series_probe_arm_metric"), "series", ["probe", "arm", "metric"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=True),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("config_hash", sa.String(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("runner", sa.String(length=32), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled",
                name="run_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_tail", sa.Text(), nullable=True),
        sa.Column("result_hash", sa.String(length=64), nullable=True),
        sa.Column("schema_version", sa.String(length=16), nullable=True),
        sa.Column("engine_starts", sa.Integer(), nullable=False),
        sa.Column("trainer_forwards", sa.Integer(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("engines", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["environment_id"],
            ["environments.id"],
            name=op.f("fk_runs_environment_id_environments"),
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_runs_model_id_models")),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
            name=op.f("fk_runs_release_id_releases"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("result_hash", name=op.f("uq_runs_result_hash")),
    )
    op.create_index(op.f("ix_runs_config_hash"), "runs", ["config_hash"])
    op.create_index(op.f("ix_runs_release_id_status"), "runs", ["release_id", "status"])
    op.create_index(op.f("ix_runs_status_lease_expires_at"), "runs", ["status", "lease_expires_at"])
    op.create_table(
        "arm_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("probe", sa.String(length=64), nullable=False),
        sa.Column("arm", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("applicable", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("engine_config", sa.JSON(), nullable=False),
        sa.Column("effective_config", sa.JSON(), nullable=True),
        sa.Column("sampling", sa.JSON(), nullable=True),
        sa.Column("reference", sa.String(length=255), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.Column("verdict_reasons", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_arm_results_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arm_results")),
        sa.UniqueConstraint("run_id", "probe", "arm", name=op.f("uq_arm_results_run_id_probe_arm")),
    )
    op.create_table(
        "probe_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("probe", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("finding", sa.Text(), nullable=False),
        sa.Column("verdict", sa.String(length=8), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_probe_results_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_results")),
        sa.UniqueConstraint("run_id", "probe", name=op.f("uq_probe_results_run_id_probe")),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("arm_result_id", sa.Integer(), nullable=False),
        sa.Column("series_hash", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["arm_result_id"],
            ["arm_results.id"],
            name=op.f("fk_metrics_arm_result_id_arm_results"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_metrics_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["series_hash"], ["series.hash"], name=op.f("fk_metrics_series_hash_series")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metrics")),
        sa.UniqueConstraint("arm_result_id", "name", name=op.f("uq_metrics_arm_result_id_name")),
    )
    op.create_index(op.f("ix_metrics_run_id"), "metrics", ["run_id"])
    op.create_index(op.f("ix_metrics_series_hash_run_id"), "metrics", ["series_hash", "run_id"])
    op.create_table(
        "strata",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("arm_result_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("lo", sa.Float(), nullable=False),
        sa.Column("hi", sa.Float(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("mean_abs_delta", sa.Float(), nullable=False),
        sa.Column("k1", sa.Float(), nullable=False),
        sa.Column("k3", sa.Float(), nullable=False),
        sa.Column("token_mult_prob_error", sa.Float(), nullable=False),
        sa.Column("clip_fraction", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["arm_result_id"],
            ["arm_results.id"],
            name=op.f("fk_strata_arm_result_id_arm_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strata")),
        sa.UniqueConstraint(
            "arm_result_id", "kind", "bucket", name=op.f("uq_strata_arm_result_id_kind_bucket")
        ),
    )
    op.create_table(
        "token_traces",
        sa.Column("arm_result_id", sa.Integer(), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("prompt_index", sa.LargeBinary(), nullable=False),
        sa.Column("position", sa.LargeBinary(), nullable=False),
        sa.Column("token_id", sa.LargeBinary(), nullable=False),
        sa.Column("vllm_logprob", sa.LargeBinary(), nullable=False),
        sa.Column("reference_logprob", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["arm_result_id"],
            ["arm_results.id"],
            name=op.f("fk_token_traces_arm_result_id_arm_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("arm_result_id", name=op.f("pk_token_traces")),
    )


def downgrade() -> None:
    connection = op.get_bind()
    found = {
        table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
        for table in NOUNS
    }
    kept = [t for t in sa.inspect(connection).get_table_names() if t.startswith(KEPT_PREFIX)]
    if KEPT_SERIES in kept:
        found["series"] += connection.execute(
            sa.text(f"SELECT count(*) FROM {KEPT_SERIES}")
        ).scalar_one()
    refuse_data_loss("0001", [counted(n, *NOUNS[table]) for table, n in found.items() if n])
    drop_kept(connection, *kept)
    op.drop_table("token_traces")
    op.drop_table("strata")
    op.drop_index(op.f("ix_metrics_series_hash_run_id"), table_name="metrics")
    op.drop_index(op.f("ix_metrics_run_id"), table_name="metrics")
    op.drop_table("metrics")
    op.drop_table("probe_results")
    op.drop_table("arm_results")
    op.drop_index(op.f("ix_runs_status_lease_expires_at"), table_name="runs")
    op.drop_index(op.f("ix_runs_release_id_status"), table_name="runs")
    op.drop_index(op.f("ix_runs_config_hash"), table_name="runs")
    op.drop_table("runs")
    op.drop_index(op.f("ix_series_probe_arm_metric"), table_name="series")
    op.drop_table("series")
    op.drop_table("releases")
    op.drop_table("models")
    op.drop_table("environments")
