"""Default tolerance gates and the verdict they give an arm's metrics (kept at this path for the
suite; the gates live in `monitor.detection.gates`)."""

from __future__ import annotations

from monitor.detection.gates import DEFAULT_GATES, Gate, verdict

__all__ = ["DEFAULT_GATES", "Gate", "verdict"]
