"""Paired drift tests, the noise floor from repeats, and Benjamini–Hochberg q-values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import false_discovery_control, norm
from scipy.stats import t as student_t

from monitor.detection.detect import DetectionPolicy, judge_drifts
from monitor.detection.drift import PairedTest, effect_interval, exceeds_floor, paired_test
from monitor.detection.errors import DetectionError, PromptSetMismatchError
from monitor.detection.fdr import q_values
from monitor.detection.noise import (
    COMMON_SHIFT_MULTIPLE,
    NoiseFloor,
    floor_from_matrix,
    noise_floor,
    pooled_shift,
)
from monitor.detection.traces import PromptValues

N_PROMPTS = 52


def prompt_levels(seed: int = 0) -> np.ndarray:
    """Per-prompt levels that differ a lot between prompts, as real prompts do."""
    return np.random.default_rng(seed).lognormal(-3.0, 0.8, N_PROMPTS)


def run(levels: np.ndarray, seed: int, noise: float = 0.05, shift: float = 0.0) -> PromptValues:
    rng = np.random.default_rng(seed)
    values = levels * np.exp(rng.normal(0.0, noise, levels.size)) + shift
    return PromptValues.build(np.arange(levels.size), values)


@settings(max_examples=40, deadline=None)
@given(values=arrays(np.float64, st.integers(1, 80), elements=st.floats(-1e3, 1e3)))
def test_identical_runs_show_no_drift(values: np.ndarray) -> None:
    same = PromptValues.build(np.arange(values.size), values)
    test = paired_test(same, same)
    assert test.p_value == 1.0 and test.effect == 0.0
    assert effect_interval(same, same) == (0.0, 0.0)
    assert not exceeds_floor(test.effect, 0.0)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_large_shift_is_found_with_its_sign(sign: float) -> None:
    levels = prompt_levels()
    baseline = run(levels, seed=1)
    shift = sign * 0.02
    candidate = run(levels, seed=2, shift=shift)
    test = paired_test(baseline, candidate)
    assert test.p_value < 1e-8
    assert np.sign(test.effect) == sign and abs(test.effect - shift) < 0.004
    low, high = effect_interval(baseline, candidate, seed=3)
    assert low < shift < high and np.sign(low) == np.sign(high) == sign
    assert test.candidate_value - test.baseline_value == pytest.approx(test.effect)


def test_repeat_noise_alone_is_not_significant_often() -> None:
    levels = prompt_levels()
    p_values = [paired_test(run(levels, 2 * i), run(levels, 2 * i + 1)).p_value for i in range(200)]
    assert np.mean(np.array(p_values) < 0.05) < 0.1


def test_mismatched_prompt_sets_are_refused() -> None:
    baseline = PromptValues.build([0, 1, 2], [0.1, 0.2, 0.3])
    candidate = PromptValues.build([0, 1, 3], [0.1, 0.2, 0.3])
    with pytest.raises(PromptSetMismatchError, match=r"k3: prompt sets differ \(1 prompt"):
        paired_test(baseline, candidate, "k3")
    with pytest.raises(PromptSetMismatchError):
        effect_interval(baseline, candidate)


def test_interval_arguments_are_checked() -> None:
    values = PromptValues.build([0, 1], [0.1, 0.2])
    with pytest.raises(DetectionError, match="level"):
        effect_interval(values, values, level=1.5)
    with pytest.raises(DetectionError, match="n_resamples"):
        effect_interval(values, values, n_resamples=5)


def test_noise_floor_measures_the_per_prompt_spread_of_repeats() -> None:
    rng = np.random.default_rng(0)
    levels = rng.normal(5.0, 2.0, 400)
    repeats = levels + rng.normal(0.0, 0.1, (4, 400))
    floor = floor_from_matrix(repeats)
    assert floor.n_repeats == 4 and floor.n_prompts == 400
    assert floor.prompt_sd == pytest.approx(0.1 * np.sqrt(2), rel=0.1)
    assert floor.shift_sd < 0.03 and floor.value == floor.prompt_sd


def test_runs_that_move_together_raise_the_floor() -> None:
    rng = np.random.default_rng(1)
    levels = rng.normal(5.0, 2.0, 52)
    shifts = np.array([[0.0], [0.5], [-0.5]])
    floor = floor_from_matrix(levels + shifts + rng.normal(0.0, 0.01, (3, 52)))
    assert floor.prompt_sd < 0.05
    assert floor.value == pytest.approx(COMMON_SHIFT_MULTIPLE * floor.shift_sd)
    assert floor.value > 1.5


def test_bit_identical_repeats_have_a_zero_floor_and_sparse_noise_is_kept() -> None:
    same = PromptValues.build(np.arange(5), [0.1, 0.2, 0.3, 0.4, 0.5])
    assert noise_floor([same, same]).value == 0.0
    sparse = np.zeros((2, 20))
    sparse[1, 3] = 0.5
    assert floor_from_matrix(sparse).prompt_sd > 0.0


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.zeros((1, 5)), "at least 2 repeat runs, got 1"),
        (np.zeros((2, 0)), "no prompts"),
        (np.zeros(5), "runs × prompts matrix"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), "1 non-finite"),
    ],
)
def test_bad_repeats_raise_named_errors(matrix: np.ndarray, message: str) -> None:
    with pytest.raises(DetectionError, match=message):
        floor_from_matrix(matrix)


def test_repeats_must_share_prompts() -> None:
    a = PromptValues.build([0, 1], [0.1, 0.2])
    b = PromptValues.build([0, 2], [0.1, 0.2])
    with pytest.raises(PromptSetMismatchError):
        noise_floor([a, b])
    with pytest.raises(DetectionError, match="got 1"):
        noise_floor([a])


def test_exceeds_floor() -> None:
    assert exceeds_floor(0.3, 0.1, floor_multiple=2.0)
    assert not exceeds_floor(-0.15, 0.1, floor_multiple=2.0)
    assert exceeds_floor(-1e-9, None)
    assert not exceeds_floor(0.05, None, min_effect=0.1)


@given(p=arrays(np.float64, st.integers(1, 200), elements=st.floats(0.0, 1.0)))
def test_q_values_are_monotone_at_least_p_and_at_most_one(p: np.ndarray) -> None:
    q = q_values(p)
    assert q.shape == p.shape
    assert np.all(q >= p - 1e-15) and np.all(q <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-15)
    assert np.allclose(q, false_discovery_control(p))


def test_q_values_by_hand_and_bad_input() -> None:
    assert np.allclose(q_values([0.01, 0.04, 0.03, 0.5]), [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert q_values([]).size == 0
    for bad in ([0.1, np.nan], [1.2], [-0.1]):
        with pytest.raises(DetectionError, match="within"):
            q_values(bad)
    with pytest.raises(DetectionError, match="1-D"):
        q_values([[0.1]])


def test_claims_and_contrasts_are_separate_families() -> None:
    """A batch of contrasts with tiny p-values does not make a borderline claim significant
    (one family would lower its q), and the claims do not dilute the contrasts."""
    policy = DetectionPolicy(alpha=0.05)
    borderline = PairedTest(
        n_prompts=52, baseline_value=0.0, candidate_value=1.0, effect=1.0, p_value=0.04
    )
    others = [
        PairedTest(n_prompts=52, baseline_value=0.0, candidate_value=1.0, effect=1.0, p_value=p)
        for p in (1e-9, 2e-9, 3e-9, 4e-9, 0.5)
    ]
    tests = [borderline, *others]
    claims_only = judge_drifts([borderline, others[-1]], [None, None], policy)
    split = judge_drifts(tests, [None] * 6, policy, ["claims", *["contrasts"] * 4, "claims"])
    pooled = judge_drifts(tests, [None] * 6, policy)
    assert split[0] == claims_only[0] and split[0][1] is False  # q = 0.08 within the claims
    assert pooled[0][1] is True  # pooled with the contrasts, the same claim would alarm
    assert all(flagged for _, flagged in split[1:5])


def test_pooled_shift_by_hand_and_what_adds_nothing() -> None:
    """√2 × the pooled within-release SD of run values: [1, 3] adds 2 squares on 1 d.f.,
    [2, 2] none on 1 d.f.; lone runs and non-finite groups add nothing."""
    sd, df = pooled_shift([[1.0, 3.0], [2.0, 2.0], [5.0], [1.0, float("nan")]])
    assert df == 2 and sd == pytest.approx(np.sqrt(2.0 * 2.0 / 2))
    assert pooled_shift([[1.0], []]) == (0.0, 0)


def test_whole_run_shifts_are_told_from_per_prompt_noise() -> None:
    """Repeats with per-prompt noise only keep the many degrees of freedom of that noise;
    repeats that move as whole runs rest on their few pairs."""
    rng = np.random.default_rng(3)
    levels = rng.normal(5.0, 2.0, 52)
    quiet = floor_from_matrix(levels + rng.normal(0.0, 0.1, (3, 52)))
    moving = floor_from_matrix(levels + rng.normal(0.0, 0.1, (3, 52)) + [[0.0], [0.4], [-0.4]])
    assert quiet.shift_df == 2 * 52
    assert moving.shift_df == 2
    assert floor_from_matrix(np.tile(levels, (3, 1))).shift_df == 2 * 52


def test_a_shift_is_judged_against_whole_run_noise_with_its_degrees_of_freedom() -> None:
    floor = NoiseFloor(prompt_sd=0.01, shift_sd=0.1, n_repeats=3, n_prompts=52, shift_df=2)
    assert floor.shift_p_value(0.5) == pytest.approx(2 * student_t.sf(5.0, 2))
    assert NoiseFloor(0.01, 0.0, 3, 52, shift_df=2).shift_p_value(0.5) == 0.0
    sampled = NoiseFloor(0.0, 0.0, 0, 0, sampling_sd=0.1)
    assert sampled.shift_p_value(0.5) == pytest.approx(2 * norm.sf(5.0))
    pooled = floor.pooled(0.12, 20)
    assert (pooled.shift_sd, pooled.shift_df) == (0.12, 20)
    assert floor.pooled(0.05, 1) is floor
    assert floor.pooled(0.3, 1).shift_sd == 0.3


def test_a_whole_run_shift_the_history_shows_is_not_a_drift() -> None:
    """Every prompt moved by 0.25 (signed-rank p tiny, 2.5 common-shift SDs, above the floor's
    3 × SD only by the luck of two degrees of freedom): no drift once whole-run noise of that
    size is known from 20 degrees of freedom; a move of 10 SDs still is one."""
    policy = DetectionPolicy()
    own = NoiseFloor(prompt_sd=0.01, shift_sd=0.08, n_repeats=3, n_prompts=52, shift_df=2)
    known = own.pooled(0.1, 20)

    def moved(by: float) -> PairedTest:
        return PairedTest(
            n_prompts=52, baseline_value=1.0, candidate_value=1.0 + by, effect=by, p_value=1e-10
        )

    assert judge_drifts([moved(0.25)], [None], policy)[0][1] is True
    assert judge_drifts([moved(0.25)], [known], policy)[0][1] is False
    assert judge_drifts([moved(1.0)], [known], policy)[0][1] is True
    assert judge_drifts([moved(1.0)], [known], policy)[0][0] >= 2 * student_t.sf(10.0, 20)
