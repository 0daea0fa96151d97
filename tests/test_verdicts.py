"""Verdicts: an arm judged from its metrics and the tolerances (n/a, fail when unmeasured or a
gate breaks, else pass), and a probe from its arms."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest

from monitor.gates import Gate, Tolerances, carried_by_every_arm
from monitor.schema import Verdict
from monitor.verdicts import (
    CONTRAST,
    NOT_MEASURED,
    GateProblem,
    Judgement,
    gate_problems,
    judge_arm,
    judge_probe,
    judged_metrics,
    measured,
    probe_verdict,
)
from tests.store_factory import succeeded

WITHIN = {
    **dict.fromkeys(carried_by_every_arm(), 0.0),
    "n_tokens": 64.0,
    "token_mult_prob_error": 1.01,
    "k1": -0.05,
}
"""Metrics of an arm that compared tokens (every metric such an arm carries), inside every
default gate."""
BROKEN = {**WITHIN, "token_mult_prob_error": 1.387, "k1": -0.2}
"""Metrics that break two default gates, one of them absolute."""


@dataclass(frozen=True)
class Arm:
    """What judging reads of an arm (monitor.verdicts.ArmFacts), with nothing else checked:
    a result file's validation is the schema's job (tests/test_schema.py)."""

    probe: str
    arm: str
    metrics: dict[str, float]
    applicable: bool = True
    gated: bool = True
    reason: str | None = None


def arm(metrics: dict[str, float], probe: str = "p", name: str = "a", **changes: Any) -> Arm:
    return Arm(probe, name, metrics, **changes)


def verdict(
    changes: dict[str, float], tolerances: Tolerances, probe: str = "p", name: str = "a"
) -> Verdict:
    """The verdict on a measured arm whose metrics are WITHIN but for `changes`."""
    return judge_arm(arm({**WITHIN, **changes}, probe, name), tolerances).verdict


def test_an_arm_within_every_gate_passes_and_one_outside_fails_with_each_reason() -> None:
    assert measured(arm(WITHIN).metrics)
    assert judge_arm(arm(WITHIN), {}) == Judgement("pass", ())
    assert judge_arm(arm(BROKEN), {}) == Judgement(
        "fail",
        (
            "token_mult_prob_error = 1.387 > 1.05 (NeMo-RL gate)",
            "|k1| = 0.2 > 0.1 (verl mismatch-KL warning)",
        ),
    )


def test_a_limit_is_inclusive() -> None:
    assert verdict({"token_mult_prob_error": 1.05}, {}) == "pass"
    assert verdict({"token_mult_prob_error": math.nextafter(1.05, 2.0)}, {}) == "fail"
    assert verdict({"clip_fraction": 0.06}, {}) == "fail"


def test_an_arm_lacking_a_gated_metric_every_arm_carries_fails_as_not_measured() -> None:
    partial = {name: value for name, value in WITHIN.items() if name not in ("k3", "tis_fraction")}
    assert judge_arm(arm(partial), {}) == Judgement(
        "fail", ("not measured: k3 missing", "not measured: tis_fraction missing")
    )
    assert judge_arm(arm(partial), {"k3": None, "tis_fraction": None}).verdict == "pass"


def test_a_gate_on_a_metric_only_some_arms_carry_applies_where_it_is() -> None:
    """Token agreement exists only in vLLM-vs-vLLM arms: a gate on it leaves trainer arms."""
    tolerances = {"token_agreement": 0.5}
    assert verdict({}, tolerances) == "pass"
    assert verdict({"token_agreement": 0.9}, tolerances) == "fail"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_finite_breaks_its_gate(value: float) -> None:
    assert verdict({"k3": value}, {}) == "fail"
    assert verdict({"k1": value}, {}) == "fail"


def test_an_arm_with_non_finite_logprobs_fails_with_their_count() -> None:
    assert judge_arm(arm({**WITHIN, "nonfinite_tokens": 0.0}), {}).verdict == "pass"
    assert judge_arm(arm({**WITHIN, "nonfinite_tokens": 3.0}), {}) == Judgement(
        "fail", ("not measured: nonfinite_tokens = 3 > 0 (non-finite logprobs)",)
    )


def test_an_arm_whose_read_back_contradicts_it_fails_naming_what() -> None:
    unmet = "prefix caching read back off; no prefix-cache hit"
    judged = judge_arm(arm({**WITHIN, "unmet_claims": 2.0}, reason=unmet), {})
    assert judged == Judgement("fail", (f"not measured: {unmet}",))
    assert judge_arm(arm({**WITHIN, "unmet_claims": 0.0}), {}).verdict == "pass"
    bare = judge_arm(arm({**WITHIN, "unmet_claims": 1.0}), {})
    assert bare.reasons == ("not measured: unmet_claims = 1 > 0 (read-back contradicts the arm)",)


def test_a_pair_arm_passes_only_on_what_it_compared() -> None:
    """65 of 65 sequences diverging at position 1 compare 65 tokens: that is no pass."""
    diverged = {**WITHIN, "n_tokens": 65.0, "uncompared_fraction": 0.98}
    diverged |= {"seq_diverged_fraction": 1.0, "token_agreement": 0.02}
    reasons = judge_arm(arm(diverged), {}).reasons
    assert reasons[0].startswith("not measured: uncompared_fraction = 0.98 > 0.25")
    assert reasons[1].startswith("seq_diverged_fraction = 1 > 0.25")
    agreeing = {**WITHIN, "uncompared_fraction": 0.0, "seq_diverged_fraction": 0.0}
    assert judge_arm(arm(agreeing), {}).verdict == "pass"


def test_tokens_outside_the_trainers_support_are_gated() -> None:
    assert verdict({"outside_support_fraction": 0.01}, {}) == "pass"
    assert verdict({"outside_support_fraction": 0.02}, {}) == "fail"
    assert verdict({"outside_support_fraction": 0.02}, {"outside_support_fraction": 0.05}) == "pass"


def test_an_arm_that_does_not_apply_is_na_whatever_its_numbers() -> None:
    judged = judge_arm(arm(BROKEN, applicable=False, reason="V0 engine removed"), {})
    assert judged == Judgement("n/a", ("not applicable: V0 engine removed",))


def test_a_contrast_arm_is_na_however_far_its_sides_differ() -> None:
    assert judge_arm(arm(BROKEN, gated=False), {}) == Judgement("n/a", (CONTRAST,))
    assert judge_arm(arm({}, gated=False), {}).verdict == "n/a"


@pytest.mark.parametrize(
    "metrics",
    [{}, {**WITHIN, "n_tokens": 0.0}, {k: v for k, v in WITHIN.items() if k != "n_tokens"}],
)
def test_an_applicable_gated_arm_that_compared_no_token_fails(metrics: dict[str, float]) -> None:
    assert not measured(arm(metrics).metrics)
    assert judge_arm(arm(metrics), {}) == Judgement("fail", (NOT_MEASURED,))
    assert judge_arm(arm(metrics), {"k3": None, "token_mult_prob_error": None}).verdict == "fail"


def test_judging_reads_the_token_count_the_default_gates_and_the_tolerated_metrics() -> None:
    judged = {"n_tokens", "token_mult_prob_error", "k1", "k3"}
    judged |= {"icepop_fraction", "tis_fraction", "clip_fraction", "outside_support_fraction"}
    judged |= {"nonfinite_tokens", "unmet_claims", "uncompared_fraction", "seq_diverged_fraction"}
    assert judged_metrics({}) == judged
    assert judged_metrics({"p/a/mean_abs_delta": 0.1, "k3": None}) == judged | {"mean_abs_delta"}


@pytest.mark.parametrize(
    ("probe", "name", "k3", "expected", "source"),
    [
        ("p", "a", 0.06, "fail", "override p/a/k3"),
        ("p", "a", 0.04, "pass", None),
        ("p", "b", 0.15, "pass", None),
        ("p", "b", 0.25, "fail", "override p/k3"),
        ("q", "a", 0.02, "fail", "override k3"),
    ],
)
def test_the_most_specific_tolerance_decides(
    probe: str, name: str, k3: float, expected: Verdict, source: str | None
) -> None:
    """Each value passes or fails only under the limit of its most specific key."""
    tolerances = {"k3": 0.01, "p/k3": 0.2, "p/a/k3": 0.05}
    judged = judge_arm(arm({**WITHIN, "k3": k3}, probe, name), tolerances)
    assert judged.verdict == expected
    assert [r.endswith(f"({source})") for r in judged.reasons] == ([True] if source else [])


def test_a_null_tolerance_switches_a_gate_off_at_its_scope_only() -> None:
    off_here = {"p/a/token_mult_prob_error": None}
    assert verdict({"token_mult_prob_error": 2.0}, off_here) == "pass"
    assert verdict({"token_mult_prob_error": 2.0}, off_here, name="b") == "fail"
    everywhere_but_here = {"k3": None, "p/a/k3": 0.05}
    assert verdict({"k3": 0.5}, everywhere_but_here, name="b") == "pass"
    assert verdict({"k3": 0.5}, everywhere_but_here) == "fail"
    off_in_probe = {"k3": 0.01, "p/k3": None}
    assert verdict({"k3": 0.5}, off_in_probe) == "pass"
    assert verdict({"k3": 0.05}, off_in_probe, probe="q") == "fail"


def test_absolute_gates_judge_the_size_and_other_gates_the_signed_value() -> None:
    assert verdict({"k1": 0.2}, {}) == "fail"
    assert verdict({"k1": -0.2}, {}) == "fail"
    assert verdict({"k1": -0.2}, {"k1": 0.3}) == "pass"
    assert verdict({"mean_delta": -0.2}, {"mean_delta": 0.1}) == "pass"
    assert verdict({"mean_delta": 0.2}, {"mean_delta": 0.1}) == "fail"


def test_gate_problems_name_each_gate_with_the_value_that_broke_it() -> None:
    tolerances = {"p/mean_abs_delta": 0.02, "k3": 0.5}
    values = {**BROKEN, "mean_abs_delta": 0.03, "k3": 0.4}
    assert gate_problems("p", "a", values, tolerances) == [
        GateProblem(Gate("token_mult_prob_error", 1.05, "NeMo-RL gate"), 1.387),
        GateProblem(Gate("k1", 0.1, "verl mismatch-KL warning", absolute=True), -0.2),
        GateProblem(Gate("mean_abs_delta", 0.02, "override p/mean_abs_delta"), 0.03),
    ]
    assert gate_problems("p", "a", WITHIN, tolerances) == []


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([], "n/a"),
        (["n/a", "n/a"], "n/a"),
        (["pass", "n/a"], "pass"),
        (["pass", "pass"], "pass"),
        (["n/a", "fail", "pass"], "fail"),
        (["fail"], "fail"),
    ],
)
def test_a_probe_fails_with_any_arm_and_passes_with_one(
    verdicts: list[Verdict], expected: Verdict
) -> None:
    assert probe_verdict(verdicts) == expected
    assert probe_verdict(iter(verdicts)) == expected


def test_a_probe_is_judged_from_its_arms_under_the_tolerances() -> None:
    contrast = arm(BROKEN, name="contrast", gated=False)
    assert judge_probe([contrast, arm(WITHIN)], {}) == "pass"
    assert judge_probe([contrast, arm(WITHIN), arm({}, name="empty")], {}) == "fail"
    assert judge_probe([contrast, arm(BROKEN)], {}) == "fail"
    assert judge_probe([contrast, arm(BROKEN)], {"k1": 0.5, "token_mult_prob_error": 2.0}) == "pass"
    assert judge_probe([contrast], {}) == "n/a"


def test_a_realistic_result_is_judged_probe_by_probe() -> None:
    """A result from the store's factory: one arm shifted by a whole nat fails its probe alone,
    until every gate it breaks is switched off for that arm."""
    result = succeeded(failing=("batch_invariance/repeat_run",))
    assert {probe.name: judge_probe(probe.arms, {}) for probe in result.probes} == {
        "logprob_semantics": "pass",
        "prefix_cache": "pass",
        "batch_invariance": "fail",
        "v0_vs_v1": "n/a",
    }
    failing = next(a for a in result.arms() if a.arm == "repeat_run")
    broken = gate_problems(failing.probe, failing.arm, failing.metrics, {})
    assert len(broken) > 1
    lenient = {f"batch_invariance/repeat_run/{problem.gate.metric}": None for problem in broken}
    assert judge_probe(result.probes[2].arms, lenient) == "pass"
    one_off = dict(list(lenient.items())[:1])
    assert judge_probe(result.probes[2].arms, one_off) == "fail"
