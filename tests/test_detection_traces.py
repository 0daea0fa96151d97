"""Per-prompt metric values and divergent tokens read from an arm's token trace."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from monitor.detection.errors import DetectionError
from monitor.detection.traces import (
    PER_PROMPT_METRICS,
    PromptValues,
    checked,
    most_divergent,
    per_prompt_values,
)
from monitor.metrics import MetricsError, TokenArrays, token_metrics
from monitor.schema import PackedArray, TokenTrace


def trace(prompts: list[int], vllm: list[float], reference: list[float]) -> TokenArrays:
    n = len(prompts)
    return TokenArrays.checked(prompts, list(range(n)), [7] * n, vllm, reference)


def test_per_prompt_values_by_hand() -> None:
    arrays = trace([4, 4, 9], [-1.0, -2.0, -0.5], [-1.5, -2.0, -0.5 + math.log(3.0)])
    abs_delta = per_prompt_values(arrays, "mean_abs_delta")
    assert abs_delta.prompts.tolist() == [4, 9]
    assert np.allclose(abs_delta.values, [0.25, math.log(3.0)])
    assert np.allclose(per_prompt_values(arrays, "k1").values, [0.25, -math.log(3.0)])
    k3 = per_prompt_values(arrays, "k3").values
    assert np.allclose(k3, [(math.exp(-0.5) - 1 + 0.5) / 2, 3 - 1 - math.log(3.0)])
    assert per_prompt_values(arrays, "tis_fraction").values.tolist() == [0.0, 1.0]
    assert per_prompt_values(arrays, "clip_fraction").values.tolist() == [0.5, 1.0]


@settings(max_examples=60, deadline=None)
@given(
    delta=arrays(np.float64, st.integers(1, 60), elements=st.floats(-3, 3)),
    seed=st.integers(0, 2**16),
)
def test_token_weighted_per_prompt_values_give_the_arm_metric(delta: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, 5, delta.size)
    vllm = -rng.exponential(1.0, delta.size)
    arrays = TokenArrays.checked(prompts, np.arange(delta.size), prompts, vllm, vllm + delta)
    arm = token_metrics(arrays.reference_logprob, arrays.vllm_logprob)
    counts = np.bincount(prompts)[np.unique(prompts)]
    for metric in PER_PROMPT_METRICS:
        values = per_prompt_values(arrays, metric)
        weighted = float(np.dot(values.values, counts) / counts.sum())
        assert math.isclose(weighted, arm[metric], rel_tol=1e-9, abs_tol=1e-12), metric


def test_overflowing_metric_is_named() -> None:
    arrays = trace([0, 1], [-1000.0, -1.0], [-0.5, -1.0])
    assert per_prompt_values(arrays, "mean_abs_delta").values.tolist() == [999.5, 0.0]
    with pytest.raises(DetectionError, match="k3 overflows"):
        per_prompt_values(arrays, "k3")


def test_unknown_metric_is_named() -> None:
    with pytest.raises(DetectionError, match="no per-prompt form of metric 'ess'"):
        per_prompt_values(trace([0], [-1.0], [-1.0]), "ess")


def test_a_bad_trace_is_a_detection_error_naming_its_arm() -> None:
    """Detection refuses a bad trace as DetectionError (not the metrics' own error), labelled."""
    raw = (np.array([0, 1]), np.array([0, 1]), np.array([1, 2]), np.array([-1.0, np.nan]))
    bad = TokenArrays(*raw, reference_logprob=np.array([-1.0, -1.0]))
    with pytest.raises(
        DetectionError, match=r"^candidate x/y vllm_logprob has 1 non-finite"
    ) as info:
        checked(bad, "candidate x/y")
    assert not isinstance(info.value, MetricsError)
    good = trace([0, 1], [-1.0, -2.0], [-1.0, -2.5])
    assert checked(good, "candidate x/y").delta.tolist() == [0.0, -0.5]


def test_prompt_values_are_sorted_and_checked() -> None:
    values = PromptValues.build([3, 1, 2], [30.0, 10.0, 20.0])
    assert values.prompts.tolist() == [1, 2, 3] and values.values.tolist() == [10.0, 20.0, 30.0]
    with pytest.raises(DetectionError, match="more than once"):
        PromptValues.build([1, 1], [0.0, 0.0])
    with pytest.raises(DetectionError, match="2 prompts but 1 values"):
        PromptValues.build([1, 2], [0.0])
    with pytest.raises(DetectionError, match="non-finite"):
        PromptValues.build([1, 2], [0.0, np.nan])


def test_most_divergent_tokens_come_largest_first() -> None:
    arrays = trace([0, 0, 1, 1], [-1.0, -1.0, -1.0, -1.0], [-1.1, -3.0, 1.0, -1.0])
    assert most_divergent(arrays, 3).tolist() == [1, 2, 0]
    assert most_divergent(arrays, 10).tolist() == [1, 2, 0, 3]
    with pytest.raises(DetectionError, match="at least 1"):
        most_divergent(arrays, 0)


def test_stored_traces_decode_to_the_arrays_detection_reads() -> None:
    stored = TokenTrace(
        prompt_index=PackedArray.pack([0, 0, 1], "int32"),
        position=PackedArray.pack([0, 1, 0], "int32"),
        token_id=PackedArray.pack([5, 6, 7], "int32"),
        vllm_logprob=PackedArray.pack([-1.0, -2.0, -3.0], "float64"),
        reference_logprob=PackedArray.pack([-1.0, -2.5, -3.0], "float64"),
    )
    arrays = checked(stored.arrays(), "stored")
    assert arrays.prompt_index.dtype == np.int64 and arrays.token_id.tolist() == [5, 6, 7]
    assert arrays.delta.tolist() == [0.0, -0.5, 0.0]
    assert per_prompt_values(arrays, "mean_abs_delta").values.tolist() == [0.25, 0.0]
    again = TokenTrace.of(arrays)
    assert again == stored
