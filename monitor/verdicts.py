"""Verdicts: an arm judged from its measured numbers and the configured tolerances, a probe from
its arms. Computed wherever a verdict is shown and never stored, so the Overview matrix, the run
pages, the CLI and detection's gate findings always say the same. Pure, no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from monitor.gates import (
    DEFAULT_GATES,
    KEY_SEPARATOR,
    Gate,
    Tolerances,
    carried_by_every_arm,
    resolve_gates,
)
from monitor.schema import Verdict

CONTRAST = "contrast: its two sides differ on purpose; it sizes that mismatch, not gated"
NOT_MEASURED = "not measured: no tokens compared"
MEASURED_BY = "n_tokens"
UNMET_CLAIMS = "unmet_claims"


class ArmFacts(Protocol):
    """What judging reads of an arm (a result file's arm and a stored one both have it)."""

    @property
    def probe(self) -> str: ...
    @property
    def arm(self) -> str: ...
    @property
    def applicable(self) -> bool: ...
    @property
    def gated(self) -> bool: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateProblem:
    """A gate an arm fails: its value breaks it, or (value None) the arm lacks a metric every
    measured arm carries, so the measurement is partial."""

    gate: Gate
    value: float | None
    why: str | None = None

    @property
    def reason(self) -> str:
        if self.value is None:
            return f"not measured: {self.gate.metric} missing"
        if self.why:
            return f"not measured: {self.why}"
        return str(self.gate.check(self.value))


def gate_problems(
    probe: str,
    arm: str,
    metrics: Mapping[str, float],
    tolerances: Tolerances,
    unmet: str | None = None,
) -> list[GateProblem]:
    """Every gate of one measured arm that its metrics fail. A gate on a metric only some arms
    carry (e.g. token agreement) applies where the metric is; `unmet` says which claims of
    the arm its read-backs contradicted (the arm's reason)."""
    problems = []
    for gate in resolve_gates(probe, arm, tolerances):
        value = metrics.get(gate.metric)
        if value is None and gate.metric in carried_by_every_arm():
            problems.append(GateProblem(gate, None))
        elif value is not None and gate.check(value) is not None:
            why = unmet if gate.metric == UNMET_CLAIMS else None
            problems.append(GateProblem(gate, value, why))
    return problems


def judged_metrics(tolerances: Tolerances) -> frozenset[str]:
    """Every metric judging an arm reads: the token count (was anything measured), the default
    gates' metrics and those the tolerances name. Readers load these."""
    named = {key.rsplit(KEY_SEPARATOR, 1)[-1] for key in tolerances}
    return frozenset({MEASURED_BY, *(gate.metric for gate in DEFAULT_GATES), *named})


def measured(metrics: Mapping[str, float]) -> bool:
    """Whether an arm compared any token (its `n_tokens` metric; readers always load it)."""
    return metrics.get(MEASURED_BY, 0.0) > 0


def judge_arm(arm: ArmFacts, tolerances: Tolerances) -> Judgement:
    """n/a when the arm does not apply or is a contrast; fail when it measured nothing or
    breaks a gate; else pass."""
    if not arm.applicable:
        return Judgement("n/a", (f"not applicable: {arm.reason}",))
    if not arm.gated:
        return Judgement("n/a", (CONTRAST,))
    problems = gate_problems(arm.probe, arm.arm, arm.metrics, tolerances, arm.reason)
    if not measured(arm.metrics):
        why = [p.reason for p in problems if p.gate.measurement and p.value is not None]
        return Judgement("fail", (NOT_MEASURED, *why))
    reasons = tuple(problem.reason for problem in problems)
    return Judgement("fail" if reasons else "pass", reasons)


def probe_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """fail when any arm fails, pass when some pass and none fail, else n/a."""
    seen = set(verdicts)
    if "fail" in seen:
        return "fail"
    return "pass" if "pass" in seen else "n/a"


def judge_probe(arms: Iterable[ArmFacts], tolerances: Tolerances) -> Verdict:
    return probe_verdict(judge_arm(arm, tolerances).verdict for arm in arms)


def verdict_counts(arms: Iterable[ArmFacts], tolerances: Tolerances) -> Counter[Verdict]:
    """How many of a run's arms pass, fail or get no verdict."""
    return Counter(judge_arm(arm, tolerances).verdict for arm in arms)
