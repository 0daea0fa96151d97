"""A release's detection end to end over realistic result documents: gates, drift with BH across
its series and the noise floor of repeats, change points, and the incident draft they make."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest

from monitor.detection.detect import (
    ArmInput,
    DetectionPolicy,
    RunInput,
    SeriesName,
    draft_incident,
    drift_tests,
    evaluate_release,
    noise_floors,
)
from monitor.detection.errors import DetectionError, PromptSetMismatchError
from monitor.detection.findings import IncidentDraft, build_incident
from monitor.detection.noise import COMMON_SHIFT_MULTIPLE, sampling_sd
from monitor.detection.render import render_alert
from monitor.detection.traces import per_prompt_values
from monitor.metrics import HARNESS
from monitor.schema import ArmResult, ProbeResult, SamplingSpec, SuiteResult
from monitor.verdicts import judge_arm
from tests.detection_inputs import run_input
from tests.store_factory import arm_result, succeeded

N_PROMPTS, N_TOKENS = 52, 24
ARMS = {
    ("logprob_semantics", "processed"): 0.002,
    ("prefix_cache", "cache_on"): 0.004,
    ("batch_invariance", "batch_1_vs_batch_n"): 0.006,
}
"""Each arm's spread of δ per token; a regression widens it."""
SHIFTED = ("prefix_cache", "cache_on")
SAMPLING = SamplingSpec(temperature=0.7, top_p=0.9, top_k=50, max_tokens=N_TOKENS, seed=0)


def result(
    seed: int, version: str = "0.31.0", scales: dict[tuple[str, str], float] | None = None
) -> SuiteResult:
    """A succeeded result of ARMS over N_PROMPTS prompts (enough for a paired test), each arm's
    δ drawn with its scale; equal seeds give equal token arrays."""
    probes: dict[str, list[ArmResult]] = {}
    for index, ((probe, name), scale) in enumerate({**ARMS, **(scales or {})}.items()):
        arm = arm_result(
            probe,
            name,
            version,
            sampling=SAMPLING,
            n_prompts=N_PROMPTS,
            n_tokens=N_TOKENS,
            noise=scale,
            seed=seed * 100 + index,
        )
        probes.setdefault(probe, []).append(arm)
    arms = [ProbeResult(name=name, description=name, arms=arms) for name, arms in probes.items()]
    return succeeded(version, probes=tuple(probes)).model_copy(update={"probes": arms})


def metric_of(run: SuiteResult, metric: str, key: tuple[str, str] = SHIFTED) -> float:
    return next(a for a in run.arms() if (a.probe, a.arm) == key).metrics[metric]


BASELINE_RESULT = result(seed=1)
BASELINE = run_input(BASELINE_RESULT, "0.31.0", "run-1")
REPEATS = [run_input(result(seed=10 + i), "0.31.0", f"repeat-{i}") for i in range(3)]


def candidate(seed: int = 2, times: float = 1.0) -> RunInput:
    """Release 0.32.0 with SHIFTED's spread `times` the baseline's."""
    scaled = {SHIFTED: ARMS[SHIFTED] * times}
    return run_input(result(seed, "0.32.0", scaled), "0.32.0", "run-2")


def detect_release(
    candidate: RunInput, baseline: RunInput, **context: object
) -> IncidentDraft | None:
    """What judging a stored run does with detection: findings, then the incident draft."""
    findings = evaluate_release(candidate, baseline, **context)  # type: ignore[arg-type]
    return draft_incident(candidate, findings, DetectionPolicy())


def test_an_identical_release_gives_no_finding() -> None:
    same = candidate(seed=1)
    assert evaluate_release(same, BASELINE, repeats=REPEATS) == []
    assert detect_release(same, BASELINE, repeats=REPEATS) is None


def test_a_repeat_of_the_baseline_gives_no_incident() -> None:
    assert detect_release(candidate(), BASELINE, repeats=REPEATS) is None


