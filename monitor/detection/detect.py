"""One release's detection, run after every ingest and on demand: tolerance gates, drift against
the baseline (Benjamini–Hochberg across all of the release's series, effects judged against the
noise floor), a change point at the candidate, all grouped into one incident draft."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.detection.changepoints import MIN_SEGMENT, PENALTY_MULTIPLE, change_points
from monitor.detection.drift import PairedTest, effect_interval, exceeds_floor, paired_test
from monitor.detection.errors import DetectionError, PromptSetMismatchError
from monitor.detection.fdr import q_values
from monitor.detection.findings import (
    DivergentToken,
    Finding,
    FindingKind,
    IncidentDraft,
    build_incident,
    change_severity,
    direction,
    gate_severity,
)
from monitor.detection.noise import (
    NoiseFloor,
    noise_floor,
    pooled_shift,
    resolution_floor,
    sampling_sd,
)
from monitor.detection.traces import (
    PER_PROMPT_METRICS,
    PromptValues,
    align,
    checked,
    most_divergent,
    per_prompt_values,
)
from monitor.gates import Tolerances
from monitor.metrics import HARNESS, REPLAY, TokenArrays
from monitor.series import series_label
from monitor.verdicts import MEASURED_BY, NOT_MEASURED, gate_problems, measured

DRIFT_METRICS: tuple[str, ...] = (
    "mean_abs_delta",
    "k1",
    "k3",
    "token_mult_prob_error",
    "clip_fraction",
)

NEUTRAL: dict[str, float] = {"token_mult_prob_error": 1.0}
"""Each metric's value when both sides agree exactly (0 where not named)."""

ArmKey = tuple[str, str]
SeriesName = tuple[str, str, str]
"""(probe, arm, metric): one series within a run configuration."""


MOVED_NATS = 0.01
"""A token whose logprob moved by more than this between two releases scoring the very same
token (a 1% change of its probability ratio) moved: numerics of one dtype differ by ~1e-6."""
MOVED_MAJOR_FRACTION = 0.01


