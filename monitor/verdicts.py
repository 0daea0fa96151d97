"""Verdicts: an arm judged from its measured numbers and the configured tolerances, a probe from
its arms. Computed wherever a verdict is shown and never stored, so the Overview matrix, the run
pages, the CLI and detection's gate findings always say the same. Pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from monitor.gates import DEFAULT_GATES, KEY_SEPARATOR, Gate, Tolerances, resolve_gates
from monitor.schema import Verdict

CONTRAST = "contrast: its two sides differ on purpose; it sizes that mismatch, not gated"
NOT_MEASURED = "not measured: no tokens compared"
MEASURED_BY = "n_tokens"


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


def broken_gates(
    probe: str, arm: str, metrics: Mapping[str, float], tolerances: Tolerances
) -> list[tuple[Gate, float]]:
    """The gates of one arm that its metrics break, with the value that breaks each."""
    return [
        (gate, metrics[gate.metric])
        for gate in resolve_gates(probe, arm, tolerances)
        if gate.metric in metrics and gate.check(metrics[gate.metric]) is not None
    ]


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
    if not measured(arm.metrics):
        return Judgement("fail", (NOT_MEASURED,))
    broken = broken_gates(arm.probe, arm.arm, arm.metrics, tolerances)
    reasons = tuple(str(gate.check(value)) for gate, value in broken)
    return Judgement("fail" if reasons else "pass", reasons)


def probe_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """fail when any arm fails, pass when some pass and none fail, else n/a."""
    seen = set(verdicts)
    if "fail" in seen:
        return "fail"
    return "pass" if "pass" in seen else "n/a"


def judge_probe(arms: Iterable[ArmFacts], tolerances: Tolerances) -> Verdict:
    return probe_verdict(judge_arm(arm, tolerances).verdict for arm in arms)