def test_a_large_shift_is_one_incident_on_the_right_series() -> None:
    shifted = result(seed=2, version="0.32.0", scales={SHIFTED: ARMS[SHIFTED] * 4})
    incident = detect_release(run_input(shifted, "0.32.0", "run-2"), BASELINE, repeats=REPEATS)
    assert incident is not None
    assert incident.release == "0.32.0" and incident.run_id == "run-2"
    assert incident.baseline_release == "0.31.0" and incident.probes == ["prefix_cache"]
    assert {"mean_abs_delta", "k3", "token_mult_prob_error"} <= set(incident.metrics)
    assert incident.severity == "critical"
    drifts = {f.metric: f for f in incident.findings if f.kind == "drift"}
    mad = drifts["mean_abs_delta"]
    assert mad.direction == "worse" and mad.effect is not None and mad.effect > 0
    assert mad.baseline_value is not None and mad.candidate_value > 3 * mad.baseline_value
    assert mad.q_value is not None and mad.p_value is not None and mad.q_value >= mad.p_value
    assert mad.ci_low is not None and mad.ci_high is not None
    assert 0 < mad.ci_low < mad.effect < mad.ci_high
    assert mad.noise_floor is not None and mad.effect_in_floors is not None
    assert mad.effect_in_floors > 10 and mad.n_prompts == N_PROMPTS
    tokens = incident.divergent_tokens
    assert len(tokens) == 10 and {(t.probe, t.arm) for t in tokens} == {SHIFTED}
    trace = next(a for a in shifted.arms() if (a.probe, a.arm) == SHIFTED).tokens
    assert trace is not None
    delta = trace.arrays().delta
    assert [t.index for t in tokens] == np.argsort(-np.abs(delta), kind="stable")[:10].tolist()
    assert all(t.delta == pytest.approx(delta[t.index]) for t in tokens)
    title, body = render_alert(incident, "http://localhost:8501")
    assert "0.32.0" in title and "prefix_cache" in title
    assert body.endswith("/run_detail?run=run-2")


def test_an_improvement_is_found_with_its_sign_but_opens_no_incident() -> None:
    better = candidate(times=1 / 3)
    findings = evaluate_release(better, BASELINE, repeats=REPEATS)
    mad = next(f for f in findings if f.metric == "mean_abs_delta")
    assert (mad.probe, mad.arm) == SHIFTED
    assert mad.direction == "better" and mad.effect is not None and mad.effect < 0
    assert all(f.severity == "info" for f in findings)
    assert detect_release(better, BASELINE, repeats=REPEATS) is None


def test_q_values_span_every_series_of_the_release() -> None:
    tests = drift_tests(BASELINE, candidate(), {}, DetectionPolicy())
    assert len(tests) == len(ARMS) * len(DetectionPolicy().metrics)
    ordered = sorted(tests, key=lambda t: t.test.p_value)
    assert all(t.q_value >= t.test.p_value for t in tests)
    assert all(a.q_value <= b.q_value for a, b in itertools.pairwise(ordered))


FAILING = "prefix_cache/cache_on"
"""The arm store_factory shifts by a whole nat when asked: it breaks several default gates."""


def test_gates_new_breaches_are_major_known_ones_info_and_tolerances_apply() -> None:
    broken = run_input(succeeded("0.32.0", failing=(FAILING,)), "0.32.0", "r")
    clean = run_input(succeeded("0.31.0"), "0.31.0", "b")
    gates = [f for f in evaluate_release(broken, clean) if f.kind == "gate"]
    assert {"token_mult_prob_error", "k1", "clip_fraction"} <= {f.metric for f in gates}
    assert all(f.severity == "major" and f"{f.probe}/{f.arm}" == FAILING for f in gates)
    assert all(f.limit is not None and abs(f.candidate_value) > f.limit for f in gates)
    known = run_input(succeeded("0.31.0", failing=(FAILING,)), "0.31.0", "b")
    again = [f for f in evaluate_release(broken, known) if f.kind == "gate"]
    assert len(again) == len(gates) and all(f.severity == "info" for f in again)
    off = {f"{FAILING}/{f.metric}": None for f in gates}
    assert not [f for f in evaluate_release(broken, None, tolerances=off) if f.kind == "gate"]


def test_gate_findings_are_the_reasons_each_arm_fails_its_verdict() -> None:
    """Detection and every surface judge alike: a gate finding for each gate a gated arm's
    verdict fails on, none for an arm that passes, does not apply or is a contrast."""
    result = succeeded("0.32.0", failing=(FAILING, "logprob_semantics/raw"))
    contrast = next(a for a in result.arms() if f"{a.probe}/{a.arm}" == FAILING)
    contrast.gated = False
    tolerances = {"logprob_semantics/raw/k1": None, "clip_fraction": 0.5}
    found = evaluate_release(run_input(result, "0.32.0", "r"), None, tolerances=tolerances)
    judged = {(a.probe, a.arm): judge_arm(a, tolerances) for a in result.arms()}
    failed_on = {
        (*key, reason.split(" = ")[0].strip("|"))
        for key, judgement in judged.items()
        for reason in judgement.reasons
        if judgement.verdict == "fail"
    }
    assert {(f.probe, f.arm, f.metric) for f in found if f.kind == "gate"} == failed_on
    assert {metric for *_, metric in failed_on} == {
        "token_mult_prob_error",
        "k3",
        "tis_fraction",
        "clip_fraction",
    }
    assert judged[("prefix_cache", "cache_on")].verdict == "n/a"
    assert metric_of(result, "token_mult_prob_error", ("prefix_cache", "cache_on")) > 1.05


