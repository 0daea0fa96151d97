"""What detection reads from an arm's token trace: per-prompt metric values and divergent tokens.

With δ = reference_logprob − vllm_logprob (as in `monitor.metrics`), every metric here is a mean
of a per-token term, so the token-weighted mean of a metric's per-prompt values is the arm's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from monitor import metrics
from monitor.detection.errors import DetectionError, PromptSetMismatchError
from monitor.schema import TokenTrace

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

CLIP_EPS = 0.2
TIS_C = 2.0
ICEPOP_BOUNDS = (0.5, 5.0)


def _k3_term(delta: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        return np.maximum(np.expm1(delta) - delta, 0.0)


def _mult_term(delta: FloatArray) -> FloatArray:
    with np.errstate(over="ignore"):
        return np.exp(np.abs(delta))


def _clip_term(delta: FloatArray) -> FloatArray:
    outside = (delta < math.log1p(-CLIP_EPS)) | (delta > math.log1p(CLIP_EPS))
    return outside.astype(np.float64)


def _tis_term(delta: FloatArray) -> FloatArray:
    return (delta > math.log(TIS_C)).astype(np.float64)


def _icepop_term(delta: FloatArray) -> FloatArray:
    low, high = ICEPOP_BOUNDS
    return ((delta < math.log(low)) | (delta > math.log(high))).astype(np.float64)


TOKEN_TERMS: dict[str, Callable[[FloatArray], FloatArray]] = {
    "mean_abs_delta": np.abs,
    "mean_delta": lambda delta: delta,
    "k1": np.negative,
    "k2": lambda delta: delta * delta / 2.0,
    "k3": _k3_term,
    "token_mult_prob_error": _mult_term,
    "clip_fraction": _clip_term,
    "tis_fraction": _tis_term,
    "icepop_fraction": _icepop_term,
}
PER_PROMPT_METRICS: tuple[str, ...] = tuple(TOKEN_TERMS)


def finite_floats(name: str, values: npt.ArrayLike) -> FloatArray:
    """A non-empty 1-D float64 array of finite values, or a DetectionError naming the problem."""
    try:
        return metrics.finite_floats(name, values)
    except metrics.MetricsError as exc:
        raise DetectionError(str(exc)) from None


def integers(name: str, values: npt.ArrayLike) -> IntArray:
    """A non-empty 1-D int64 array (integral floats accepted), or a DetectionError."""
    try:
        return metrics.integers(name, values)
    except metrics.MetricsError as exc:
        raise DetectionError(str(exc)) from None


@dataclass(frozen=True)
class TraceArrays:
    """An arm's per-token arrays, validated: equally long, non-empty, finite."""

    prompt_index: IntArray
    position: IntArray
    token_id: IntArray
    vllm_logprob: FloatArray
    reference_logprob: FloatArray

    @classmethod
    def build(
        cls,
        prompt_index: npt.ArrayLike,
        position: npt.ArrayLike,
        token_id: npt.ArrayLike,
        vllm_logprob: npt.ArrayLike,
        reference_logprob: npt.ArrayLike,
        label: str = "trace",
    ) -> TraceArrays:
        arrays = cls(
            prompt_index=integers(f"{label} prompt_index", prompt_index),
            position=integers(f"{label} position", position),
            token_id=integers(f"{label} token_id", token_id),
            vllm_logprob=finite_floats(f"{label} vllm_logprob", vllm_logprob),
            reference_logprob=finite_floats(f"{label} reference_logprob", reference_logprob),
        )
        lengths = {name: len(getattr(arrays, name)) for name in cls.__dataclass_fields__}
        if len(set(lengths.values())) != 1:
            shown = ", ".join(f"{name}={n}" for name, n in lengths.items())
            raise DetectionError(f"{label} arrays differ in length: {shown}")
        return arrays

    @classmethod
    def from_trace(cls, trace: TokenTrace, label: str = "trace") -> TraceArrays:
        return cls.build(
            trace.prompt_index.unpack(),
            trace.position.unpack(),
            trace.token_id.unpack(),
            trace.vllm_logprob.unpack(),
            trace.reference_logprob.unpack(),
            label=label,
        )

    @property
    def delta(self) -> FloatArray:
        return self.reference_logprob - self.vllm_logprob

    @cached_property
    def groups(self) -> tuple[IntArray, IntArray, IntArray]:
        """(sorted prompt ids, each token's position among them, tokens per prompt)."""
        prompts, inverse, counts = np.unique(
            self.prompt_index, return_inverse=True, return_counts=True
        )
        return prompts.astype(np.int64), inverse.ravel().astype(np.int64), counts


@dataclass(frozen=True)
class PromptValues:
    """One metric's value per prompt of one run, prompts sorted ascending."""

    prompts: IntArray
    values: FloatArray

    @classmethod
    def build(
        cls, prompts: npt.ArrayLike, values: npt.ArrayLike, label: str = "values"
    ) -> PromptValues:
        ids = integers(f"{label} prompts", prompts)
        vals = finite_floats(f"{label} values", values)
        if ids.size != vals.size:
            raise DetectionError(f"{label} has {ids.size} prompts but {vals.size} values")
        order = np.argsort(ids, kind="stable")
        ids, vals = ids[order], vals[order]
        if np.any(np.diff(ids) == 0):
            raise DetectionError(f"{label} lists a prompt more than once")
        return cls(prompts=ids, values=vals)

    @property
    def mean(self) -> float:
        return float(self.values.mean())


def per_prompt_values(trace: TraceArrays, metric: str) -> PromptValues:
    """The metric computed separately over each prompt's tokens."""
    term = TOKEN_TERMS.get(metric)
    if term is None:
        known = ", ".join(PER_PROMPT_METRICS)
        raise DetectionError(f"no per-prompt form of metric {metric!r} (known: {known})")
    prompts, inverse, counts = trace.groups
    sums = np.bincount(inverse, weights=term(trace.delta), minlength=prompts.size)
    values = sums / counts
    if not np.all(np.isfinite(values)):
        raise DetectionError(f"{metric} overflows on this trace (|δ| too large for exp)")
    return PromptValues(prompts=prompts, values=values.astype(np.float64))


def most_divergent(trace: TraceArrays, k: int) -> IntArray:
    """Indices of the k tokens with the largest |δ|, largest first (ties: earlier index first)."""
    if k < 1:
        raise DetectionError(f"k must be at least 1, got {k}")
    size = np.abs(trace.delta)
    order = np.lexsort((np.arange(size.size), -size))
    return order[:k].astype(np.int64)


def align(baseline: PromptValues, candidate: PromptValues, label: str) -> None:
    """Raise PromptSetMismatchError unless both runs cover exactly the same prompts."""
    if np.array_equal(baseline.prompts, candidate.prompts):
        return
    missing = np.setdiff1d(baseline.prompts, candidate.prompts)
    extra = np.setdiff1d(candidate.prompts, baseline.prompts)
    raise PromptSetMismatchError(
        f"{label}: prompt sets differ ({missing.size} prompt(s) only in the baseline, "
        f"{extra.size} only in the candidate, e.g. {_example(missing, extra)})"
    )


def _example(missing: IntArray, extra: IntArray) -> str:
    if missing.size:
        return f"prompt {int(missing[0])} missing"
    return f"prompt {int(extra[0])} added"
