"""The results store's tables (SQLAlchemy 2 typed models, named `…Row` so they are never taken
for the result file's classes). Measurements are stored, judgements are not: verdicts are
computed from the stored metrics and the configured tolerances (monitor.verdicts)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from monitor.schema import LABEL_LENGTH, NAME_LENGTH, SHORT_LENGTH, TAG_LENGTH, TITLE_LENGTH

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
BigId = BigInteger().with_variant(Integer, "sqlite")
TagText = Annotated[str, mapped_column(String(TAG_LENGTH))]
ShortText = Annotated[str, mapped_column(String(SHORT_LENGTH))]
NameText = Annotated[str, mapped_column(String(NAME_LENGTH))]
TitleText = Annotated[str, mapped_column(String(TITLE_LENGTH))]
LabelText = Annotated[str, mapped_column(String(LABEL_LENGTH))]
"""Non-null text columns of a bounded length; the widths are the result schema's own, so the
schema refuses what a column cannot hold."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; store times in UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


CONFIRMATION = "confirmation"
"""`requested_by` of the runs that re-run an incident's failing probes."""
DISCOVERY = "discovery"
NIGHTLY = "nightly"
SCHEDULED_REQUESTERS = (DISCOVERY, NIGHTLY)
"""Requesters of routine scheduled runs, served after people's requests and confirmations."""


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class ReleaseRow(Base):
    """One published release of an engine package; backfill also records the ones that do not
    install here (installable false, with the reason)."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("package", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    package: Mapped[NameText]
    version: Mapped[NameText]
    published_at: Mapped[datetime | None]
    yanked: Mapped[bool] = mapped_column(default=False, server_default=false())
    installable: Mapped[bool | None]
    install_error: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class EnvironmentRow(Base):
    """The exact installed versions a suite ran with; one row per distinct fingerprint."""

    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[NameText] = mapped_column(unique=True)
    engine_package: Mapped[NameText]
    vllm: Mapped[NameText]
    torch: Mapped[NameText]
    transformers: Mapped[NameText]
    python: Mapped[ShortText]
    platform: Mapped[LabelText]
    device: Mapped[LabelText]
    monitor: Mapped[NameText]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelRow(Base):
    """A model by its weights fingerprint."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[NameText] = mapped_column(unique=True)
    name: Mapped[LabelText]
    source: Mapped[TagText]
    architecture: Mapped[TitleText]
    n_parameters: Mapped[int] = mapped_column(BigInteger)


class RunRow(Base):
    """One suite run of one release: queued by the scheduler or ingested from a result."""

    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "release_id", "status"),
        Index(None, "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="RESTRICT"))
    environment_id: Mapped[int | None] = mapped_column(ForeignKey("environments.id"))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"))
    config_hash: Mapped[NameText] = mapped_column(index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    runner: Mapped[ShortText]
    status: Mapped[RunStatus] = mapped_column(
        Enum(
            RunStatus,
            name="run_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda members: [member.value for member in members],
        )
    )
    attempt: Mapped[int] = mapped_column(default=1)
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]
    """A retried run waits until then (backoff)."""
    requested_by: Mapped[str | None] = mapped_column(String(255))
    """Who asked for the run: a person, CONFIRMATION or a SCHEDULED_REQUESTERS one; None: a
    result stored without a queued run (`parity run`, `ingest`, `backfill`)."""
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    """Owner token of the worker holding the lease; finishing or renewing needs it."""
    runner_job_id: Mapped[str | None] = mapped_column(String(128))
    """The runner's handle on the job (Ray submission id, local process group), to stop it."""
    error: Mapped[str | None] = mapped_column(Text)
    error_tail: Mapped[str | None] = mapped_column(Text)
    result_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    schema_version: Mapped[str | None] = mapped_column(String(TAG_LENGTH))
    engine_starts: Mapped[int] = mapped_column(default=0)
    trainer_forwards: Mapped[int] = mapped_column(default=0)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    engines: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class RunProgressRow(Base):
    """The latest progress of a run's current attempt (stage, engine i of N, counts, estimate),
    written by whoever executes it as the suite's events arrive, read by the dashboard."""

    __tablename__ = "run_progress"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)


