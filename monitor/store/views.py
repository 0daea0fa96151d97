"""What the store's queries return: plain frozen dataclasses (never ORM rows), and the pure
comparison of two runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitor.series import SeriesKey
from monitor.store.traces import TraceArrays


@dataclass(frozen=True)
class ReleaseInfo:
    id: int
    package: str
    version: str
    published_at: datetime | None
    yanked: bool
    installable: bool | None
    install_error: str | None
    n_runs: int
    latest_status: str | None

    @property
    def label(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class RunSummary:
    id: int
    package: str
    version: str
    status: str
    runner: str
    attempt: int
    model: str | None
    device: str | None
    config_hash: str
    started_at: datetime | None
    finished_at: datetime | None
    n_pass: int
    n_fail: int
    n_not_applicable: int
    error: str | None

    @property
    def release(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class EnvironmentView:
    fingerprint: str
    engine_package: str
    vllm: str
    torch: str
    transformers: str
    python: str
    platform: str
    device: str
    monitor: str


@dataclass(frozen=True)
class ModelView:
    fingerprint: str
    name: str
    source: str
    architecture: str
    n_parameters: int


@dataclass(frozen=True)
class StratumView:
    kind: str
    bucket: str
    lo: float
    hi: float
    n_tokens: int
    fraction: float
    mean_abs_delta: float
    k1: float
    k3: float
    token_mult_prob_error: float
    clip_fraction: float


@dataclass(frozen=True)
class ArmView:
    probe: str
    arm: str
    description: str
    applicable: bool
    reason: str | None
    engine_config: dict[str, Any]
    effective_config: dict[str, Any] | None
    sampling: dict[str, Any] | None
    reference: str
    gated: bool
    verdict: str
    verdict_reasons: list[str]
    extra: dict[str, Any]
    metrics: dict[str, float]
    series: dict[str, str]
    by_probability: list[StratumView]
    by_position: list[StratumView]
    trace_tokens: int
    trace: TraceArrays | None


@dataclass(frozen=True)
class ProbeView:
    probe: str
    description: str
    finding: str
    verdict: str
    arms: list[ArmView]


@dataclass(frozen=True)
class RunDetail:
    id: int
    package: str
    version: str
    status: str
    runner: str
    attempt: int
    config: dict[str, Any]
    config_hash: str
    queued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    error: str | None
    error_tail: str | None
    schema_version: str | None
    environment: EnvironmentView | None
    model: ModelView | None
    engine_starts: int
    trainer_forwards: int
    timings: dict[str, float]
    engines: list[dict[str, Any]]
    probes: list[ProbeView]

    @property
    def release(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def arms(self) -> list[ArmView]:
        return [arm for probe in self.probes for arm in probe.arms]

    def arm(self, probe: str, arm: str) -> ArmView | None:
        return next((a for a in self.arms if (a.probe, a.arm) == (probe, arm)), None)


@dataclass(frozen=True)
class Change:
    """A setting that differs between two runs (None where one side lacks it)."""

    key: str
    a: Any
    b: Any


@dataclass(frozen=True)
class MetricDelta:
    metric: str
    a: float | None
    b: float | None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class ArmComparison:
    probe: str
    arm: str
    in_a: bool
    in_b: bool
    verdict_a: str | None
    verdict_b: str | None
    metrics: list[MetricDelta]
    effective_config_changes: list[Change]


@dataclass(frozen=True)
class RunComparison:
    a: int
    b: int
    release_a: str
    release_b: str
    comparable: bool
    config_changes: list[Change]
    environment_changes: list[Change]
    arms: list[ArmComparison]


@dataclass(frozen=True)
class SeriesPoint:
    run_id: int
    package: str
    version: str
    value: float
    finished_at: datetime | None


@dataclass(frozen=True)
class SeriesView:
    key: SeriesKey
    hash: str
    points: list[SeriesPoint]


@dataclass(frozen=True)
class MatrixCell:
    verdict: str
    run_id: int
    finished_at: datetime | None


@dataclass(frozen=True)
class StatusMatrix:
    """Releases (oldest first, by version) × probes: the newest succeeded run's verdict."""

    releases: list[ReleaseInfo]
    probes: list[str]
    cells: dict[tuple[int, str], MatrixCell] = field(default_factory=dict)

    def cell(self, release_id: int, probe: str) -> MatrixCell | None:
        return self.cells.get((release_id, probe))


@dataclass(frozen=True)
class ExportRow:
    """One metric value in long format, with the columns of its series key."""

    run_id: int
    package: str
    version: str
    finished_at: datetime | None
    probe: str
    arm: str
    metric: str
    value: float
    model: str
    model_name: str | None
    device: str
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    ignore_eos: bool
    trainer_dtype: str
    engine_dtype: str
    prompts_sha256: str
    series_hash: str


def changes(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> list[Change]:
    """Keys whose values differ, sorted; a key missing on one side counts as None there."""
    left, right = dict(a or {}), dict(b or {})
    return [
        Change(key, left.get(key), right.get(key))
        for key in sorted(left.keys() | right.keys())
        if left.get(key) != right.get(key)
    ]


def _compare_arms(a: ArmView | None, b: ArmView | None) -> ArmComparison:
    either = a if a is not None else b
    if either is None:
        raise ValueError("nothing to compare: neither run has this arm")
    names = sorted((a.metrics.keys() if a else set()) | (b.metrics.keys() if b else set()))
    return ArmComparison(
        probe=either.probe,
        arm=either.arm,
        in_a=a is not None,
        in_b=b is not None,
        verdict_a=a.verdict if a else None,
        verdict_b=b.verdict if b else None,
        metrics=[
            MetricDelta(
                name, a.metrics.get(name) if a else None, b.metrics.get(name) if b else None
            )
            for name in names
        ],
        effective_config_changes=changes(
            a.effective_config if a else None, b.effective_config if b else None
        ),
    )


def compare_details(a: RunDetail, b: RunDetail) -> RunComparison:
    """Per arm (in either run): metric deltas b − a and what took effect differently."""
    arms_a = {(arm.probe, arm.arm): arm for arm in a.arms}
    arms_b = {(arm.probe, arm.arm): arm for arm in b.arms}
    order = list(arms_a) + [key for key in arms_b if key not in arms_a]
    environment_a = vars(a.environment) if a.environment else None
    environment_b = vars(b.environment) if b.environment else None
    return RunComparison(
        a=a.id,
        b=b.id,
        release_a=a.release,
        release_b=b.release,
        comparable=a.config_hash == b.config_hash,
        config_changes=changes(a.config, b.config),
        environment_changes=[
            change
            for change in changes(environment_a, environment_b)
            if change.key != "fingerprint"
        ],
        arms=[_compare_arms(arms_a.get(key), arms_b.get(key)) for key in order],
    )


@dataclass(frozen=True)
class JobView:
    """A run as the run queue sees it: who asked, when, and where it stands."""

    id: int
    package: str
    version: str
    status: str
    runner: str
    attempt: int
    requested_by: str | None
    queued_at: datetime
    not_before: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    error: str | None

    @property
    def release(self) -> str:
        return f"{self.package}=={self.version}"