def test_a_new_level_confirmed_by_the_candidate_is_a_change_point() -> None:
    key: SeriesName = (*SHIFTED, "mean_abs_delta")
    level = metric_of(BASELINE_RESULT, "mean_abs_delta")
    earlier = result(seed=3, version="0.31.1", scales={SHIFTED: ARMS[SHIFTED] * 3})
    history = {key: [level, level * 1.01, level * 0.99, metric_of(earlier, "mean_abs_delta")]}
    shifted = candidate(times=3)
    found = evaluate_release(shifted, history=history, repeats=REPEATS)
    assert [(f.kind, f.metric, f.direction) for f in found] == [
        ("change_point", "mean_abs_delta", "worse")
    ]
    assert found[0].baseline_value == pytest.approx(level, rel=0.02)
    assert found[0].effect_in_floors is not None and found[0].effect_in_floors > 3
    assert noise_floors(REPEATS)[key].value == found[0].noise_floor
    assert evaluate_release(candidate(), history=history, repeats=REPEATS) == []
    lone = {key: [level, level * 1.01, level * 0.99, level]}
    assert evaluate_release(shifted, history=lone, repeats=REPEATS) == []


def test_incomparable_runs_and_bad_policies_are_refused() -> None:
    other_prompts = replace(candidate(), prompts_sha256="b" * 64)
    with pytest.raises(PromptSetMismatchError, match="different prompt sets"):
        evaluate_release(other_prompts, BASELINE)
    with pytest.raises(DetectionError, match="at least 2 repeat runs, got 1"):
        noise_floors(REPEATS[:1])
    with pytest.raises(DetectionError, match=r"one release, got \['0.31.0', '0.32.0'\]"):
        noise_floors([REPEATS[0], candidate()])
    with pytest.raises(DetectionError, match="alpha"):
        DetectionPolicy(alpha=0.0)
    with pytest.raises(DetectionError, match="drift metrics"):
        DetectionPolicy(metrics=("ess",))


def test_an_arm_that_measured_nothing_is_a_finding_as_its_verdict_is_a_fail() -> None:
    result = succeeded("0.32.0")
    empty = next(a for a in result.arms() if (a.probe, a.arm) == ("prefix_cache", "cache_on"))
    empty.metrics, empty.tokens = {}, None
    assert judge_arm(empty, {}).verdict == "fail"
    clean = run_input(succeeded("0.31.0"), "0.31.0", "b")
    [found] = [
        f for f in evaluate_release(run_input(result, "0.32.0", "r"), clean) if f.kind == "gate"
    ]
    assert (found.probe, found.arm, found.metric, found.severity) == (
        "prefix_cache",
        "cache_on",
        "n_tokens",
        "major",
    )
    assert found.candidate_value == 0.0 and found.detail.startswith("not measured")
    assert "not measured" in render_alert(build_incident([found]), "http://dash")[1]  # type: ignore[arg-type]
    same = run_input(result, "0.31.0", "b")
    [known] = [
        f for f in evaluate_release(run_input(result, "0.32.0", "r"), same) if f.kind == "gate"
    ]
    assert known.severity == "info"


def test_an_arm_missing_a_metric_every_arm_carries_is_a_finding() -> None:
    result = succeeded("0.32.0")
    partial = next(a for a in result.arms() if (a.probe, a.arm) == ("prefix_cache", "cache_on"))
    del partial.metrics["k3"]
    assert judge_arm(partial, {}).reasons == ("not measured: k3 missing",)
    clean = run_input(succeeded("0.31.0"), "0.31.0", "b")
    found = evaluate_release(run_input(result, "0.32.0", "r"), clean)
    [gate] = [f for f in found if f.kind == "gate"]
    assert (gate.arm, gate.metric, gate.severity, gate.candidate_value) == (
        "cache_on",
        "k3",
        "major",
        None,
    )
    assert gate.detail == "not measured: k3 missing"
    assert (
        "k3 [gate, major, worse]: not measured: k3 missing"
        in render_alert(
            build_incident([gate]),  # type: ignore[arg-type]
            "http://dash",
        )[1]
    )
    again = evaluate_release(run_input(result, "0.32.0", "r"), run_input(result, "0.31.0", "b"))
    assert [f.severity for f in again if f.kind == "gate"] == ["info"]


