"""A running suite's progress, folded from its events (the planned phases, stage, step, engine
i of N, prompts generated, sequences scored):
one record that the terminal, a log file and the store (for the dashboard) all show the same
way, with the elapsed time and an estimate of what is left."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

WRITE_EVERY_S = 1.0
"""The store gets a run's progress at most this often; the newest is always written."""

SCORING_PHASE = "scoring"
"""The phase after the engines: the trainer scores every probe's arms."""

REFERENCE_PHASES_S = {
    "base": 305.0,
    "default_mode": 18.5,
    "raw": 18.5,
    "cache_on": 57.0,
    "async_on": 55.0,
    "bf16_head": 24.0,
    "fp32_head": 29.0,
    SCORING_PHASE: 265.0,
    "recipe": 21.0,
    "recipe-fresh": 96.0,
}
"""Seconds each phase of the default run took (every probe, SmolLM2, 2 quiet AVX2 EPYC cores,
2026-12-04; docs/benchmarks.md; default_mode and raw shared one engine, 37 s, split evenly): with
no earlier run to go by, a run's estimate is what its planned phases still need at the pace its
finished phases kept against these. A phase of engine configs sharing one engine ("a+b") is
their sum."""


def reference_s(phase: str) -> float | None:
    """The reference seconds of a phase, or of the configs sharing its engine; None if unknown."""
    parts = [REFERENCE_PHASES_S.get(name) for name in phase.split("+")]
    return sum(part for part in parts if part is not None) if None not in parts else None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunProgress:
    """Where a run is: its stage and step, engine i of N (engines finished), prompts generated
    (summed over generations) and sequences the trainer scored, steps done, when it started,
    and for the estimate how long the last such run took and the planned phases (engines,
    scoring), the current one and when it began (seconds into the run)."""

    started_at: datetime = field(default_factory=_now)
    stage: str = "starting"
    step: str = ""
    engine: int = 0
    engines: int | None = None
    engines_done: int = 0
    engines_started_at: datetime | None = None
    prompts_generated: int = 0
    sequences_scored: int = 0
    steps: int = 0
    expected_s: float | None = None
    status: str | None = None
    phases: list[str] = field(default_factory=list)
    phase: str | None = None
    phase_started_s: float | None = None

    def elapsed_s(self, now: datetime | None = None) -> float:
        return max(0.0, ((now or _now()) - self.started_at).total_seconds())

    def left_s(self, now: datetime | None = None) -> float | None:
        """Seconds left: the last such run's duration less the time spent, else what the
        planned phases still need at this run's pace (REFERENCE_PHASES_S), else the engines
        still to come at the pace of those finished; None when none is known yet."""
        at = now or _now()
        if self.status is not None:
            return 0.0
        if self.expected_s is not None:
            return max(0.0, self.expected_s - self.elapsed_s(at))
        planned = self._planned_left_s(self.elapsed_s(at))
        if planned is not None:
            return planned
        if self.engines and self.engines_done and self.engines_started_at is not None:
            pace = (at - self.engines_started_at).total_seconds() / self.engines_done
            return pace * (self.engines - self.engines_done)
        return None

    def _planned_left_s(self, elapsed: float) -> float | None:
        """The reference seconds of the phases after this one, and what is left of this
        one's, scaled by this run's pace so far (1 until a phase has finished); None unless
        every planned phase has a reference."""
        if (
            self.phase not in self.phases
            or self.phase_started_s is None
            or self.engines_started_at is None
        ):
            return None
        seconds = [reference_s(name) for name in self.phases]
        known = [value for value in seconds if value is not None]
        if len(known) < len(seconds):
            return None
        index = self.phases.index(self.phase)
        finished = sum(known[:index])
        first = self.elapsed_s(self.engines_started_at)
        pace = (self.phase_started_s - first) / finished if finished else 1.0
        in_phase = max(0.0, known[index] * pace - (elapsed - self.phase_started_s))
        return sum(known[index + 1 :]) * pace + in_phase

    def fraction(self) -> float | None:
        """The share of engines finished, the plan's own measure of the way done."""
        if self.status is not None:
            return 1.0
        return self.engines_done / self.engines if self.engines else None

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("started_at", "engines_started_at"):
            values[key] = values[key].isoformat() if values[key] else None
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> RunProgress:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("started_at", "engines_started_at"):
            if known.get(key):
                known[key] = datetime.fromisoformat(known[key])
        if known.get("started_at") is None:
            known.pop("started_at", None)
        return cls(**known)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def summary(progress: RunProgress, now: datetime | None = None) -> str:
    """One line: engine i of N, stage or step, counts, elapsed and an estimate of what is left."""
    parts = []
    if progress.engines:
        parts.append(f"engine {max(progress.engine, 1)}/{progress.engines}")
    parts.append(progress.step or progress.stage)
    parts.append(
        f"{progress.prompts_generated} prompts generated, {progress.sequences_scored} scored"
    )
    parts.append(f"elapsed {duration(progress.elapsed_s(now))}")
    left = progress.left_s(now)
    parts.append(f"~{duration(left)} left" if left is not None else "time left unknown")
    return " · ".join(parts)


def fold(progress: RunProgress, event: dict[str, Any]) -> bool:
    """Apply one suite event; True when it changes the stage or the engine."""
    kind = event.get("event")
    message = str(event.get("message", ""))[:200]
    _fold_phase(progress, event)
    if kind == "plan":
        phases = event.get("phases")
        if isinstance(phases, list) and all(isinstance(name, str) for name in phases):
            progress.phases = [name[:100] for name in phases[:100]]
        return False
    if kind == "stage":
        progress.stage, progress.step = message, ""
        return True
    if kind == "engine":
        total, done = event.get("total"), event.get("done")
        if isinstance(total, int) and isinstance(done, int):
            progress.engines, progress.engines_done = total, done
            progress.engine = min(done + 1, total)
        if progress.engines_started_at is None:
            progress.engines_started_at = _now()
        progress.stage, progress.step = message, ""
        return True
    if kind == "step":
        progress.step = message
        progress.steps += 1
        prompts, scored = event.get("prompts"), event.get("scored")
        if isinstance(prompts, int) and prompts > 0:
            progress.prompts_generated += prompts
        if isinstance(scored, int):
            progress.sequences_scored = max(progress.sequences_scored, scored)
        return False
    if kind == "done":
        progress.status = str(event.get("status"))
        progress.stage, progress.step = f"suite {progress.status}", ""
        return True
    return False


def _fold_phase(progress: RunProgress, event: dict[str, Any]) -> None:
    """An event naming a phase other than the current one starts it, now."""
    phase = event.get("phase")
    if not isinstance(phase, str) or phase == progress.phase:
        return
    progress.phase, progress.phase_started_s = phase[:100], progress.elapsed_s()


class ProgressFeed:
    """The suite's event callback: folds each event into `progress`, hands every step to
    `line` (a log line) and the progress to `sink` (which keeps the newest)."""

    def __init__(
        self,
        progress: RunProgress,
        sink: Callable[[RunProgress], None] = lambda _: None,
        line: Callable[[str], None] | None = None,
    ) -> None:
        self.progress, self.sink, self.line = progress, sink, line

    def __call__(self, event: dict[str, Any]) -> None:
        fold(self.progress, event)
        if self.line is not None and event.get("event") in ("stage", "step", "engine", "done"):
            self.line(summary(self.progress))
        self.sink(self.progress)
