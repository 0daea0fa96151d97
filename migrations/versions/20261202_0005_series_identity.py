"""One series identity; verdicts judged, not stored

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

What identifies a series is now derived from the suite options' roles (monitor.series):
`series.weight_step` joins the key (runs with another weight-sync step no longer share a series),
the KV cache size leaves the run's `config_hash` (a resource, not a measurement), and an
incident's `series_config` hashes the same identity as the series. Every stored hash is
recomputed here from the stored rows, with the formulas of this revision written out below (a
migration never follows later code).

The arm and probe verdict columns are dropped: verdicts are judged from the stored metrics with
the configured tolerances wherever they are shown. A downgrade recomputes them with the default
gates, as the suite used to.

The downgrade loses nothing the upgrade cannot rebuild: hashes and `weight_step` are recomputed
from each run's stored config (series a weight_step apart merge below 0005 and split again
above). Series rows that no metric refers to (their runs deleted) would not be rebuilt: the
downgrade keeps them in `kept_0005_series`, which the upgrade puts back and drops.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from monitor.store.migrate import drop_kept, has_table, keep_rows

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERIES_COLUMNS = (
    "probe",
    "arm",
    "metric",
    "model",
    "device",
    "prompts_sha256",
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "seed",
    "ignore_eos",
    "engine_dtype",
    "trainer_dtype",
)
TYPES = {
    "temperature": float,
    "top_p": float,
    "top_k": int,
    "max_tokens": int,
    "seed": int,
    "ignore_eos": bool,
    "weight_step": float,
}
KEPT = "kept_0005_series"
KEPT_COLUMNS = ", ".join(("hash", *SERIES_COLUMNS, "weight_step"))
DEFAULT_GATES = (
    ("token_mult_prob_error", 1.05, False),
    ("k1", 0.1, True),
    ("k3", 0.1, False),
    ("icepop_fraction", 0.01, False),
    ("tis_fraction", 0.01, False),
    ("clip_fraction", 0.05, False),
)

series = sa.table(
    "series",
    sa.column("hash", sa.String),
    *(sa.column(name) for name in SERIES_COLUMNS),
    sa.column("weight_step", sa.Float),
)
metrics = sa.table(
    "metrics",
    sa.column("id", sa.Integer),
    sa.column("run_id", sa.Integer),
    sa.column("arm_result_id", sa.Integer),
    sa.column("series_hash", sa.String),
    sa.column("name", sa.String),
    sa.column("value", sa.Float),
)
runs = sa.table(
    "runs",
    sa.column("id", sa.Integer),
    sa.column("config", sa.JSON),
    sa.column("config_hash", sa.String),
    sa.column("model_id", sa.Integer),
    sa.column("environment_id", sa.Integer),
)
incidents = sa.table(
    "incidents",
    sa.column("id", sa.Integer),
    sa.column("candidate_run_id", sa.Integer),
    sa.column("series_config", sa.String),
)
arm_results = sa.table(
    "arm_results",
    sa.column("id", sa.Integer),
    sa.column("run_id", sa.Integer),
    sa.column("probe", sa.String),
    sa.column("applicable", sa.Boolean),
    sa.column("gated", sa.Boolean),
    sa.column("verdict", sa.String),
    sa.column("verdict_reasons", sa.JSON),
)
probe_results = sa.table(
    "probe_results",
    sa.column("id", sa.Integer),
    sa.column("run_id", sa.Integer),
    sa.column("probe", sa.String),
    sa.column("verdict", sa.String),
)


def _compact(values: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(values, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    ).hexdigest()


def _typed(values: dict[str, Any]) -> dict[str, Any]:
    return {k: TYPES[k](v) if k in TYPES else str(v) for k, v in values.items()}


def _config(raw: Any) -> dict[str, Any]:
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def _run_facts(connection: sa.Connection) -> dict[int, tuple[dict[str, Any], str, str]]:
    """run id -> (config, model fingerprint, device)."""
    rows = connection.execute(
        sa.text(
            "SELECT runs.id, runs.config, models.fingerprint, environments.device FROM runs "
            "LEFT JOIN models ON models.id = runs.model_id "
            "LEFT JOIN environments ON environments.id = runs.environment_id"
        )
    )
    return {row[0]: (_config(row[1]), row[2] or "", row[3] or "") for row in rows}


def _identity(config: dict[str, Any], model: str, device: str) -> dict[str, Any]:
    keys = ("temperature", "top_p", "top_k", "max_tokens", "seed")
    values = {key: config[key] for key in keys}
    values.update(
        model=model,
        device=device,
        prompts_sha256=config["prompts_sha256"],
        ignore_eos=True,
        engine_dtype=config["engine_dtype"],
        trainer_dtype=config["trainer_dtype"],
        weight_step=config["weight_step"],
    )
    return _typed(values)


def _old_series_config(config: dict[str, Any], model: str, device: str) -> str:
    kept = {k: v for k, v in config.items() if k not in ("engine", "prompts", "probes")}
    text = json.dumps({"config": kept, "model": model, "device": device}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _config_hash(config: dict[str, Any], ignored: tuple[str, ...]) -> str:
    return _compact({k: v for k, v in config.items() if k not in ignored})


def _rehash_runs(connection: sa.Connection, ignored: tuple[str, ...]) -> None:
    for run_id, (config, _, _) in _run_facts(connection).items():
        connection.execute(
            runs.update()
            .where(runs.c.id == run_id)
            .values(config_hash=_config_hash(config, ignored))
        )


def _rehash_incidents(connection: sa.Connection, *, new: bool) -> None:
    facts = _run_facts(connection)
    for incident_id, run_id in connection.execute(
        sa.select(incidents.c.id, incidents.c.candidate_run_id)
    ).all():
        config, model, device = facts[run_id]
        value = (
            _compact(_identity(config, model, device))
            if new
            else _old_series_config(config, model, device)
        )
        connection.execute(
            incidents.update().where(incidents.c.id == incident_id).values(series_config=value)
        )


def _rekey_series(connection: sa.Connection, *, with_weight_step: bool) -> None:
    """Give every metric the series row its key has under this revision's formula (adding or
    removing `weight_step`), then drop the rows nothing points at any more."""
    facts = _run_facts(connection)
    columns = [*SERIES_COLUMNS, "weight_step"]
    old_rows = {
        row[0]: dict(zip(columns, row[1:], strict=True))
        for row in connection.execute(sa.select(series.c.hash, *(series.c[c] for c in columns)))
    }
    pairs = connection.execute(sa.select(metrics.c.series_hash, metrics.c.run_id).distinct()).all()
    moves: dict[tuple[str, str], list[int]] = defaultdict(list)
    new_rows: dict[str, dict[str, Any]] = {}
    for old_hash, run_id in pairs:
        components = {c: old_rows[old_hash][c] for c in SERIES_COLUMNS}
        if with_weight_step:
            components["weight_step"] = facts[run_id][0]["weight_step"]
        components = _typed(components)
        new_hash = _compact(components)[:32]
        moves[old_hash, new_hash].append(run_id)
        new_rows[new_hash] = {
            **components,
            "weight_step": components.get("weight_step", 0.0),
        }
    missing = [
        {"hash": digest, **values} for digest, values in new_rows.items() if digest not in old_rows
    ]
    if missing:
        connection.execute(series.insert(), missing)
    for (old_hash, new_hash), run_ids in moves.items():
        if old_hash != new_hash:
            connection.execute(
                metrics.update()
                .where(metrics.c.series_hash == old_hash, metrics.c.run_id.in_(run_ids))
                .values(series_hash=new_hash)
            )
    connection.execute(
        series.delete().where(~series.c.hash.in_(sa.select(metrics.c.series_hash).distinct()))
    )


def upgrade() -> None:
    connection = op.get_bind()
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weight_step", sa.Float(), nullable=True))
    _rekey_series(connection, with_weight_step=True)
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.alter_column("weight_step", existing_type=sa.Float(), nullable=False)
    if has_table(connection, KEPT):
        op.execute(
            f"INSERT INTO series ({KEPT_COLUMNS}) SELECT {KEPT_COLUMNS} FROM {KEPT} "
            "WHERE hash NOT IN (SELECT hash FROM series)"
        )
        drop_kept(connection, KEPT)
    _rehash_runs(connection, ("engine", "prompts", "kv_cache_gib"))
    _rehash_incidents(connection, new=True)
    with op.batch_alter_table("arm_results", schema=None) as batch_op:
        batch_op.drop_column("verdict")
        batch_op.drop_column("verdict_reasons")
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_column("verdict")


def _judge_arms(connection: sa.Connection) -> None:
    """The verdicts the suite wrote before this revision: the default gates on each arm."""
    values: dict[int, dict[str, float]] = defaultdict(dict)
    for arm_id, name, value in connection.execute(
        sa.select(metrics.c.arm_result_id, metrics.c.name, metrics.c.value)
    ):
        values[arm_id][name] = value
    by_probe: dict[tuple[int, str], set[str]] = defaultdict(set)
    for arm_id, run_id, probe, applicable, gated in connection.execute(
        sa.select(
            arm_results.c.id,
            arm_results.c.run_id,
            arm_results.c.probe,
            arm_results.c.applicable,
            arm_results.c.gated,
        )
    ).all():
        reasons: list[str] = []
        if not applicable or not gated:
            verdict = "n/a"
        elif not values[arm_id]:
            verdict, reasons = "fail", ["no tokens to compare (every sequence diverged at once)"]
        else:
            for metric, limit, absolute in DEFAULT_GATES:
                value = values[arm_id].get(metric)
                if value is not None and (abs(value) if absolute else value) > limit:
                    reasons.append(f"{metric} = {value:.4g} > {limit:g}")
            verdict = "fail" if reasons else "pass"
        connection.execute(
            arm_results.update()
            .where(arm_results.c.id == arm_id)
            .values(verdict=verdict, verdict_reasons=reasons)
        )
        if applicable:
            by_probe[run_id, probe].add(verdict)
    for probe_id, run_id, probe in connection.execute(
        sa.select(probe_results.c.id, probe_results.c.run_id, probe_results.c.probe)
    ).all():
        seen = by_probe[run_id, probe]
        verdict = "fail" if "fail" in seen else "pass" if "pass" in seen else "n/a"
        connection.execute(
            probe_results.update().where(probe_results.c.id == probe_id).values(verdict=verdict)
        )


def downgrade() -> None:
    connection = op.get_bind()
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verdict", sa.String(length=8), server_default="n/a", nullable=False)
        )
    with op.batch_alter_table("arm_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("verdict", sa.String(length=8), server_default="n/a", nullable=False)
        )
        batch_op.add_column(
            sa.Column("verdict_reasons", sa.JSON(), server_default="[]", nullable=False)
        )
    _judge_arms(connection)
    _rehash_incidents(connection, new=False)
    _rehash_runs(connection, ("engine", "prompts"))
    keep_rows(
        connection,
        KEPT,
        f"SELECT {KEPT_COLUMNS} FROM series WHERE hash NOT IN (SELECT series_hash FROM metrics)",
    )
    _rekey_series(connection, with_weight_step=False)
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_column("weight_step")
