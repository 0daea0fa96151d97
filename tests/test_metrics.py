"""Tests for monitor.metrics: hand-computed cases, properties, and input validation."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monitor.metrics import (
    MEAN_METRICS,
    POSITION_BUCKET_EDGES,
    PROB_BUCKET_EDGES,
    TOKEN_TERMS,
    MetricsError,
    TokenArrays,
    agreement_metrics,
    arm_metrics,
    by_position,
    by_probability,
    first_divergence,
    sequence_metrics,
    stratify,
    token_metrics,
)

LN2 = math.log(2.0)
TOKEN_KEYS = {
    "n_tokens",
    "mean_abs_delta",
    "p50_abs_delta",
    "p99_abs_delta",
    "max_abs_delta",
    "mean_delta",
    "k1",
    "k2",
    "k3",
    "token_mult_prob_error",
    "ratio_mean",
    "ratio_std",
    "ratio_min",
    "ratio_max",
    "ratio_p1",
    "ratio_p99",
    "clip_fraction",
    "tis_fraction",
    "icepop_fraction",
    "chi2",
    "ess",
    "prob_pearson",
}
SEQ_KEYS = {
    "n_sequences",
    "seq_logratio_mean",
    "seq_logratio_std",
    "seq_logratio_abs_mean",
    "seq_logratio_abs_max",
    "seq_logratio_p99_abs",
    "seq_ratio_clip_fraction",
}
AGREE_KEYS = {
    "token_agreement",
    "seq_diverged_fraction",
    "first_divergence_mean",
    "first_divergence_min",
}
STRATUM_KEYS = {
    "bucket",
    "lo",
    "hi",
    "n_tokens",
    "fraction",
    "mean_abs_delta",
    "k1",
    "k3",
    "token_mult_prob_error",
    "clip_fraction",
}

PROPERTY = settings(max_examples=100, deadline=None)

logprob_arrays = st.integers(1, 64).flatmap(
    lambda n: arrays(np.float64, n, elements=st.floats(-30.0, 0.0))
)
logprob_pairs = st.integers(1, 64).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, n, elements=st.floats(-30.0, 0.0)),
        arrays(np.float64, n, elements=st.floats(-30.0, 0.0)),
    )
)
positioned_pairs = st.integers(1, 64).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, n, elements=st.floats(-30.0, 0.0)),
        arrays(np.float64, n, elements=st.floats(-30.0, 0.0)),
        arrays(np.int64, n, elements=st.integers(0, 1500)),
    )
)


def approx(value: float) -> object:
    return pytest.approx(value, rel=1e-12, abs=1e-12)


# ---- token_metrics: hand-computed ----


def test_token_metrics_two_tokens_by_hand() -> None:
    # vLLM probabilities 0.5 and 0.25, trainer 0.5 and 0.5: δ = [0, ln 2], ρ = [1, 2].
    m = token_metrics(np.log([0.5, 0.5]), np.log([0.5, 0.25]))
    assert set(m) == TOKEN_KEYS
    assert m["n_tokens"] == 2
    assert m["mean_abs_delta"] == approx(LN2 / 2)
    assert m["p50_abs_delta"] == approx(LN2 / 2)
    assert m["p99_abs_delta"] == approx(0.99 * LN2)
    assert m["max_abs_delta"] == approx(LN2)
    assert m["mean_delta"] == approx(LN2 / 2)
    assert m["k1"] == approx(-LN2 / 2)
    assert m["k2"] == approx((0.0 + LN2**2 / 2) / 2)
    assert m["k3"] == approx(((1 - 1 - 0) + (2 - 1 - LN2)) / 2)
    assert m["token_mult_prob_error"] == approx((1 + 2) / 2)
    assert m["ratio_mean"] == approx(1.5)
    assert m["ratio_std"] == approx(0.5)
    assert m["ratio_min"] == approx(1.0)
    assert m["ratio_max"] == approx(2.0)
    assert m["ratio_p1"] == approx(1.0 + 0.01 * (2 - 1))
    assert m["ratio_p99"] == approx(1.0 + 0.99 * (2 - 1))
    assert m["clip_fraction"] == 0.5
    assert m["icepop_fraction"] == 0.0
    assert m["chi2"] == approx((1**2 + 2**2) / 2 - 1)
    assert m["ess"] == approx((1 + 2) ** 2 / (2 * (1**2 + 2**2)))
    # the trainer's probabilities are constant, vLLM's are not
    assert m["prob_pearson"] == 0.0


def test_token_metrics_masks_by_hand() -> None:
    # ρ = [1/4, 8, 1, 1, 1.1]
    vllm = np.log([0.8, 0.1, 0.3, 0.3, 0.5])
    trainer = np.log([0.2, 0.8, 0.3, 0.3, 0.55])
    m = token_metrics(trainer, vllm)
    assert m["clip_fraction"] == pytest.approx(2 / 5)
    assert m["tis_fraction"] == pytest.approx(1 / 5)
    assert m["icepop_fraction"] == pytest.approx(2 / 5)
    assert m["ratio_min"] == pytest.approx(0.25)
    assert m["ratio_max"] == pytest.approx(8.0)
    assert m["token_mult_prob_error"] == pytest.approx((4 + 8 + 1 + 1 + 1.1) / 5)
    assert m["ess"] == pytest.approx(11.35**2 / (5 * (0.0625 + 64 + 1 + 1 + 1.21)))
    assert m["chi2"] == pytest.approx((0.0625 + 64 + 1 + 1 + 1.21) / 5 - 1)
    # wider / narrower thresholds change the counts
    loose = token_metrics(trainer, vllm, clip_eps=0.5, tis_c=10.0, icepop_low=0.1, icepop_high=10)
    assert loose["clip_fraction"] == pytest.approx(2 / 5)
    assert loose["tis_fraction"] == 0.0
    assert loose["icepop_fraction"] == 0.0
    tight = token_metrics(trainer, vllm, clip_eps=0.05)
    assert tight["clip_fraction"] == pytest.approx(3 / 5)


def test_each_mean_metric_is_the_mean_of_its_token_term() -> None:
    """One formula per metric: the per-token terms (which detection averages per prompt) are
    the hand-computed ones, and the arm's value is their mean."""
    # ρ = [1, 2, 1/4, 8, e^0.1]; ρ = 2 = C is not truncated (TIS needs ρ > C)
    delta = np.array([0.0, LN2, -2 * LN2, 3 * LN2, 0.1])
    rho = np.exp(delta)
    expected = {
        "mean_abs_delta": np.abs(delta),
        "mean_delta": delta,
        "k1": -delta,
        "k2": delta**2 / 2,
        "k3": np.array([0.0, 1 - LN2, 2 * LN2 - 0.75, 7 - 3 * LN2, math.exp(0.1) - 1.1]),
        "token_mult_prob_error": np.array([1.0, 2.0, 4.0, 8.0, math.exp(0.1)]),
        "clip_fraction": np.array([0.0, 1.0, 1.0, 1.0, 0.0]),
        "tis_fraction": np.array([0.0, 0.0, 0.0, 1.0, 0.0]),
        "icepop_fraction": np.array([0.0, 0.0, 1.0, 1.0, 0.0]),
    }
    assert set(TOKEN_TERMS) == set(MEAN_METRICS) == set(expected)
    assert np.allclose(expected["k3"], rho - 1 - delta)
    m = token_metrics(delta, np.zeros(delta.size))
    for name, term in TOKEN_TERMS.items():
        assert term(delta) == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name
        assert m[name] == float(np.mean(term(delta))), name


