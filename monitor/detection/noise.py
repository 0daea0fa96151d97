"""The noise floor of one series, measured from repeat runs of a single release.

Per prompt, two runs of one release differ by sampling and scheduling noise; the floor is the
spread of those per-prompt differences. Runs that move together (every prompt shifted alike) are
caught by a second term, so a shift repeats already show is never called a regression.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy.stats import f as f_dist
from scipy.stats import median_abs_deviation
from scipy.stats import t as student_t

from monitor.detection.errors import DetectionError
from monitor.detection.traces import PromptValues, align, floats

COMMON_SHIFT_MULTIPLE = 3.0
WHOLE_RUN_LEVEL = 0.05
"""Level of the test that repeats moved as whole runs (beyond what per-prompt noise explains)."""


@dataclass(frozen=True)
class NoiseFloor:
    """`prompt_sd`: robust SD of per-prompt differences between repeats, each pair centred on
    its median difference. `shift_sd`: RMS over pairs of repeats of their mean difference."""

    prompt_sd: float
    shift_sd: float
    n_repeats: int
    n_prompts: int
    resolution: float = 0.0
    """What the harness itself cannot resolve in this metric (the suite measures it): a floor
    is never below it, so bit-identical repeats never make every change an alarm."""
    sampling_sd: float = 0.0
    """SD of the difference of two runs that sampled other tokens from the same distribution
    (√2 × the standard error of the mean over prompts): what a release that samples differently
    moves the metric by with nothing changed, which deterministic repeats never show."""
    shift_df: int = 0
    """Degrees of freedom behind `shift_sd` (repeats of one release, or pooled over every
    release's repeats): how far a whole-run shift can be trusted to be noise."""

    @property
    def value(self) -> float:
        """The smallest shift repeats cannot explain: the per-prompt spread, or three times the
        common shift between runs (measured by repeats, or expected from resampling the tokens),
        and never less than the harness's resolution."""
        common = max(self.shift_sd, self.sampling_sd)
        return max(self.prompt_sd, COMMON_SHIFT_MULTIPLE * common, self.resolution)

    def at_least(self, resolution: float) -> NoiseFloor:
        return replace(self, resolution=max(self.resolution, resolution))

    def sampled(self, sampling_sd: float) -> NoiseFloor:
        return replace(self, sampling_sd=max(self.sampling_sd, sampling_sd))

    def pooled(self, shift_sd: float, shift_df: int) -> NoiseFloor:
        """The whole-run shift measured over every release's repeats replaces this floor's own
        where it rests on more degrees of freedom or shows more whole-run noise."""
        if shift_df <= self.shift_df and shift_sd <= self.shift_sd:
            return self
        return replace(self, shift_sd=shift_sd, shift_df=shift_df)

    def shift_p_value(self, effect: float) -> float:
        """Two-sided p-value of a mean difference `effect` as a whole-run shift (Student's t on
        the measured common-shift SD, normal for the resampling SD); 0 when no common shift was
        measured, so that the per-prompt test alone decides."""
        if self.shift_sd >= self.sampling_sd and self.shift_sd > 0.0 and self.shift_df > 0:
            return float(2.0 * student_t.sf(abs(effect) / self.shift_sd, self.shift_df))
        if self.sampling_sd > 0.0:
            return float(2.0 * student_t.sf(abs(effect) / self.sampling_sd, np.inf))
        return 0.0


def resolution_floor(resolution: float) -> NoiseFloor:
    """The floor of a series no repeats measured: the harness's resolution alone."""
    return NoiseFloor(0.0, 0.0, 0, 0, resolution)


def sampling_sd(values: PromptValues) -> float:
    """√2 × the standard error of the mean over prompts: the SD of the difference between the
    means of two independent samples of tokens (0 for fewer than 2 prompts)."""
    if values.values.size < 2:
        return 0.0
    return float(np.sqrt(2.0) * values.values.std(ddof=1) / np.sqrt(values.values.size))


def pooled_shift(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """(SD of the difference between two runs of one release, degrees of freedom) pooled over
    releases: √2 × the pooled within-release SD of run values; groups of one run, or holding a
    non-finite value, add nothing."""
    arrays = [floats("repeat values", group) for group in groups]
    usable = [each for each in arrays if each.size >= 2 and np.all(np.isfinite(each))]
    df = sum(group.size - 1 for group in usable)
    if df == 0:
        return 0.0, 0
    squares = sum(float(np.sum((group - group.mean()) ** 2)) for group in usable)
    return float(np.sqrt(2.0 * squares / df)), df


def _spread(differences: npt.NDArray[np.float64]) -> float:
    """Robust SD (normal-scaled MAD); the plain SD when most prompts repeat exactly (MAD = 0)."""
    robust = float(median_abs_deviation(differences, scale="normal"))
    return robust if robust > 0.0 else float(np.sqrt(np.mean(differences**2)))


def floor_from_matrix(matrix: npt.ArrayLike, label: str = "repeats") -> NoiseFloor:
    """Noise floor from a runs × prompts matrix of one release's per-prompt values."""
    values = floats(label, matrix, ndim=2, shape="a runs × prompts matrix")
    n_repeats, n_prompts = values.shape
    if n_repeats < 2:
        raise DetectionError(
            f"{label}: a noise floor needs at least 2 repeat runs, got {n_repeats}"
        )
    if n_prompts == 0:
        raise DetectionError(f"{label} has no prompts")
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise DetectionError(f"{label} has {bad} non-finite value(s) (NaN or inf)")
    pairs = np.array(
        [values[i] - values[j] for i, j in itertools.combinations(range(n_repeats), 2)]
    )
    centred = pairs - np.median(pairs, axis=1, keepdims=True)
    shifts = pairs.mean(axis=1)
    observed = float(np.sqrt(np.mean(shifts**2)))
    from_prompts = float(np.sqrt(np.mean((pairs - shifts[:, None]) ** 2) / n_prompts))
    whole_runs = run_level_shift(observed, from_prompts, n_repeats - 1, (n_repeats - 1) * n_prompts)
    return NoiseFloor(
        prompt_sd=_spread(centred.ravel()),
        shift_sd=max(observed, from_prompts),
        n_repeats=n_repeats,
        n_prompts=n_prompts,
        shift_df=n_repeats - 1 if whole_runs else (n_repeats - 1) * n_prompts,
    )


def run_level_shift(observed: float, from_prompts: float, df: int, prompts_df: int) -> bool:
    """Whether repeats moved as whole runs: their mean differences vary more than per-prompt
    noise explains (F test at 5%). If not, the common shift is taken as the per-prompt part,
    known from many degrees of freedom rather than from a few pairs of runs."""
    if observed <= from_prompts:
        return False
    if from_prompts == 0.0:
        return True
    return bool(f_dist.sf((observed / from_prompts) ** 2, df, prompts_df) < WHOLE_RUN_LEVEL)


def noise_floor(repeats: Sequence[PromptValues], label: str = "repeats") -> NoiseFloor:
    """Noise floor from the per-prompt values of repeat runs of one release (same prompts)."""
    if len(repeats) < 2:
        raise DetectionError(
            f"{label}: a noise floor needs at least 2 repeat runs, got {len(repeats)}"
        )
    for index, run in enumerate(repeats[1:], start=1):
        align(repeats[0], run, f"{label} run {index}")
    return floor_from_matrix(np.stack([run.values for run in repeats]), label)
