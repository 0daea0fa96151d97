"""Where a suite job runs: on this machine (`local`) or as a Ray Jobs submission (`ray`)."""

from __future__ import annotations

from monitor.config import RUNNER_KINDS, Settings
from monitor.runners.base import Runner, RunnerUnavailable


def make_runner(kind: str, settings: Settings) -> Runner:
    """The backend of one kind; RunnerUnavailable when it cannot be used with these settings."""
    if kind == "local":
        from monitor.runners.local import LocalRunner

        return LocalRunner(settings)
    if kind == "ray":
        from monitor.runners.ray import RayRunner

        return RayRunner(settings)
    raise RunnerUnavailable(f"unknown runner {kind!r}; known: {', '.join(RUNNER_KINDS)}")