class ProbeRow(Base):
    """A probe within a run and the suite's summary of what it measured."""

    __tablename__ = "probe_results"
    __table_args__ = (UniqueConstraint("run_id", "probe"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    probe: Mapped[NameText]
    description: Mapped[str] = mapped_column(Text)
    finding: Mapped[str] = mapped_column(Text)


class ArmRow(Base):
    """One engine-config arm of a probe: applicability, what took effect, whether it is gated."""

    __tablename__ = "arm_results"
    __table_args__ = (UniqueConstraint("run_id", "probe", "arm"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    probe: Mapped[NameText]
    arm: Mapped[NameText]
    description: Mapped[str] = mapped_column(Text)
    applicable: Mapped[bool]
    reason: Mapped[str | None] = mapped_column(Text)
    engine_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    effective_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sampling: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reference: Mapped[LabelText]
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)
    gated: Mapped[bool] = mapped_column(default=True, server_default=true())


class SeriesRow(Base):
    """The components of a series key (monitor.series.SeriesKey, one column each), by hash."""

    __tablename__ = "series"
    __table_args__ = (Index(None, "probe", "arm", "metric"),)

    hash: Mapped[ShortText] = mapped_column(primary_key=True)
    probe: Mapped[NameText]
    arm: Mapped[NameText]
    metric: Mapped[NameText]
    model: Mapped[NameText]
    device: Mapped[LabelText]
    temperature: Mapped[float] = mapped_column(Float)
    top_p: Mapped[float] = mapped_column(Float)
    top_k: Mapped[int]
    max_tokens: Mapped[int]
    seed: Mapped[int] = mapped_column(BigInteger)
    ignore_eos: Mapped[bool]
    trainer_dtype: Mapped[TagText]
    engine_dtype: Mapped[TagText]
    weight_step: Mapped[float] = mapped_column(Float)
    prompts_sha256: Mapped[NameText]


class MetricRow(Base):
    """One scalar metric of one arm (long format); `series_hash` makes a series one lookup."""

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("arm_result_id", "name"),
        Index(None, "series_hash", "run_id"),
        Index(None, "run_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    arm_result_id: Mapped[int] = mapped_column(ForeignKey("arm_results.id", ondelete="CASCADE"))
    series_hash: Mapped[str] = mapped_column(ForeignKey("series.hash"))
    name: Mapped[NameText]
    value: Mapped[float] = mapped_column(Float)


class StratumRow(Base):
    """Core metrics of one arm within one bucket of token probability or position."""

    __tablename__ = "strata"
    __table_args__ = (UniqueConstraint("arm_result_id", "kind", "bucket"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    arm_result_id: Mapped[int] = mapped_column(ForeignKey("arm_results.id", ondelete="CASCADE"))
    kind: Mapped[TagText]
    bucket: Mapped[ShortText]
    lo: Mapped[float] = mapped_column(Float)
    hi: Mapped[float] = mapped_column(Float)
    n_tokens: Mapped[int]
    fraction: Mapped[float] = mapped_column(Float)
    mean_abs_delta: Mapped[float] = mapped_column(Float)
    k1: Mapped[float] = mapped_column(Float)
    k3: Mapped[float] = mapped_column(Float)
    token_mult_prob_error: Mapped[float] = mapped_column(Float)
    clip_fraction: Mapped[float] = mapped_column(Float)


class TraceRow(Base):
    """One arm's per-token arrays as packed little-endian bytes (see monitor.store.traces)."""

    __tablename__ = "token_traces"

    arm_result_id: Mapped[int] = mapped_column(
        ForeignKey("arm_results.id", ondelete="CASCADE"), primary_key=True
    )
    n_tokens: Mapped[int]
    prompt_index: Mapped[bytes] = mapped_column(LargeBinary)
    position: Mapped[bytes] = mapped_column(LargeBinary)
    token_id: Mapped[bytes] = mapped_column(LargeBinary)
    vllm_logprob: Mapped[bytes] = mapped_column(LargeBinary)
    reference_logprob: Mapped[bytes] = mapped_column(LargeBinary)


class IncidentStatus(enum.StrEnum):
    """Triage state of an incident; "intended" makes its release the series' new baseline."""

    NEW = "new"
    INVESTIGATING = "investigating"
    INTENDED = "intended"
    FALSE_POSITIVE = "false_positive"
    FIXED = "fixed"


class Confirmation(enum.StrEnum):
    """Whether a re-run of the failing probes reproduced the incident's findings."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not_confirmed"


class AlertState(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


def _str_enum(kind: type[enum.StrEnum], name: str) -> Enum:
    """A string enum stored as VARCHAR with a CHECK constraint (portable, like run_status)."""
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


class IncidentRow(Base):
    """One regressed release of one series configuration (monitor.series.series_config: model,
    device, prompt set, sampling, series options): the detection draft, its baseline,
    confirmation and triage state."""

    __tablename__ = "incidents"
    __table_args__ = (
        UniqueConstraint("release_id", "series_config"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id", ondelete="RESTRICT"))
    engine_package: Mapped[NameText]
    version: Mapped[NameText]
    series_config: Mapped[NameText]
    """Hash of what makes runs of different releases comparable (monitor.series.series_config)."""
    model: Mapped[LabelText]
    device: Mapped[LabelText]
    severity: Mapped[TagText]
    status: Mapped[IncidentStatus] = mapped_column(_str_enum(IncidentStatus, "incident_status"))
    owner: Mapped[str | None] = mapped_column(String(255))
    draft: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The IncidentDraft (monitor.detection.findings) as JSON."""
    baseline_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    candidate_run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    confirmation: Mapped[Confirmation] = mapped_column(_str_enum(Confirmation, "confirmation"))
    confirmation_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentEventRow(Base):
    """One entry of an incident's history: opened, confirmed or not, triaged (who, when, from
    which status to which, owner and note)."""

    __tablename__ = "incident_events"
    __table_args__ = (Index(None, "incident_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    by: Mapped[LabelText]
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[TagText]
    owner: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str] = mapped_column(Text, default="")


class AlertRow(Base):
    """The outbox: one message per incident, severity reached and alert target, written in the
    transaction that confirms the incident or raises its severity; the sender claims, delivers
    and marks it (see monitor.alerts)."""

    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("incident_id", "severity", "target_hash"),
        Index(None, "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    target_index: Mapped[int]
    target_hash: Mapped[NameText]
    """sha256 of the Apprise URL (URLs carry secrets and are never stored)."""
    severity: Mapped[TagText]
    """The incident's severity the alert announces: a rise is alerted again, once."""
    title: Mapped[LabelText]
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[AlertState] = mapped_column(_str_enum(AlertState, "alert_state"))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None]
    """A sender holds the row until then; another may take it over only afterwards."""
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
