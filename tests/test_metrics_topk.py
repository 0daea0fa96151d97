"""Tests for the top-k comparison of vLLM's top logprobs with the trainer's full distribution:
hand-checked small distributions, scipy as a second opinion, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy

from monitor.metrics import (
    MetricsError,
    TopkComparison,
    sample_positions,
    topk_comparison,
    topk_metrics,
)

LOG = np.log


def test_hand_checked_two_of_three() -> None:
    """vLLM's top-2 {0: .5, 1: .25} against a trainer (.4, .4, .2): over S = {0, 1}, vLLM
    renormalised is (2/3, 1/3), the trainer (1/2, 1/2)."""
    got = topk_comparison([0, 1], LOG([0.5, 0.25]), LOG([0.4, 0.4, 0.2]))
    assert got is not None
    kl = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    assert got.kl == pytest.approx(kl, rel=1e-12)
    assert got.kl == pytest.approx(entropy([2 / 3, 1 / 3], [0.5, 0.5]), rel=1e-12)
    assert got.tv == pytest.approx(1 / 6, rel=1e-12)
    assert got.overlap == 1.0 and got.shared == 2


def test_direction_is_vllm_against_trainer() -> None:
    """KL is not symmetric: the first argument is vLLM's (the sampling policy)."""
    got = topk_comparison([0, 1], LOG([0.9, 0.1]), LOG([0.5, 0.5]))
    assert got is not None
    assert got.kl == pytest.approx(entropy([0.9, 0.1], [0.5, 0.5]), rel=1e-12)
    assert got.kl != pytest.approx(entropy([0.5, 0.5], [0.9, 0.1]), rel=1e-3)


def test_identical_distributions_and_shifted_logits_give_zero() -> None:
    row = LOG([0.5, 0.3, 0.15, 0.05])
    same = topk_comparison([0, 1, 2], row[:3], row)
    shifted = topk_comparison([0, 1, 2], row[:3] + 7.0, row)
    for got in (same, shifted):
        assert got is not None
        assert got.kl == pytest.approx(0.0, abs=1e-15)
        assert got.tv == pytest.approx(0.0, abs=1e-15)
        assert got.overlap == 1.0


def test_out_of_support_tokens_leave_the_shared_support() -> None:
    """A processed distribution is -inf outside its support: such ids are not shared, and a
    top set that reaches a different token lowers the overlap."""
    trainer = np.array([LOG(0.6), LOG(0.4), -np.inf, -np.inf])
    got = topk_comparison([0, 2, 1], np.array([LOG(0.5), LOG(0.3), LOG(0.2)]), trainer)
    assert got is not None
    assert got.shared == 2
    assert got.kl == pytest.approx(entropy([5 / 7, 2 / 7], [0.6, 0.4]), rel=1e-12)
    assert got.tv == pytest.approx(abs(5 / 7 - 0.6), rel=1e-12)
    assert got.overlap == pytest.approx(2 / 3)


def test_vllm_minus_inf_entries_are_not_in_its_top_set() -> None:
    got = topk_comparison([3, 1], np.array([0.0, -np.inf]), LOG([0.1, 0.2, 0.3, 0.4]))
    assert got is not None
    assert got.shared == 1 and got.kl == 0.0 and got.tv == 0.0 and got.overlap == 1.0


def test_no_shared_support_is_none_and_left_out_of_means() -> None:
    assert topk_comparison([0], [-np.inf], LOG([0.5, 0.5])) is None
    means = topk_metrics([None, TopkComparison(0.2, 0.1, 1.0, 3), TopkComparison(0.0, 0.3, 0.5, 3)])
    assert means == pytest.approx({"topk_kl": 0.1, "topk_tv": 0.2, "topk_overlap": 0.75})
    assert topk_metrics([None]) == {}


@pytest.mark.parametrize(
    ("ids", "values", "row", "match"),
    [
        ([0, 5], [0.0, -1.0], [0.0, 0.0], "outside the trainer's vocabulary"),
        ([0, 1], [0.0], [0.0, 0.0], "vllm_ids=2, vllm_logprobs=1"),
        ([0, 1], [0.0, np.nan], [0.0, 0.0], "NaN"),
        ([0.5], [0.0], [0.0], "integers"),
    ],
)
def test_bad_inputs_raise_one_line(ids: list, values: list, row: list, match: str) -> None:
    with pytest.raises(MetricsError, match=match):
        topk_comparison(ids, values, row)


def test_sample_positions_are_deterministic_strided_and_bounded() -> None:
    assert sample_positions([5, 0, 3], stride=2, cap=10) == [
        (0, 0),
        (0, 2),
        (0, 4),
        (2, 0),
        (2, 2),
    ]
    assert sample_positions([5, 0, 3], stride=2, cap=3) == [(0, 0), (0, 2), (0, 4)]
    with pytest.raises(MetricsError):
        sample_positions([1], stride=0, cap=1)


def test_a_move_where_nothing_was_sampled_is_seen() -> None:
    """The sampled token (id 0) has the same logprob on both sides, so δ = 0 and every
    sampled-token estimator reads parity; the mass that moved between ids 1 and 2 is not."""
    vllm, trainer = LOG([0.5, 0.3, 0.2]), LOG([0.5, 0.2, 0.3])
    assert vllm[0] == trainer[0]
    got = topk_comparison([0, 1, 2], vllm, trainer)
    assert got is not None
    assert got.tv == pytest.approx(0.1, rel=1e-12)
    assert got.kl == pytest.approx(entropy([0.5, 0.3, 0.2], [0.5, 0.2, 0.3]), rel=1e-12)
    assert got.overlap == 1.0
