"""What detection reads from an arm's token arrays: per-prompt metric values and divergent
tokens. Every metric here is the mean of its per-token term (monitor.metrics.TOKEN_TERMS), so
the token-weighted mean of a metric's per-prompt values is the arm's value."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor import metrics
from monitor.detection.errors import DetectionError, PromptSetMismatchError
from monitor.metrics import MEAN_METRICS, TOKEN_TERMS, TokenArrays

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
PER_PROMPT_METRICS: tuple[str, ...] = MEAN_METRICS


def floats(name: str, values: npt.ArrayLike, ndim: int = 1, shape: str = "") -> FloatArray:
    """A float64 array of `ndim` dimensions, or a DetectionError naming the problem."""
    try:
        return metrics.floats(name, values, ndim, shape)
    except metrics.MetricsError as exc:
        raise DetectionError(str(exc)) from None


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


def checked(trace: TokenArrays, label: str) -> TokenArrays:
    """The arrays validated (equally long, non-empty, finite), or a DetectionError."""
    try:
        return trace.check(label)
    except metrics.MetricsError as exc:
        raise DetectionError(str(exc)) from None


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


def per_prompt_values(trace: TokenArrays, metric: str) -> PromptValues:
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


def most_divergent(trace: TokenArrays, k: int) -> IntArray:
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
