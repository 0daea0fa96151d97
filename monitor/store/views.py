"""What the store's queries return: plain frozen dataclasses (never ORM rows) of what was
measured, and the pure comparison of two runs. No verdicts: readers judge with monitor.verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from monitor.metrics import TokenArrays
from monitor.schema import ModelRef, Stratum, Versions
from monitor.series import SeriesKey

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

View = TypeVar("View", bound="DataclassInstance")


def view_of(view: type[View], row: object, **given: Any) -> View:
    """A view dataclass filled from `given`, and from the row's like-named attributes for the
    rest."""
    names = [f.name for f in fields(view)]
    return view(**{name: given[name] if name in given else getattr(row, name) for name in names})


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
class ArmSummary:
    """What judging an arm needs (monitor.verdicts.ArmFacts): only the metrics asked for."""

    probe: str
    arm: str
    applicable: bool
    gated: bool
    reason: str | None
    metrics: dict[str, float]


@dataclass(frozen=True)
class RunView:
    """What every view of a run shows: the run, its release and where it stands."""

    id: int
    package: str
    version: str
    status: str
    runner: str
    attempt: int
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @property
    def release(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class RunSummary(RunView):
    model: str | None
    device: str | None
    config_hash: str
    arms: tuple[ArmSummary, ...]


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
    extra: dict[str, Any]
    metrics: dict[str, float]
    series: dict[str, str]
    by_probability: list[Stratum]
    by_position: list[Stratum]
    trace_tokens: int
    trace: TokenArrays | None


@dataclass(frozen=True)
class ProbeView:
    probe: str
    description: str
    finding: str
    arms: list[ArmView]


@dataclass(frozen=True)
class RunDetail(RunView):
    config: dict[str, Any]
    config_hash: str
    queued_at: datetime
    lease_expires_at: datetime | None
    error_tail: str | None
    schema_version: str | None
    environment: Versions | None
    model: ModelRef | None
    engine_starts: int
    trainer_forwards: int
    timings: dict[str, float]
    engines: list[dict[str, Any]]
    probes: list[ProbeView]

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
    a: ArmView | None
    b: ArmView | None
    metrics: list[MetricDelta]
    effective_config_changes: list[Change]

    @property
    def in_a(self) -> bool:
        return self.a is not None

    @property
    def in_b(self) -> bool:
        return self.b is not None


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
    """The newest succeeded run of one release that ran one probe, and that probe's arms."""

    run_id: int
    finished_at: datetime | None
    arms: tuple[ArmSummary, ...]


@dataclass(frozen=True)
class StatusMatrix:
    """Releases (oldest first, by version) × probes: the newest succeeded run's arms."""

    releases: list[ReleaseInfo]
    probes: list[str]
    cells: dict[tuple[int, str], MatrixCell] = field(default_factory=dict)

    def cell(self, release_id: int, probe: str) -> MatrixCell | None:
        return self.cells.get((release_id, probe))


@dataclass(frozen=True)
class ExportRow:
    """One metric value in long format: the run it came from and its series key."""

    run_id: int
    package: str
    version: str
    finished_at: datetime | None
    model_name: str | None
    value: float
    series_hash: str
    key: SeriesKey

    def columns(self) -> dict[str, Any]:
        """The flat row: run fields, then every series-key component, then value and hash."""
        return {
            "run_id": self.run_id,
            "package": self.package,
            "version": self.version,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "model_name": self.model_name,
            **self.key.components(),
            "value": self.value,
            "series_hash": self.series_hash,
        }


EXPORT_COLUMNS: tuple[str, ...] = (
    "run_id",
    "package",
    "version",
    "finished_at",
    "model_name",
    *(f.name for f in fields(SeriesKey)),
    "value",
    "series_hash",
)


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
        a=a,
        b=b,
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
    environment_a = a.environment.model_dump() if a.environment else None
    environment_b = b.environment.model_dump() if b.environment else None
    return RunComparison(
        a=a.id,
        b=b.id,
        release_a=a.release,
        release_b=b.release,
        comparable=a.config_hash == b.config_hash,
        config_changes=changes(a.config, b.config),
        environment_changes=changes(environment_a, environment_b),
        arms=[_compare_arms(arms_a.get(key), arms_b.get(key)) for key in order],
    )


@dataclass(frozen=True)
class JobView(RunView):
    """A run as the run queue sees it: who asked, when, and where it stands."""

    requested_by: str | None
    queued_at: datetime
    not_before: datetime | None
    lease_expires_at: datetime | None