def with_harness(run: RunInput, mean_abs_delta: float) -> RunInput:
    """The run with a harness arm (fp32 vs fp64 trainer) that measured `mean_abs_delta`."""
    harness = ArmInput(
        True, False, {"n_tokens": 10.0, "mean_abs_delta": mean_abs_delta, "k1": -2e-7}
    )
    return replace(run, arms={**run.arms, HARNESS: harness})


def test_the_harness_resolution_is_a_floor_under_every_series() -> None:
    """Bit-identical repeats measure a floor of 0; the harness's resolution stands in."""
    shifted = candidate(times=4)
    key: SeriesName = (*SHIFTED, "mean_abs_delta")
    zero = noise_floors([BASELINE, replace(BASELINE, run_id="again")])
    assert zero[key].value == 0.0
    flagged = evaluate_release(shifted, BASELINE, repeats=[BASELINE, replace(BASELINE, run_id="x")])
    assert any(f.kind == "drift" and f.metric == "mean_abs_delta" for f in flagged)
    effect = next(f.effect for f in flagged if f.kind == "drift" and f.metric == "mean_abs_delta")
    assert effect is not None
    coarse = with_harness(shifted, mean_abs_delta=2 * effect)
    quiet = evaluate_release(coarse, BASELINE, repeats=[BASELINE, replace(BASELINE, run_id="x")])
    assert not [f for f in quiet if f.kind == "drift" and f.metric == "mean_abs_delta"]
    fine = evaluate_release(with_harness(shifted, effect / 20), BASELINE)
    found = next(f for f in fine if f.kind == "drift" and f.metric == "mean_abs_delta")
    trace = shifted.arms[SHIFTED].trace
    assert trace is not None
    resampled = COMMON_SHIFT_MULTIPLE * sampling_sd(per_prompt_values(trace, "mean_abs_delta"))
    assert effect / 20 < resampled < effect
    assert found.noise_floor == pytest.approx(resampled)
    assert not [f for f in fine if f.arm == "harness"]


def test_without_spread_in_repeats_a_sampled_arm_is_floored_by_resampling() -> None:
    """Bit-identical repeats show no sampling noise; another release samples other tokens, so
    the floor of a sampled arm is what resampling moves its mean by (3 × √2 × the standard
    error over prompts), while repeats that differ keep the floor they measured."""
    shifted = candidate(times=4)
    trace = shifted.arms[SHIFTED].trace
    assert trace is not None
    expected = COMMON_SHIFT_MULTIPLE * sampling_sd(per_prompt_values(trace, "mean_abs_delta"))
    identical = [BASELINE, replace(BASELINE, run_id="again")]
    found = evaluate_release(shifted, BASELINE, repeats=identical)
    floors = {f.metric: f.noise_floor for f in found if (f.probe, f.arm) == SHIFTED}
    assert floors and all(floor is not None and floor > 0.0 for floor in floors.values())
    assert floors["mean_abs_delta"] == pytest.approx(expected)
    measured = noise_floors(REPEATS)[(*SHIFTED, "k1")]
    assert measured.shift_sd > 0.0 and measured.sampling_sd == 0.0


def test_arms_that_measured_the_same_values_enter_the_family_once() -> None:
    base = with_harness(BASELINE, 1e-6)
    shifted = candidate(times=4)
    twin = ("prefix_cache", "cache_on_twin")
    doubled = replace(shifted, arms={**shifted.arms, twin: shifted.arms[SHIFTED]})
    base_doubled = replace(base, arms={**base.arms, twin: base.arms[SHIFTED]})
    once = {t.key: t.q_value for t in drift_tests(base, shifted, {}, DetectionPolicy())}
    twice = drift_tests(base_doubled, doubled, {}, DetectionPolicy())
    assert {t.key: t.q_value for t in twice if t.arm != "cache_on_twin"} == once
    assert all(
        t.q_value == once[t.key.replace("cache_on_twin", "cache_on")]
        for t in twice
        if t.arm == "cache_on_twin"
    )


def test_an_arm_whose_read_back_failed_is_a_gate_finding_naming_why() -> None:
    result = succeeded("0.32.0")
    cache = next(a for a in result.arms() if (a.probe, a.arm) == ("prefix_cache", "cache_on"))
    cache.metrics["unmet_claims"] = 1.0
    cache.reason = "no prefix-cache hit: 0 of 64 prompt tokens came from the cache"
    found = evaluate_release(run_input(result, "0.32.0", "r"), None)
    (finding,) = [f for f in found if f.metric == "unmet_claims"]
    assert finding.severity == "major" and finding.arm == "cache_on"
    assert finding.detail == f"not measured: {cache.reason}"
