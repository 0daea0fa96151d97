"""Change points along a release series, with a penalty scaled by the noise floor."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.detection.changepoints import change_points
from monitor.detection.errors import DetectionError

FLOOR = 0.01
RELEASE_NOISE = FLOOR / 5


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
    values = 0.05 + rng.normal(0.0, RELEASE_NOISE, n)
    values[index:] += sign * size * FLOOR
    assert change_points(values, FLOOR) == [index]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_noise_alone_gives_no_change_point(n: int, seed: int) -> None:
    values = 0.05 + np.random.default_rng(seed).normal(0.0, RELEASE_NOISE, n)
    assert change_points(values, FLOOR) == []


@given(where=st.integers(0, 9), size=st.floats(-100.0, 100.0))
def test_one_release_outlier_is_not_a_change_point(where: int, size: float) -> None:
    values = np.full(10, 0.05)
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
