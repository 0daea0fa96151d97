"""Change points along a release series, with a penalty scaled by the noise floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.detection.changepoints import PENALTY_MULTIPLE, change_points
from monitor.detection.errors import DetectionError
from monitor.detection.noise import COMMON_SHIFT_MULTIPLE

FLOOR = 0.01
LEVEL = 0.05
RELEASE_NOISE = FLOOR / (COMMON_SHIFT_MULTIPLE * math.sqrt(2))
"""The largest release-to-release spread a measured floor allows: the floor is at least
COMMON_SHIFT_MULTIPLE × the RMS difference of two runs' means, which is √2 × their spread."""


def step(before: int, held: int, size: float, seed: int) -> np.ndarray:
    """`before` releases at one level, then `held` releases `size` floors away, with noise far
    below the floor (FLOOR / 20) so only the step's size decides."""
    values = LEVEL + np.random.default_rng(seed).normal(0.0, FLOOR / 20, before + held)
    values[before:] += size * FLOOR
    return values


@settings(max_examples=80, deadline=None)
@given(
    held=st.integers(2, 4),
    extra=st.integers(2, 5),
    sign=st.sampled_from([-1.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_a_new_level_is_called_exactly_when_it_pays_the_penalty(
    held: int, extra: int, sign: float, seed: int
) -> None:
    """L1 cost: `held` releases `s` floors away cost held × s floors unless split off, which
    costs PENALTY_MULTIPLE floors; so the threshold is PENALTY_MULTIPLE / held floors."""
    threshold = PENALTY_MULTIPLE / held
    before = held + extra
    assert change_points(step(before, held, sign * 1.25 * threshold, seed), FLOOR) == [before]
    assert change_points(step(before, held, sign * 0.75 * threshold, seed), FLOOR) == []


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(4, 30),
    where=st.floats(0.0, 1.0),
    size=st.floats(3.0, 20.0),
    sign=st.sampled_from([-1.0, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_an_injected_step_is_found_at_its_index(
    n: int, where: float, size: float, sign: float, seed: int
) -> None:
    index = 2 + int(where * (n - 4))
    rng = np.random.default_rng(seed)
    values = LEVEL + rng.normal(0.0, RELEASE_NOISE, n)
    values[index:] += sign * size * FLOOR
    assert change_points(values, FLOOR) == [index]


def test_release_noise_alone_gives_no_change_point_because_of_the_penalty() -> None:
    """At the largest spread a floor allows, 150 noise-only series stay quiet; with a penalty of
    half a floor the same series give many change points, so the quiet is the penalty's doing."""
    series = [
        LEVEL + np.random.default_rng(seed).normal(0.0, RELEASE_NOISE, 4 + seed % 37)
        for seed in range(150)
    ]
    assert sum(bool(change_points(values, FLOOR)) for values in series) == 0
    loose = sum(bool(change_points(values, FLOOR, penalty_multiple=0.5)) for values in series)
    assert loose > 0.2 * len(series)


@given(where=st.integers(0, 9), size=st.floats(-100.0, 100.0))
def test_one_release_outlier_is_not_a_change_point(where: int, size: float) -> None:
    values = np.full(10, LEVEL)
    values[where] += size * FLOOR
    assert change_points(values, FLOOR) == []


def test_two_steps_and_the_last_releases() -> None:
    values = np.array([1.0, 1.0, 1.0, 1.5, 1.5, 1.5, 1.5, 0.9, 0.9])
    assert change_points(values, 0.1) == [3, 7]
    assert change_points(values, 1.0) == []
    assert change_points(values, 0.1, min_segment=3) == [3, 6]


def test_a_zero_floor_makes_every_real_change_a_change_point() -> None:
    assert change_points([0.2, 0.2, 0.3, 0.3, 0.2, 0.2], 0.0) == [2, 4]
    assert change_points([0.2, 0.2, 0.2, 0.2], 0.0) == []


@pytest.mark.parametrize(
    ("values", "floor", "message"),
    [
        ([], 0.1, "release series is empty"),
        ([0.1, np.nan, 0.2], 0.1, "1 non-finite"),
        ([0.1, 0.2], -1.0, "non-negative"),
        ([0.1, 0.2], np.nan, "non-negative"),
    ],
)
def test_bad_series_raise_named_errors(values: list[float], floor: float, message: str) -> None:
    with pytest.raises(DetectionError, match=message):
        change_points(values, floor)
    with pytest.raises(DetectionError, match="penalty_multiple"):
        change_points([0.1, 0.2], 0.1, penalty_multiple=0.0)
    with pytest.raises(DetectionError, match="min_segment"):
        change_points([0.1, 0.2], 0.1, min_segment=1)
