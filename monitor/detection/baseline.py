"""The baseline of a candidate release: the previous measured release of its series, whatever
its gates or its incident said, so every release after the first is compared with one."""

from __future__ import annotations

from collections.abc import Sequence

from packaging.version import InvalidVersion, Version

from monitor.detection.errors import DetectionError


def _version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise DetectionError(f"{text!r} is not a PEP 440 version") from None


def choose_baseline(measured: Sequence[str], candidate: str) -> str | None:
    """The highest measured release below the candidate, or None for the series' first. A gate
    breach the baseline shared is reported as known; triage "intended" accepts a change."""
    target = _version(candidate)
    seen: dict[Version, str] = {}
    for text in measured:
        version = _version(text)
        if version in seen:
            raise DetectionError(
                f"release {text} appears twice in the series (as {seen[version]!r})"
            )
        seen[version] = text
    below = [version for version in seen if version < target]
    return seen[max(below)] if below else None
