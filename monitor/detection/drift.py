"""Drift of one series against its baseline: a paired test over the fixed prompt set.

Pairing by prompt removes the large differences between prompts, leaving the release's effect
and run-to-run noise. The Wilcoxon signed-rank test gives the p-value (robust to the heavy-tailed
per-prompt noise of logprob metrics); a bootstrap interval brackets the mean effect.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import bootstrap, wilcoxon

from monitor.detection.errors import DetectionError
from monitor.detection.traces import PromptValues, align


@dataclass(frozen=True)
class PairedTest:
    """Baseline and candidate means over prompts, their mean per-prompt difference (candidate −
    baseline) and the two-sided Wilcoxon p-value (1.0 when no prompt changed)."""

    n_prompts: int
    baseline_value: float
    candidate_value: float
    effect: float
    p_value: float


def differences(
    baseline: PromptValues, candidate: PromptValues, label: str = "series"
) -> npt.NDArray[np.float64]:
    """Per-prompt candidate − baseline, after checking both cover the same prompts."""
    align(baseline, candidate, label)
    return candidate.values - baseline.values


def paired_test(
    baseline: PromptValues, candidate: PromptValues, label: str = "series"
) -> PairedTest:
    """Wilcoxon signed-rank test of the per-prompt differences (Pratt's handling of zeros)."""
    diff = differences(baseline, candidate, label)
    if np.any(diff != 0.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p_value = float(wilcoxon(diff, zero_method="pratt").pvalue)
        if not np.isfinite(p_value):
            p_value = 1.0
    else:
        p_value = 1.0
    return PairedTest(
        n_prompts=int(diff.size),
        baseline_value=baseline.mean,
        candidate_value=candidate.mean,
        effect=float(diff.mean()),
        p_value=p_value,
    )


def effect_interval(
    baseline: PromptValues,
    candidate: PromptValues,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    label: str = "series",
) -> tuple[float, float]:
    """Paired bootstrap (BCa, resampling prompts) interval of the mean per-prompt difference."""
    if not 0.0 < level < 1.0:
        raise DetectionError(f"interval level must lie in (0, 1), got {level}")
    if n_resamples < 100:
        raise DetectionError(f"n_resamples must be at least 100, got {n_resamples}")
    diff = differences(baseline, candidate, label)
    if diff.size < 2 or np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0])
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("BCa", "percentile"):
            interval = bootstrap(
                (diff,),
                np.mean,
                n_resamples=n_resamples,
                confidence_level=level,
                method=method,
                rng=rng,
            ).confidence_interval
            low, high = interval
            if np.isfinite(low) and np.isfinite(high):
                break
    return float(low), float(high)


def exceeds_floor(
    effect: float, floor: float | None, *, floor_multiple: float = 1.0, min_effect: float = 0.0
) -> bool:
    """Whether an effect is larger than noise can explain: beyond `floor_multiple` noise floors
    (when a floor was measured) and beyond `min_effect`."""
    size = abs(effect)
    if size <= min_effect:
        return False
    return floor is None or size > floor_multiple * floor