@dataclass(frozen=True)
class DetectionPolicy:
    """How strict detection is. `alpha`: BH false-discovery level across a release's series;
    a drift must also exceed `floor_multiple` noise floors and `min_effect`."""

    metrics: tuple[str, ...] = DRIFT_METRICS
    alpha: float = 0.01
    floor_multiple: float = 1.0
    min_effect: float = 0.0
    interval_level: float = 0.95
    n_resamples: int = 2000
    penalty_multiple: float = PENALTY_MULTIPLE
    min_history: int = 3
    top_tokens: int = 10
    seed: int = 0
    moved_nats: float = MOVED_NATS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.metrics) - set(PER_PROMPT_METRICS))
        if unknown or not self.metrics:
            raise DetectionError(f"drift metrics must be among {PER_PROMPT_METRICS}: {unknown}")
        if not 0.0 < self.alpha < 1.0:
            raise DetectionError(f"alpha must lie in (0, 1), got {self.alpha}")
        for name in ("floor_multiple", "min_effect", "moved_nats"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0.0:
                raise DetectionError(f"{name} must be finite and non-negative, got {value}")
        if self.min_history < 1 or self.top_tokens < 1:
            raise DetectionError("min_history and top_tokens must be at least 1")
        if not 0.0 < self.interval_level < 1.0 or self.n_resamples < 100:
            raise DetectionError(
                "interval_level must lie in (0, 1) and n_resamples be at least 100, got "
                f"{self.interval_level} and {self.n_resamples}"
            )
        if not math.isfinite(self.penalty_multiple) or self.penalty_multiple <= 0.0:
            raise DetectionError(f"penalty_multiple must be positive, got {self.penalty_multiple}")


@dataclass(frozen=True)
class ArmInput:
    """One arm of a run as detection reads it: whether it applies and is gated (contrast arms
    are not), its metrics, its decoded token arrays when it kept them, and why it does not
    apply (or what it could not measure)."""

    applicable: bool
    gated: bool
    metrics: Mapping[str, float]
    trace: TokenArrays | None = None
    reason: str | None = None


@dataclass(frozen=True)
class RunInput:
    """A succeeded run handed to detection: its release version, its id in the store, the hash
    of its prompt set (runs are paired prompt by prompt) and its arms."""

    release: str
    run_id: str
    prompts_sha256: str
    arms: Mapping[ArmKey, ArmInput]

    def finding(self, kind: FindingKind, series: SeriesName, **numbers: Any) -> Finding:
        """A finding about one of this run's series."""
        probe, arm, metric = series
        return Finding(
            release=self.release,
            run_id=self.run_id,
            kind=kind,
            probe=probe,
            arm=arm,
            metric=metric,
            **numbers,
        )


@dataclass(frozen=True)
class SeriesDrift:
    """One series' paired test against the baseline, whether or not it became a finding."""

    probe: str
    arm: str
    metric: str
    test: PairedTest
    floor: NoiseFloor | None
    q_value: float
    flagged: bool
    baseline: PromptValues
    candidate: PromptValues

    @property
    def key(self) -> str:
        return series_label(self.probe, self.arm, self.metric)


def _arms(run: RunInput) -> dict[ArmKey, ArmInput]:
    return {key: arm for key, arm in run.arms.items() if arm.applicable}


def harness_resolution(run: RunInput) -> dict[str, float]:
    """Per metric, how far the harness arm's two trainers sit from exact agreement."""
    arm = run.arms.get(HARNESS)
    if arm is None or not arm.applicable:
        return {}
    return {
        metric: abs(value - NEUTRAL.get(metric, 0.0))
        for metric, value in arm.metrics.items()
        if math.isfinite(value)
    }


def with_resolution(
    floors: Mapping[SeriesName, NoiseFloor], series: Sequence[SeriesName], run: RunInput
) -> dict[SeriesName, NoiseFloor]:
    """Every series' floor raised to the harness's resolution of its metric, and a floor made
    of the resolution alone where repeats measured none."""
    resolution = harness_resolution(run)
    raised = dict(floors)
    for key in series:
        limit = resolution.get(key[2])
        if limit is None:
            continue
        floor = raised.get(key)
        raised[key] = resolution_floor(limit) if floor is None else floor.at_least(limit)
    return raised


def with_pooled_shift(
    floors: Mapping[SeriesName, NoiseFloor],
    repeat_history: Mapping[SeriesName, Sequence[Sequence[float]]],
) -> dict[SeriesName, NoiseFloor]:
    """Every series' whole-run shift measured over all releases' repeats where they outnumber
    its own repeats: three repeats estimate it from two degrees of freedom, far too loosely
    for a floor of three times it to hold the false-alarm rate."""
    pooled = dict(floors)
    for key, groups in repeat_history.items():
        shift_sd, shift_df = pooled_shift(groups)
        if shift_df == 0:
            continue
        floor = pooled.get(key) or NoiseFloor(0.0, 0.0, 0, 0)
        pooled[key] = floor.pooled(shift_sd, shift_df)
    return pooled


def with_sampling(
    floors: Mapping[SeriesName, NoiseFloor], run: RunInput, metrics: Sequence[str]
) -> dict[SeriesName, NoiseFloor]:
    """Where repeats measured no spread (none, or bit-identical runs), a sampled arm's floor
    raised to what resampling its tokens would move it by, from the candidate's own spread over
    prompts; repeats that differ measure that themselves. The replay arm scores fixed tokens."""
    raised = dict(floors)
    for key, trace in arm_traces(run, "candidate").items():
        if key in (REPLAY, HARNESS):
            continue
        for metric in metrics:
            floor = raised.get((*key, metric)) or NoiseFloor(0.0, 0.0, 0, 0)
            if floor.prompt_sd > 0.0 or floor.shift_sd > 0.0:
                continue
            spread = sampling_sd(per_prompt_values(trace, metric))
            raised[(*key, metric)] = floor.sampled(spread)
    return raised


def arm_traces(run: RunInput, role: str) -> dict[ArmKey, TokenArrays]:
    """Validated token arrays of every applicable arm that kept some."""
    return {
        key: checked(arm.trace, f"{role} {key[0]}/{key[1]}")
        for key, arm in _arms(run).items()
        if arm.trace is not None and arm.trace.n_tokens > 0
    }


def unusable(run: RunInput, policy: DetectionPolicy) -> str | None:
    """Why detection cannot judge with a stored run, or None: a non-finite metric, a trace that
    fails its checks, per-prompt values that overflow (a store may hold runs written before the
    result schema refused them)."""
    for (probe, arm), facts in _arms(run).items():
        broken = sorted(name for name, value in facts.metrics.items() if not math.isfinite(value))
        if broken:
            return f"{probe}/{arm} has non-finite metrics: {', '.join(broken)}"
    try:
        for trace in arm_traces(run, f"run {run.run_id}").values():
            for metric in policy.metrics:
                per_prompt_values(trace, metric)
    except DetectionError as exc:
        return str(exc)
    return None


def check_comparable(baseline: RunInput, candidate: RunInput) -> None:
    """Per-prompt pairing needs one prompt set on both sides."""
    if baseline.prompts_sha256 != candidate.prompts_sha256:
        raise PromptSetMismatchError(
            f"baseline run {baseline.run_id} and candidate run {candidate.run_id} ran different "
            f"prompt sets (sha256 {baseline.prompts_sha256[:12]} vs "
            f"{candidate.prompts_sha256[:12]})"
        )


def noise_floors(
    repeats: Sequence[RunInput], metrics: Sequence[str] = DRIFT_METRICS
) -> dict[SeriesName, NoiseFloor]:
    """Noise floor of every series that at least two repeat runs of one release share."""
    if not repeats:
        return {}
    if len(repeats) < 2:
        raise DetectionError(f"a noise floor needs at least 2 repeat runs, got {len(repeats)}")
    releases = {run.release for run in repeats}
    if len(releases) > 1:
        raise DetectionError(f"repeat runs must come from one release, got {sorted(releases)}")
    for run in repeats[1:]:
        check_comparable(repeats[0], run)
    traces = [arm_traces(run, f"repeat {i}") for i, run in enumerate(repeats)]
    floors: dict[SeriesName, NoiseFloor] = {}
    for key in sorted({key for run in traces for key in run}):
        runs = [run[key] for run in traces if key in run]
        if len(runs) < 2:
            continue
        for metric in metrics:
            label = f"repeats of {series_label(*key, metric)}"
            values = [per_prompt_values(trace, metric) for trace in runs]
            floors[(*key, metric)] = noise_floor(values, label)
    return floors


def paired_series(
    baseline: RunInput, candidate: RunInput, policy: DetectionPolicy
) -> list[tuple[SeriesName, PromptValues, PromptValues]]:
    """Every series both runs carry, as (name, baseline values, candidate values) over the same
    prompts, or a DetectionError saying why they cannot be paired. The harness arm is never a
    series; the replay arm only when both runs replayed the same tokens."""
    check_comparable(baseline, candidate)
    before = arm_traces(baseline, "baseline")
    after = arm_traces(candidate, "candidate")
    paired = []
    for key in sorted((set(before) & set(after)) - {HARNESS}):
        if key == REPLAY and not same_tokens(before[key], after[key]):
            continue
        for metric in policy.metrics:
            old = per_prompt_values(before[key], metric)
            new = per_prompt_values(after[key], metric)
            align(old, new, series_label(*key, metric))
            paired.append(((*key, metric), old, new))
    return paired


def drift_tests(
    baseline: RunInput,
    candidate: RunInput,
    floors: Mapping[SeriesName, NoiseFloor],
    policy: DetectionPolicy,
) -> list[SeriesDrift]:
    """Every series both runs carry: paired test, BH q-value within its family, the verdict."""
    paired = paired_series(baseline, candidate, policy)
    tests = [paired_test(old, new, series_label(*name)) for name, old, new in paired]
    chosen = [floors.get(name) for name, _, _ in paired]
    arms = _arms(candidate)
    families = [CLAIMS if arms[name[:2]].gated else CONTRASTS for name, _, _ in paired]
    verdicts = judge_drifts(tests, chosen, policy, families)
    return [
        SeriesDrift(*name, test, floor, q, flagged, old, new)
        for (name, old, new), test, floor, (q, flagged) in zip(
            paired, tests, chosen, verdicts, strict=True
        )
    ]


CLAIMS, CONTRASTS = "claims", "contrasts"
"""The two families of drift questions, each with its own false-discovery control: gated arms
(does the release still keep its claims) and contrasts (how large a known mismatch is)."""


def same_tokens(one: TokenArrays, other: TokenArrays) -> bool:
    """Whether two traces hold the very same tokens at the very same places."""
    return all(
        np.array_equal(getattr(one, name), getattr(other, name))
        for name in ("prompt_index", "position", "token_id")
    )


def replay_findings(baseline: RunInput, candidate: RunInput) -> list[Finding]:
    """The replay arm compares two releases token by token: runs that replayed different
    tokens (another corpus) are not compared, and that is said, never a quiet pass."""
    old, new = baseline.arms.get(REPLAY), candidate.arms.get(REPLAY)
    if old is None or new is None or old.trace is None or new.trace is None:
        return []
    if not old.applicable or not new.applicable or same_tokens(old.trace, new.trace):
        return []
    return [
        candidate.finding(
            "coverage",
            (*REPLAY, "tokens"),
            direction="worse",
            severity="major",
            candidate_value=float(new.trace.n_tokens),
            baseline_value=float(old.trace.n_tokens),
            baseline_release=baseline.release,
            baseline_run_id=baseline.run_id,
            detail=f"replayed other tokens than {baseline.release} (another corpus): not compared",
        )
    ]


def moved_token_findings(
    baseline: RunInput, candidate: RunInput, policy: DetectionPolicy
) -> list[Finding]:
    """Arms that scored the very same tokens in both runs (the replay arm always) compared
    token by token: tokens whose δ moved by more than `moved_nats`. A per-prompt test cannot
    see a few tokens moving a lot (most prompts unchanged); this can."""
    before = arm_traces(baseline, "baseline")
    after = arm_traces(candidate, "candidate")
    findings = []
    for key in sorted((set(before) & set(after)) - {HARNESS}):
        old, new = before[key], after[key]
        if not same_tokens(old, new):
            continue
        change = np.abs(new.delta - old.delta)
        moved = int(np.count_nonzero(change > policy.moved_nats))
        if moved == 0:
            continue
        fraction = moved / change.size
        findings.append(
            candidate.finding(
                "drift",
                (*key, "moved_tokens"),
                direction="worse",
                severity="major" if fraction >= MOVED_MAJOR_FRACTION else "minor",
                candidate_value=fraction,
                baseline_release=baseline.release,
                baseline_run_id=baseline.run_id,
                baseline_value=0.0,
                effect=float(change.max()),
                limit=policy.moved_nats,
                detail=(
                    f"{moved} of {change.size} identical tokens moved by more than "
                    f"{policy.moved_nats:g} nats against {baseline.release} (largest "
                    f"{float(change.max()):.3g})"
                ),
            )
        )
    return findings


def judge_drifts(
    tests: Sequence[PairedTest],
    floors: Sequence[NoiseFloor | None],
    policy: DetectionPolicy,
    families: Sequence[str] | None = None,
) -> list[tuple[float, bool]]:
    """(q-value, flagged) per test of one release: BH within each family of questions (the
    gated claims; the contrasts), across its distinct tests (arms that measured exactly the
    same values enter once), then a flagged drift must have q ≤ alpha and an effect beyond the
    noise floor. A test's p-value is the larger of the per-prompt test's and that of its mean
    difference as a whole-run shift (`NoiseFloor.shift_p_value`): a change must stand out from
    both kinds of noise the repeats measured."""
    groups = list(families) if families is not None else [CLAIMS] * len(tests)
    asked = [
        (group, test, max(test.p_value, 0.0 if floor is None else floor.shift_p_value(test.effect)))
        for test, floor, group in zip(tests, floors, groups, strict=True)
    ]
    q_of: dict[tuple[str, PairedTest, float], float] = {}
    for family in dict.fromkeys(groups):
        distinct = list(dict.fromkeys(each for each in asked if each[0] == family))
        found = q_values([p for *_, p in distinct])
        q_of.update({each: float(q) for each, q in zip(distinct, found, strict=True)})
    qs = [q_of[each] for each in asked]
    return [
        (
            q,
            q <= policy.alpha
            and exceeds_floor(
                test.effect,
                None if floor is None else floor.value,
                floor_multiple=policy.floor_multiple,
                min_effect=policy.min_effect,
            ),
        )
        for test, floor, q in zip(tests, floors, qs, strict=True)
    ]


def confirmed_new_level(
    values: Sequence[float], floor: NoiseFloor, policy: DetectionPolicy
) -> tuple[int, float] | None:
    """(index, level before) when the series' last two releases hold a new level that began at
    the previous release, after at least `policy.min_history` releases; else None. A new level
    is called once a second release confirms it, so one release's outlier never is."""
    start = len(values) - MIN_SEGMENT
    if start < policy.min_history:
        return None
    breaks = change_points(values, floor.value, penalty_multiple=policy.penalty_multiple)
    if start not in breaks:
        return None
    begin = max([b for b in breaks if b < start], default=0)
    return start, float(np.mean(values[begin:start]))


def _in_floors(effect: float, floor: NoiseFloor | None) -> float | None:
    if floor is None or floor.value <= 0.0:
        return None
    return effect / floor.value


def drift_findings(
    baseline: RunInput, candidate: RunInput, tests: Sequence[SeriesDrift], policy: DetectionPolicy
) -> list[Finding]:
    """Findings for the flagged series of `drift_tests`, each with its bootstrap interval."""
    findings = []
    for index, drift in enumerate(tests):
        if not drift.flagged:
            continue
        test = drift.test
        low, high = effect_interval(
            drift.baseline,
            drift.candidate,
            level=policy.interval_level,
            n_resamples=policy.n_resamples,
            seed=policy.seed + index,
            label=drift.key,
        )
        floor_value = None if drift.floor is None else drift.floor.value
        way = direction(drift.metric, test.baseline_value, test.candidate_value)
        findings.append(
            candidate.finding(
                "drift",
                (drift.probe, drift.arm, drift.metric),
                direction=way,
                severity=change_severity(way, test.effect, floor_value, test.baseline_value),
                candidate_value=test.candidate_value,
                baseline_release=baseline.release,
                baseline_run_id=baseline.run_id,
                baseline_value=test.baseline_value,
                effect=test.effect,
                noise_floor=floor_value,
                effect_in_floors=_in_floors(test.effect, drift.floor),
                p_value=test.p_value,
                q_value=drift.q_value,
                ci_low=low,
                ci_high=high,
                n_prompts=test.n_prompts,
                detail="" if drift.floor is not None else "no noise floor measured",
            )
        )
    return findings


def _failures(
    probe: str, arm: str, facts: ArmInput, tolerances: Tolerances
) -> dict[str, tuple[float | None, float | None, str]]:
    """metric -> (value, limit, why) of everything an arm's verdict fails on: no token compared,
    a partial measurement, a broken gate (monitor.verdicts)."""
    if not measured(facts.metrics):
        return {MEASURED_BY: (facts.metrics.get(MEASURED_BY, 0.0), None, NOT_MEASURED)}
    return {
        problem.gate.metric: (
            problem.value,
            problem.gate.limit,
            problem.reason if problem.value is None or problem.why else problem.gate.source,
        )
        for problem in gate_problems(probe, arm, facts.metrics, tolerances, facts.reason)
    }


def gate_findings(
    candidate: RunInput, baseline: RunInput | None, tolerances: Tolerances
) -> list[Finding]:
    """What the candidate's verdicts fail on: every arm that compared no token or lacks a
    metric, every gate an arm breaks; info when the baseline failed the same way, else major.
    Contrast arms are never gated."""
    before = _arms(baseline) if baseline is not None else {}
    findings = []
    for (probe, arm_name), arm in _arms(candidate).items():
        if not arm.gated:
            continue
        old_arm = before.get((probe, arm_name))
        known = _failures(probe, arm_name, old_arm, tolerances) if old_arm else {}
        for metric, (value, limit, why) in _failures(probe, arm_name, arm, tolerances).items():
            old = None if old_arm is None else old_arm.metrics.get(metric)
            findings.append(
                candidate.finding(
                    "gate",
                    (probe, arm_name, metric),
                    direction="worse",
                    severity=gate_severity(metric not in known),
                    candidate_value=value,
                    baseline_value=old,
                    effect=None if old is None or value is None else value - old,
                    limit=limit,
                    detail=why if metric not in known else f"{why}; the baseline failed it too",
                    baseline_release=baseline.release if baseline is not None else None,
                    baseline_run_id=baseline.run_id if baseline is not None else None,
                )
            )
    return findings


def coverage_findings(candidate: RunInput, baseline: RunInput | None) -> list[Finding]:
    """Gated arms the baseline measured that no longer apply: a release that stops measuring
    something is news, not a quieter pass. An arm the candidate does not report at all was
    not asked for (its probe not selected, or a suite that no longer has it): no news of the
    release."""
    if baseline is None:
        return []
    findings = []
    for (probe, arm_name), old in _arms(baseline).items():
        arm = candidate.arms.get((probe, arm_name))
        if not old.gated or not measured(old.metrics) or arm is None or arm.applicable:
            continue
        why = f"not applicable: {arm.reason}"
        findings.append(
            candidate.finding(
                "coverage",
                (probe, arm_name, "applicable"),
                direction="worse",
                severity="major",
                candidate_value=0.0,
                baseline_value=1.0,
                baseline_release=baseline.release,
                baseline_run_id=baseline.run_id,
                detail=f"measured on {baseline.release}; {why}",
            )
        )
    return findings


def change_point_findings(
    candidate: RunInput,
    history: Mapping[SeriesName, Sequence[float]],
    floors: Mapping[SeriesName, NoiseFloor],
    policy: DetectionPolicy,
) -> list[Finding]:
    """Series whose previous release began a new level that the candidate confirms. `history`
    maps each series to its metric in earlier releases of the run configuration, oldest first;
    series without a measured floor are skipped."""
    arms = _arms(candidate)
    findings = []
    for key, earlier in history.items():
        probe, arm_name, metric = key
        floor = floors.get(key)
        arm = arms.get((probe, arm_name))
        if floor is None or arm is None or metric not in arm.metrics:
            continue
        values = [*earlier, arm.metrics[metric]]
        found = confirmed_new_level(values, floor, policy)
        if found is None:
            continue
        start, level = found
        now = float(np.mean(values[start:]))
        effect = now - level
        way = direction(metric, level, now)
        findings.append(
            candidate.finding(
                "change_point",
                key,
                direction=way,
                severity=change_severity(way, effect, floor.value, level),
                candidate_value=values[-1],
                baseline_value=level,
                effect=effect,
                noise_floor=floor.value,
                effect_in_floors=_in_floors(effect, floor),
                detail=(
                    f"new level {now:.4g} since the previous release "
                    f"(was {level:.4g} over the {start} release(s) before)"
                ),
            )
        )
    return findings


def divergent_tokens(
    candidate: RunInput, findings: Sequence[Finding], k: int
) -> list[DivergentToken]:
    """The k largest-|δ| tokens of each arm named by a finding worse than info."""
    traces = arm_traces(candidate, "candidate")
    arms = list(dict.fromkeys((f.probe, f.arm) for f in findings if f.severity != "info"))
    tokens = []
    for key in arms:
        trace = traces.get(key)
        if trace is None:
            continue
        delta = trace.delta
        for index in most_divergent(trace, k):
            tokens.append(
                DivergentToken(
                    probe=key[0],
                    arm=key[1],
                    index=int(index),
                    prompt_index=int(trace.prompt_index[index]),
                    position=int(trace.position[index]),
                    token_id=int(trace.token_id[index]),
                    vllm_logprob=float(trace.vllm_logprob[index]),
                    reference_logprob=float(trace.reference_logprob[index]),
                    delta=float(delta[index]),
                )
            )
    return tokens


def pairing_problem(baseline: RunInput, candidate: RunInput, policy: DetectionPolicy) -> str | None:
    """Why two usable runs cannot be compared series by series (as `drift_tests` compares a
    baseline with a candidate), or None."""
    try:
        paired_series(baseline, candidate, policy)
    except DetectionError as exc:
        return str(exc)
    return None


def repeat_problem(first: RunInput, other: RunInput, policy: DetectionPolicy) -> str | None:
    """Why two usable runs of one release cannot measure a noise floor together, or None."""
    try:
        noise_floors([first, other], policy.metrics)
    except DetectionError as exc:
        return str(exc)
    return None


def evaluate_release(
    candidate: RunInput,
    baseline: RunInput | None = None,
    *,
    repeats: Sequence[RunInput] = (),
    history: Mapping[SeriesName, Sequence[float]] | None = None,
    repeat_history: Mapping[SeriesName, Sequence[Sequence[float]]] | None = None,
    tolerances: Tolerances | None = None,
    policy: DetectionPolicy | None = None,
) -> list[Finding]:
    """Every finding for the candidate release, info ones included. `repeat_history`: per
    series, the values of every stored release's runs, grouped by release (the candidate run
    left out), from which whole-run shifts are pooled."""
    policy = policy or DetectionPolicy()
    series = [(*key, metric) for key in _arms(candidate) for metric in policy.metrics]
    floors = with_resolution(noise_floors(repeats, policy.metrics), series, candidate)
    floors = with_pooled_shift(floors, repeat_history or {})
    floors = with_sampling(floors, candidate, policy.metrics)
    findings = gate_findings(candidate, baseline, tolerances or {})
    findings += coverage_findings(candidate, baseline)
    if baseline is not None:
        tests = drift_tests(baseline, candidate, floors, policy)
        findings += drift_findings(baseline, candidate, tests, policy)
        findings += replay_findings(baseline, candidate)
        findings += moved_token_findings(baseline, candidate, policy)
    findings += change_point_findings(candidate, history or {}, floors, policy)
    return findings


def draft_incident(
    candidate: RunInput, findings: Sequence[Finding], policy: DetectionPolicy
) -> IncidentDraft | None:
    """The candidate release's incident draft (its findings and the most divergent tokens of
    the arms they name), or None when nothing regressed."""
    tokens = divergent_tokens(candidate, findings, policy.top_tokens)
    return build_incident(findings, tokens)