def test_k3_is_accurate_for_tiny_delta() -> None:
    # ρ − 1 − δ ≈ δ²/2 for small δ; the naive exp(δ) − 1 − δ loses it entirely at δ = 1e-9.
    delta = -1e-9
    m = token_metrics([delta], [0.0])
    assert m["k3"] == pytest.approx(delta**2 / 2 + delta**3 / 6, rel=1e-6, abs=0)
    assert m["k3"] > 0
    # mean(ρ²) − 1 = expm1(2δ); computed as mean(ρ²) − 1 it keeps only ~4 digits at δ = 1e-12
    tiny = token_metrics([-1e-12], [0.0])
    assert tiny["chi2"] == pytest.approx(-2e-12 + 2e-24, rel=1e-9, abs=0)


def test_ess_survives_a_ratio_that_overflows() -> None:
    # δ = [800, 0]: ρ = e^800 overflows, but (Σρ)²/(nΣρ²) → (e^800)²/(2·e^1600) = 1/2
    m = token_metrics([0.0, 0.0], [-800.0, 0.0])
    assert m["ess"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("p_trainer", "p_vllm", "expected"),
    [
        ([0.1, 0.2, 0.3], [0.2, 0.4, 0.6], 1.0),
        ([0.1, 0.2, 0.3], [0.6, 0.4, 0.2], -1.0),
        ([0.1, 0.2, 0.3, 0.4], [0.1, 0.3, 0.2, 0.4], 0.8),  # 1 − 6·Σd²/(n(n²−1)) = 1 − 12/60
        ([0.3, 0.3], [0.3, 0.3], 1.0),
        ([0.3, 0.3], [0.2, 0.2], 0.0),
        ([0.3, 0.3], [0.2, 0.4], 0.0),
        ([0.2, 0.4], [0.3, 0.3], 0.0),
    ],
)
def test_prob_pearson(p_trainer: list[float], p_vllm: list[float], expected: float) -> None:
    assert token_metrics(np.log(p_trainer), np.log(p_vllm))["prob_pearson"] == pytest.approx(
        expected
    )


