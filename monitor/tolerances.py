"""Default tolerance gates from the field, and the verdict they give an arm's metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Gate:
    metric: str
    limit: float
    source: str
    absolute: bool = False

    def check(self, value: float) -> str | None:
        """Return a one-line reason when the value breaks the gate, else None."""
        measured = abs(value) if self.absolute else value
        if measured <= self.limit:
            return None
        shown = f"|{self.metric}|" if self.absolute else self.metric
        return f"{shown} = {measured:.4g} > {self.limit:g} ({self.source})"


DEFAULT_GATES: tuple[Gate, ...] = (
    Gate("token_mult_prob_error", 1.05, "NeMo-RL gate"),
    Gate("k1", 0.1, "verl mismatch-KL warning", absolute=True),
    Gate("k3", 0.1, "mismatch KL"),
    Gate("icepop_fraction", 0.01, "IcePop mask [0.5, 5] on >1% of tokens"),
)


def verdict(
    metrics: Mapping[str, float], gates: tuple[Gate, ...] = DEFAULT_GATES
) -> tuple[str, list[str]]:
    """Judge one arm: "pass" when every gate present in the metrics holds, else "fail"."""
    reasons = [
        reason
        for gate in gates
        if gate.metric in metrics and (reason := gate.check(metrics[gate.metric])) is not None
    ]
    return ("fail" if reasons else "pass"), reasons
