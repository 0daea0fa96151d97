"""What the Trends page draws for one series, computed from its stored points: the newest run of
each release, the spread of repeat runs (noise band), a noise floor and the change points.
Pure functions, no I/O and no Streamlit."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from packaging.version import InvalidVersion, Version
from scipy.stats import median_abs_deviation

from monitor.detection.changepoints import MIN_SEGMENT, PENALTY_MULTIPLE, change_points
from monitor.series import SeriesKey
from monitor.store.views import SeriesPoint, SeriesView

BandMode = Literal["minmax", "2sd"]
BAND_MODES: dict[BandMode, str] = {
    "minmax": "min … max of repeats",
    "2sd": "mean ± 2 sd of repeats",
}
KEY_FIELDS_SHOWN: tuple[str, ...] = tuple(
    f.name for f in fields(SeriesKey) if f.name not in ("probe", "arm", "metric")
)
"""What a legend may name besides the arm: every other part of a series' identity."""


@dataclass(frozen=True)
class Band:
    """Spread of the repeat runs of one release."""

    version: str
    low: float
    high: float
    mean: float
    n_runs: int


@dataclass(frozen=True)
class TrendLine:
    """One series over releases (ordered by version): the newest run's value per release."""

    label: str
    key: SeriesKey
    versions: list[str]
    values: list[float]
    run_ids: list[int]
    bands: list[Band]
    change_points: list[str]
    floor: float | None
    floor_source: str


def version_order(version: str) -> tuple[int, Version | str]:
    """Sort key: PEP 440 order ("0.9.2" < "0.10.0"); anything unparsable last, by text."""
    try:
        return (0, Version(version))
    except InvalidVersion:
        return (1, version)


def release_order(versions: Iterable[str]) -> list[str]:
    """Distinct versions in release order: the categorical axis of every trend chart."""
    return sorted(set(versions), key=version_order)


def group_by_release(points: Sequence[SeriesPoint]) -> dict[str, list[SeriesPoint]]:
    """Points per version in release order; within a release, in the order stored (oldest run
    first), so the last point is the newest run."""
    groups: dict[str, list[SeriesPoint]] = {}
    for point in points:
        groups.setdefault(point.version, []).append(point)
    return {version: groups[version] for version in release_order(groups)}


def band(values: Sequence[float], mode: BandMode) -> tuple[float, float]:
    """(low, high) of repeat values: their range, or mean ± 2 sample sd."""
    array = np.asarray(values, dtype=np.float64)
    if mode == "minmax":
        return float(array.min()), float(array.max())
    spread = 2.0 * float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()) - spread, float(array.mean()) + spread


def noise_floor(
    repeats: Sequence[Sequence[float]], newest: Sequence[float]
) -> tuple[float | None, str]:
    """(floor, how it was measured). Pooled sd of repeat runs where any release has repeats;
    else the robust sd of release-to-release steps (normal-scaled MAD / √2; the plain sd when
    most steps are alike and the MAD is 0); else None."""
    groups = [np.asarray(g, dtype=np.float64) for g in repeats if len(g) >= 2]
    if groups:
        pooled = math.sqrt(float(np.mean([g.var(ddof=1) for g in groups])))
        runs = sum(g.size for g in groups)
        return pooled, f"pooled sd of {runs} repeat runs in {len(groups)} release(s)"
    if len(newest) >= 3:
        steps = np.diff(np.asarray(newest, dtype=np.float64))
        spread = float(median_abs_deviation(steps, scale="normal")) or float(steps.std())
        return spread / math.sqrt(2.0), "robust sd of release-to-release steps (no repeat runs)"
    return None, "too few releases to measure noise"


def penalty_multiple(n_releases: int) -> float:
    """Cost of a new level in noise floors for a whole history: BIC-like 2 ln n, at least the
    detector's own multiple. Detection asks only whether the newest releases start a level; a
    chart marks every level of a long history, where a fixed penalty cuts noise into levels."""
    return max(PENALTY_MULTIPLE, 2.0 * math.log(max(n_releases, 1)))


def trend_line(view: SeriesView, label: str, mode: BandMode = "minmax") -> TrendLine:
    """The line, noise bands and change points of one stored series."""
    groups = group_by_release(view.points)
    versions = list(groups)
    newest = [groups[v][-1] for v in versions]
    values = [p.value for p in newest]
    repeats = [[p.value for p in groups[v]] for v in versions]
    bands = []
    for version, runs in zip(versions, repeats, strict=True):
        if len(runs) >= 2:
            low, high = band(runs, mode)
            bands.append(Band(version, low, high, float(np.mean(runs)), len(runs)))
    floor, source = noise_floor(repeats, values)
    breaks: list[int] = []
    if floor is not None and len(values) >= 2 * MIN_SEGMENT:
        breaks = change_points(values, floor, penalty_multiple=penalty_multiple(len(values)))
    return TrendLine(
        label=label,
        key=view.key,
        versions=versions,
        values=values,
        run_ids=[p.run_id for p in newest],
        bands=bands,
        change_points=[versions[i] for i in breaks],
        floor=floor,
        floor_source=source,
    )


def series_labels(keys: Sequence[SeriesKey]) -> list[str]:
    """A legend label per key: the arm, plus whatever else differs between the keys shown."""
    differing = [name for name in KEY_FIELDS_SHOWN if len({getattr(key, name) for key in keys}) > 1]
    labels = []
    for key in keys:
        extra = [f"{name}={_short(getattr(key, name))}" for name in differing]
        labels.append(" · ".join([key.arm, *extra]))
    return labels


def _short(value: object) -> str:
    text = str(value)
    return text[:12] if len(text) > 16 else text


@dataclass(frozen=True)
class IncidentMarker:
    """An incident drawn on a trend line: at its release, on the line's value there."""

    version: str
    value: float
    label: str
    text: str


def incident_markers(
    line: TrendLine, incidents: Iterable[tuple[int, str, str, str, Sequence[str]]]
) -> list[IncidentMarker]:
    """Markers for the incidents (id, version, severity, status, regressed "probe/arm/metric"
    series) that name this line's series at a release the line has."""
    at = dict(zip(line.versions, line.values, strict=True))
    wanted = f"{line.key.probe}/{line.key.arm}/{line.key.metric}"
    markers = []
    for incident_id, version, severity, status, series in incidents:
        matched = next((v for v in at if _same_version(v, version)), None)
        if matched is None or wanted not in series:
            continue
        markers.append(
            IncidentMarker(
                matched,
                at[matched],
                line.label,
                f"incident {incident_id}: {severity}, {status}",
            )
        )
    return markers


def _same_version(a: str, b: str) -> bool:
    return version_order(a) == version_order(b)