# ---- token_metrics: properties ----


@PROPERTY
@given(logprob_arrays)
def test_identical_logprobs_give_zero_divergence(lp: np.ndarray) -> None:
    m = token_metrics(lp, lp.copy())
    assert m["n_tokens"] == lp.size
    for key in ("mean_abs_delta", "p50_abs_delta", "p99_abs_delta", "max_abs_delta"):
        assert m[key] == 0.0, key
    for key in ("mean_delta", "k1", "k2", "k3", "chi2", "ratio_std"):
        assert m[key] == 0.0, key
    for key in ("token_mult_prob_error", "ratio_mean", "ratio_min", "ratio_max"):
        assert m[key] == 1.0, key
    assert m["ratio_p1"] == 1.0
    assert m["ratio_p99"] == 1.0
    for key in ("clip_fraction", "tis_fraction", "icepop_fraction"):
        assert m[key] == 0.0, key
    assert m["ess"] == pytest.approx(1.0, rel=1e-12)
    assert m["prob_pearson"] == pytest.approx(1.0)
    s = sequence_metrics(np.zeros(lp.size), np.arange(lp.size) // 3)
    assert s["seq_logratio_abs_max"] == 0.0
    assert s["seq_ratio_clip_fraction"] == 0.0


def exact_mean(delta: np.ndarray, term: Callable[[Decimal], Decimal]) -> float:
    """The mean of a per-token term in decimal arithmetic with 40 digits to spare beyond the
    cancellation a tiny δ causes, as a reference."""
    total = Decimal(0)
    for value in delta:
        d = Decimal(float(value))
        with localcontext() as context:
            context.prec = 40 + 2 * max(0, -d.adjusted())
            total += term(d)
    return float(total / len(delta))


@PROPERTY
@given(
    delta=arrays(np.float64, st.integers(1, 64), elements=st.floats(-30.0, 30.0)),
    scale=st.integers(-9, 0),
)
def test_kl_estimators_match_exact_arithmetic_at_every_scale(delta: np.ndarray, scale: int) -> None:
    """k3 keeps its digits where ρ − 1 − δ cancels (small δ), where exp(δ) − 1 − δ would not."""
    delta = delta * 10.0**scale
    m = token_metrics(delta, np.zeros(delta.size))
    rounding = (
        16 * np.finfo(np.float64).eps * float(np.mean(np.abs(delta) + np.abs(np.expm1(delta))))
    )
    assert m["k3"] == pytest.approx(exact_mean(delta, lambda d: d.exp() - 1 - d), abs=rounding)
    assert (TOKEN_TERMS["k3"](delta) >= 0.0).all()
    assert m["k2"] == pytest.approx(exact_mean(delta, lambda d: d * d / 2), rel=1e-12)


@PROPERTY
@given(logprob_pairs)
def test_ratio_statistics_are_consistent_and_ess_in_unit_interval(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    m = token_metrics(*pair)
    # mean(ρ²) ≥ mean(ρ)² > 0, so chi2 ≥ ratio_mean² − 1 ≥ −1
    assert m["chi2"] >= -1.0
    assert m["chi2"] + 1 == pytest.approx(max(m["chi2"] + 1, m["ratio_mean"] ** 2), rel=1e-9)
    assert 0.0 < m["ess"] <= 1.0
    assert m["token_mult_prob_error"] >= 1.0
    assert -1.0 <= m["prob_pearson"] <= 1.0
    assert all(math.isfinite(v) for v in m.values())


@PROPERTY
@given(logprob_pairs)
def test_k1_is_minus_mean_delta_and_swap_symmetry(pair: tuple[np.ndarray, np.ndarray]) -> None:
    trainer, vllm = pair
    forward = token_metrics(trainer, vllm)
    backward = token_metrics(vllm, trainer)
    assert forward["k1"] == pytest.approx(-forward["mean_delta"])
    assert forward["k1"] == pytest.approx(-backward["k1"], abs=1e-12)
    assert forward["k2"] == pytest.approx(backward["k2"])
    assert forward["mean_abs_delta"] == pytest.approx(backward["mean_abs_delta"])
    assert forward["token_mult_prob_error"] == pytest.approx(backward["token_mult_prob_error"])


# ---- stratification ----


def _assert_parts_add_up(whole: dict[str, float], parts: list[dict[str, float | str]]) -> None:
    assert parts, "no buckets"
    for part in parts:
        assert set(part) == STRATUM_KEYS
        assert isinstance(part["n_tokens"], int) and part["n_tokens"] > 0
    assert sum(int(p["n_tokens"]) for p in parts) == whole["n_tokens"]
    assert sum(float(p["fraction"]) for p in parts) == pytest.approx(1.0)
    for key in ("k1", "k3", "mean_abs_delta", "token_mult_prob_error"):
        weighted = sum(float(p["fraction"]) * float(p[key]) for p in parts)
        scale = max(1.0, abs(whole["mean_abs_delta"]), abs(whole["token_mult_prob_error"]))
        assert weighted == pytest.approx(whole[key], rel=1e-9, abs=1e-12 * scale), key
    weighted_clip = sum(float(p["fraction"]) * float(p["clip_fraction"]) for p in parts)
    assert weighted_clip == pytest.approx(whole["clip_fraction"])


@PROPERTY
@given(positioned_pairs)
def test_strata_add_up_to_the_whole(triple: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    trainer, vllm, position = triple
    whole = token_metrics(trainer, vllm)
    _assert_parts_add_up(whole, by_probability(trainer, vllm))
    _assert_parts_add_up(whole, by_position(trainer, vllm, position))


def test_by_probability_buckets_by_hand() -> None:
    p_vllm = np.array([1.0, 0.95, 0.92, 0.3, 0.3, 0.05, 1e-4])
    vllm = np.log(p_vllm)
    trainer = vllm + np.array([0.0, 0.0, 0.0, 0.1, -0.3, LN2, 0.0])
    rows = by_probability(trainer, vllm)
    assert [r["bucket"] for r in rows] == ["[0, 0.001)", "[0.01, 0.1)", "[0.1, 0.5)", "[0.9, 1]"]
    assert [r["n_tokens"] for r in rows] == [1, 1, 2, 3]
    assert [(r["lo"], r["hi"]) for r in rows] == [(0.0, 1e-3), (1e-2, 1e-1), (1e-1, 0.5), (0.9, 1)]
    mid = rows[2]
    assert mid["fraction"] == pytest.approx(2 / 7)
    assert mid["mean_abs_delta"] == pytest.approx((0.1 + 0.3) / 2)
    assert mid["k1"] == pytest.approx(-(0.1 - 0.3) / 2)
    assert mid["k3"] == pytest.approx((math.exp(0.1) - 1 - 0.1 + math.exp(-0.3) - 1 + 0.3) / 2)
    assert mid["token_mult_prob_error"] == pytest.approx((math.exp(0.1) + math.exp(0.3)) / 2)
    assert mid["clip_fraction"] == pytest.approx(1 / 2)  # exp(-0.3) ≈ 0.74 < 0.8
    assert rows[1]["k3"] == pytest.approx(2 - 1 - LN2)


def test_by_position_has_open_last_bucket() -> None:
    position = np.array([0, 7, 8, 511, 512, 4000])
    lp = np.full(6, -1.0)
    rows = by_position(lp, lp, position)
    assert [r["bucket"] for r in rows] == ["[0, 8)", "[8, 16)", "[256, 512)", "512+"]
    assert [r["n_tokens"] for r in rows] == [2, 1, 1, 2]
    assert rows[-1]["lo"] == 512.0
    assert rows[-1]["hi"] == 4000.0
    assert len(POSITION_BUCKET_EDGES) == 8 and len(PROB_BUCKET_EDGES) == 7


def test_stratify_custom_labels_and_closed_top() -> None:
    lp = np.log([0.5, 0.5, 0.5])
    rows = stratify(lp, lp, [0.0, 1.0, 2.0], (0.0, 1.0, 2.0), labels=["low", "high"])
    assert [(r["bucket"], r["n_tokens"]) for r in rows] == [("low", 1), ("high", 2)]


# ---- sequence_metrics ----


def test_sequence_metrics_by_hand() -> None:
    # sequences 7, 3, 9 (ids need not be contiguous or sorted) sum to 0.3, -0.5, 0.05
    delta = [0.1, -0.5, 0.2, 0.05]
    seq = [7, 3, 7, 9]
    m = sequence_metrics(delta, seq)
    assert set(m) == SEQ_KEYS
    sums = [0.3, -0.5, 0.05]
    mean = (0.3 - 0.5 + 0.05) / 3
    assert m["n_sequences"] == 3
    assert m["seq_logratio_mean"] == pytest.approx(mean)
    assert m["seq_logratio_std"] == pytest.approx(math.sqrt(sum((s - mean) ** 2 for s in sums) / 3))
    assert m["seq_logratio_abs_mean"] == pytest.approx((0.3 + 0.5 + 0.05) / 3)
    assert m["seq_logratio_abs_max"] == pytest.approx(0.5)
    # sorted |sums| = [0.05, 0.3, 0.5]; the 99th percentile sits at rank 1.98
    assert m["seq_logratio_p99_abs"] == pytest.approx(0.3 + 0.98 * (0.5 - 0.3))
    # exp(0.3) ≈ 1.35 and exp(-0.5) ≈ 0.61 leave [0.8, 1.2]; exp(0.05) ≈ 1.05 does not
    assert m["seq_ratio_clip_fraction"] == pytest.approx(2 / 3)
    # with ε = 0.4 all of 1.35, 0.61 and 1.05 lie inside [0.6, 1.4]
    assert sequence_metrics(delta, seq, clip_eps=0.4)["seq_ratio_clip_fraction"] == 0.0


# ---- agreement ----


def test_agreement_metrics_by_hand() -> None:
    a = [1, 2, 3, 4, 5, 6, 7, 8]
    b = [1, 2, 9, 4, 5, 0, 0, 0]
    seq = [0, 0, 0, 1, 1, 2, 2, 2]
    # sequence 2 mismatches at positions 5, 3, 4 (listed out of order): the first is position 3
    pos = [0, 1, 2, 0, 1, 5, 3, 4]
    m = agreement_metrics(a, b, seq, pos)
    assert set(m) == AGREE_KEYS
    assert m["token_agreement"] == pytest.approx(4 / 8)
    assert m["seq_diverged_fraction"] == pytest.approx(2 / 3)
    assert m["first_divergence_mean"] == pytest.approx((2 + 3) / 2)
    assert m["first_divergence_min"] == 2.0


def test_agreement_metrics_without_divergence() -> None:
    m = agreement_metrics([5, 6, 7], [5, 6, 7], [0, 0, 1], [0, 1, 0])
    assert m == {
        "token_agreement": 1.0,
        "seq_diverged_fraction": 0.0,
        "first_divergence_mean": -1.0,
        "first_divergence_min": -1.0,
    }


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([1, 2, 3], [1, 2, 3], None),
        ([], [], None),
        ([1, 2, 3], [1, 5, 3], 1),
        ([4], [5], 0),
        ([1, 2], [1, 2, 3], 2),
        ([1, 2, 3], [1, 2], 2),
        ([], [1], 0),
        ([1, 2, 3], [1, 2, 4, 5], 2),
    ],
)
def test_first_divergence(a: list[int], b: list[int], expected: int | None) -> None:
    assert first_divergence(a, b) == expected


# ---- arm_metrics ----


def test_arm_metrics_merges_all_parts() -> None:
    trainer = np.log([0.5, 0.5, 0.2, 0.9])
    vllm = np.log([0.5, 0.25, 0.2, 0.9])
    seq = [0, 0, 1, 1]
    pos = [0, 1, 0, 1]
    m = arm_metrics(trainer, vllm, seq, pos)
    assert set(m) == TOKEN_KEYS | SEQ_KEYS
    assert m["k1"] == pytest.approx(-LN2 / 4)
    assert m["seq_logratio_abs_max"] == pytest.approx(LN2)
    full = arm_metrics(trainer, vllm, seq, pos, trainer_top=[1, 2, 3, 4], vllm_top=[1, 2, 3, 0])
    assert set(full) == TOKEN_KEYS | SEQ_KEYS | {"token_agreement"}
    assert full["token_agreement"] == pytest.approx(3 / 4)


# ---- token arrays ----


def test_token_arrays_are_checked_and_grouped_by_prompt() -> None:
    arrays = TokenArrays.checked(
        [9, 4, 9, 4, 4],
        [0, 0, 1, 1, 2],
        [7, 8, 9, 10, 11],
        [-1.0] * 5,
        [-1.5, -1.0, 0.0, -1.0, -3.0],
    )
    assert arrays.prompt_index.dtype == np.int64 and arrays.reference_logprob.dtype == np.float64
    assert arrays.n_tokens == 5
    assert arrays.delta.tolist() == [-0.5, 0.0, 1.0, 0.0, -2.0]
    prompts, inverse, counts = arrays.groups
    assert prompts.tolist() == [4, 9]
    assert inverse.tolist() == [1, 0, 1, 0, 0] and counts.tolist() == [3, 2]
    unchecked = TokenArrays(*(np.asarray(a) for a in ([0], [0, 1], [5], [-1.0], [-1.0])))
    with pytest.raises(MetricsError, match=r"^candidate p/a arrays differ in length: .*position=2"):
        unchecked.check("candidate p/a")


# ---- bad input ----

GOOD = np.log([0.5, 0.25, 0.1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: token_metrics(GOOD, GOOD[:2]), "length mismatch"),
        (lambda: token_metrics([], []), "trainer_logprob is empty"),
        (lambda: token_metrics(GOOD, []), "vllm_logprob is empty"),
        (lambda: token_metrics([np.nan, -1.0, np.nan], GOOD), "trainer_logprob has 2 non-finite"),
        (lambda: token_metrics(GOOD, [-np.inf, -1.0, -2.0]), "vllm_logprob has 1 non-finite"),
        (lambda: token_metrics(GOOD, [np.inf, -1.0, -2.0]), "vllm_logprob has 1 non-finite"),
        (lambda: token_metrics(np.zeros((2, 2)), np.zeros((2, 2))), "must be 1-D"),
        (lambda: token_metrics(["a"], [0.0]), "not numeric"),
        (lambda: token_metrics(GOOD, GOOD, clip_eps=1.5), "clip_eps"),
        (lambda: token_metrics(GOOD, GOOD, icepop_low=5, icepop_high=0.5), "icepop"),
        (lambda: token_metrics(GOOD, GOOD, tis_c=0.0), "tis_c must be positive"),
        (lambda: TokenArrays.checked([], [], [], [], [], label="x"), "x prompt_index is empty"),
        (
            lambda: TokenArrays.checked([0, 1], [0, 1], [1, 2], [-1.0, np.nan], [-1.0, -1.0]),
            "trace vllm_logprob has 1 non-finite",
        ),
        (
            lambda: TokenArrays.checked([0, 1], [0, 1], [1, 2], [-1.0, -1.0], [-1.0, np.inf]),
            "reference_logprob has 1 non-finite",
        ),
        (
            lambda: TokenArrays.checked([0.5, 1], [0, 1], [1, 2], [-1.0, -1.0], [-1.0, -1.0]),
            "prompt_index must hold integers, got fractional",
        ),
        (
            lambda: TokenArrays.checked(["a"], [0], [1], [-1.0], [-1.0]),
            "prompt_index must hold integers, got dtype",
        ),
        (lambda: TokenArrays.checked([[0, 1]], [0], [1], [-1.0], [-1.0]), "must be 1-D"),
        (lambda: sequence_metrics([0.1, 0.2], [0]), "length mismatch"),
        (lambda: sequence_metrics([0.1, np.nan], [0, 1]), "delta has 1 non-finite"),
        (lambda: sequence_metrics([0.1, 0.2], [0, 0.5]), "seq_index must hold integers"),
        (lambda: sequence_metrics([0.1, 0.2], ["a", "b"]), "seq_index must hold integers"),
        (lambda: agreement_metrics([1, 2], [1, 2], [0, 0], [0]), "length mismatch"),
        (lambda: agreement_metrics([], [], [], []), "tokens_a is empty"),
        (lambda: by_position(GOOD, GOOD, [0, -1, 2]), "keys has 1 values outside"),
        (lambda: by_position(GOOD, GOOD, [0, 1]), "length mismatch"),
        (lambda: by_probability(GOOD, [np.nan, -1.0, -1.0]), "vllm_logprob has 1 non-finite"),
        (lambda: stratify(GOOD, GOOD, [0.5, 2.0, 0.1], (0.0, 1.0)), "keys has 1 values outside"),
        (lambda: stratify(GOOD, GOOD, [0.5, 0.5, 0.1], (0.0, 0.0, 1.0)), "strictly increasing"),
        (lambda: stratify(GOOD, GOOD, [0.5, 0.5, 0.1], (0.0,)), "edges must be"),
        (lambda: stratify(GOOD, GOOD, [0.5, 0.5, 0.1], (0.0, 1.0), labels=["a", "b"]), "labels"),
        (
            lambda: arm_metrics(GOOD, GOOD, [0, 0, 0], [0, 1, 2], trainer_top=[1, 2, 3]),
            "trainer_top given without",
        ),
        (lambda: arm_metrics(GOOD, GOOD, [0, 0], [0, 1]), "length mismatch"),
    ],
)
def test_bad_input_raises(call: Callable[[], object], message: str) -> None:
    with pytest.raises(MetricsError, match=message) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)
