"""The baseline of a candidate release: the last good (or intended) release before it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from packaging.version import InvalidVersion, Version

from monitor.detection.errors import DetectionError

ReleaseStatus = Literal["good", "intended", "failing", "pending"]
BASELINE_STATUSES: frozenset[str] = frozenset({"good", "intended"})


@dataclass(frozen=True)
class ReleaseState:
    """A release of one series and its triage state. "intended": its change was accepted, so it
    is the reference from then on; "pending": not triaged yet, never a baseline."""

    version: str
    status: ReleaseStatus


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise DetectionError(f"{text!r} is not a PEP 440 version") from None


def choose_baseline(series: Sequence[ReleaseState], candidate: str) -> str | None:
    """The highest-versioned good or intended release below the candidate, or None."""
    target = _version(candidate)
    seen: dict[Version, str] = {}
    best: tuple[Version, str] | None = None
    for state in series:
        if state.status not in get_args(ReleaseStatus):
            raise DetectionError(
                f"release {state.version} has unknown status {state.status!r} "
                f"(expected one of {', '.join(get_args(ReleaseStatus))})"
            )
        version = _version(state.version)
        if version in seen:
            raise DetectionError(
                f"release {state.version} appears twice in the series (as {seen[version]!r})"
            )
        seen[version] = state.version
        eligible = state.status in BASELINE_STATUSES and version < target
        if eligible and (best is None or version > best[0]):
            best = (version, state.version)
    return None if best is None else best[1]
