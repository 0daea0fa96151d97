"""Findings and the one incident per release they are grouped into (pydantic, so the store can
persist them as JSON and an alert can be rendered from them alone)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from monitor.detection.errors import DetectionError
from monitor.series import series_label

Severity = Literal["info", "minor", "major", "critical"]
FindingKind = Literal["gate", "drift", "change_point", "coverage", "unmeasured", "unusable"]
"""gate: a tolerance broken or a measurement missing; drift / change_point: moved against the
baseline or the series' history; coverage: an arm the baseline measured that no longer applies;
unmeasured: the release could not be measured at all (failed, timed out, not installable);
unusable: a stored run detection could not use (the candidate, or a baseline or repeat it left
out)."""
Direction = Literal["worse", "better"]

SEVERITY_RANK: dict[str, int] = {"info": 0, "minor": 1, "major": 2, "critical": 3}
MAJOR_FLOORS = 3.0
CRITICAL_FLOORS = 10.0
MAJOR_RELATIVE = 0.5
CRITICAL_RELATIVE = 2.0

SIGNED_METRICS = frozenset({"k1", "mean_delta", "seq_logratio_mean"})
HIGHER_IS_BETTER = frozenset(
    {"ess", "prob_pearson", "token_agreement", "first_divergence_mean", "first_divergence_min"}
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DivergentToken(_Model):
    """One token of the candidate's trace; `index` points into that arm's token arrays."""

    probe: str
    arm: str
    index: int
    prompt_index: int
    position: int
    token_id: int
    vllm_logprob: float
    reference_logprob: float
    delta: float


class Finding(_Model):
    """One series (probe/arm/metric) of one release that broke a gate, drifted from the
    baseline, or started a new level. Numbers a kind does not produce are None; a gate finding
    on a metric the arm lacks has no candidate value."""

    release: str
    run_id: str
    kind: FindingKind
    probe: str
    arm: str
    metric: str
    direction: Direction
    severity: Severity
    candidate_value: float | None
    baseline_release: str | None = None
    baseline_run_id: str | None = None
    baseline_value: float | None = None
    effect: float | None = None
    noise_floor: float | None = None
    effect_in_floors: float | None = None
    p_value: float | None = None
    q_value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    limit: float | None = None
    n_prompts: int | None = None
    detail: str = ""

    @property
    def series(self) -> str:
        return series_label(self.probe, self.arm, self.metric)


class IncidentDraft(_Model):
    """Everything one release's regression amounts to, before the store gives it an id."""

    release: str
    run_id: str
    baseline_release: str | None
    baseline_run_id: str | None
    severity: Severity
    probes: list[str]
    metrics: list[str]
    findings: list[Finding]
    divergent_tokens: list[DivergentToken] = []


def badness(metric: str, value: float) -> float:
    """A number that grows as the metric gets worse for training."""
    if metric in SIGNED_METRICS:
        return abs(value)
    if metric in HIGHER_IS_BETTER:
        return -value
    return value


def direction(metric: str, baseline: float, candidate: float) -> Direction:
    return "worse" if badness(metric, candidate) > badness(metric, baseline) else "better"


def change_severity(
    way: Direction, effect: float, floor: float | None, baseline_value: float
) -> Severity:
    """Improvements are info; regressions rise with the effect in noise floors (or, with no
    floor measured, relative to the baseline): minor, major from 3, critical from 10 floors."""
    if way == "better":
        return "info"
    if floor is not None and floor > 0.0:
        size, major, critical = abs(effect) / floor, MAJOR_FLOORS, CRITICAL_FLOORS
    elif baseline_value != 0.0:
        size, major, critical = abs(effect / baseline_value), MAJOR_RELATIVE, CRITICAL_RELATIVE
    else:
        return "critical" if effect != 0.0 else "info"
    if size >= critical:
        return "critical"
    return "major" if size >= major else "minor"


def gate_severity(newly_broken: bool) -> Severity:
    """A gate the baseline already broke is known (info); a newly broken one is major."""
    return "major" if newly_broken else "info"


def highest(severities: Sequence[Severity]) -> Severity:
    return max(severities, key=SEVERITY_RANK.__getitem__, default="info")


def build_incident(
    findings: Sequence[Finding], divergent_tokens: Sequence[DivergentToken] = ()
) -> IncidentDraft | None:
    """One release's incident, or None when nothing in it is worse than info. Findings must
    all come from one run of one release."""
    if not findings:
        return None
    first = findings[0]
    runs = sorted({(f.release, f.run_id) for f in findings})
    if len(runs) > 1:
        shown = ", ".join(f"{release} run {run}" for release, run in runs[:3])
        raise DetectionError(f"one incident needs findings of one run, got {len(runs)}: {shown}")
    if SEVERITY_RANK[highest([f.severity for f in findings])] == 0:
        return None
    return _assemble(first.release, first.run_id, findings, divergent_tokens)


def unmeasured_incident(release: str, run_id: str, what: str, detail: str) -> IncidentDraft:
    """The incident of a release that could not be measured (`what`: the run's end, e.g.
    "failed", or "missing"): news, never silence."""
    finding = Finding(
        release=release,
        run_id=run_id,
        kind="unmeasured",
        probe="release",
        arm="run",
        metric=what,
        direction="worse",
        severity="major",
        candidate_value=None,
        detail=detail,
    )
    return _assemble(release, run_id, [finding], ())


def unusable_run(
    release: str, run_id: str, role: str, other: str, problem: str, severity: Severity = "info"
) -> Finding:
    """A stored run detection could not use, as a finding of the candidate `run_id`: `role`
    is what it was to be (candidate, baseline, repeat), `other` which run it is."""
    return Finding(
        release=release,
        run_id=run_id,
        kind="unusable",
        probe="release",
        arm=role,
        metric=f"run {other}",
        direction="worse",
        severity=severity,
        candidate_value=None,
        detail=f"{role} run {other} left out: {problem}",
    )


def _finding_key(finding: Finding) -> tuple[str, str, str, str]:
    return (finding.kind, finding.probe, finding.arm, finding.metric)


def _assemble(
    release: str,
    run_id: str,
    findings: Sequence[Finding],
    divergent_tokens: Sequence[DivergentToken],
) -> IncidentDraft:
    ordered = sorted(
        findings, key=lambda f: (-SEVERITY_RANK[f.severity], f.probe, f.arm, f.metric, f.kind)
    )
    regressed = [f for f in ordered if SEVERITY_RANK[f.severity] > 0]
    baseline = next((f for f in ordered if f.baseline_release is not None), None)
    return IncidentDraft(
        release=release,
        run_id=run_id,
        baseline_release=baseline.baseline_release if baseline else None,
        baseline_run_id=baseline.baseline_run_id if baseline else None,
        severity=highest([f.severity for f in findings]),
        probes=sorted({f.probe for f in regressed}),
        metrics=sorted({f.metric for f in regressed}),
        findings=ordered,
        divergent_tokens=list(divergent_tokens),
    )


def merge_drafts(held: IncidentDraft, new: IncidentDraft) -> IncidentDraft:
    """An open incident taking a later judgement of its release: every finding of either, the
    newer one where both name the same series and kind, so its severity only rises; divergent
    tokens of the newer draft, and the held ones of arms it does not name."""
    findings = {_finding_key(f): f for f in held.findings}
    findings.update({_finding_key(f): f for f in new.findings})
    named = {(t.probe, t.arm) for t in new.divergent_tokens}
    tokens = [
        *new.divergent_tokens,
        *(t for t in held.divergent_tokens if (t.probe, t.arm) not in named),
    ]
    return _assemble(new.release, new.run_id, list(findings.values()), tokens)


def regressed_series(draft: IncidentDraft) -> set[str]:
    """The series a draft holds worse than info, each tagged with its finding's kind."""
    return {f"{f.kind}:{f.series}" for f in draft.findings if SEVERITY_RANK[f.severity] > 0}


def group_incidents(
    findings: Sequence[Finding],
    divergent_tokens: Mapping[str, Sequence[DivergentToken]] | None = None,
) -> list[IncidentDraft]:
    """One incident per release that has anything worse than info, in the order the releases
    first appear; `divergent_tokens` is keyed by release."""
    by_release: dict[str, list[Finding]] = {}
    for finding in findings:
        by_release.setdefault(finding.release, []).append(finding)
    tokens = divergent_tokens or {}
    incidents = [
        build_incident(group, tokens.get(release, ())) for release, group in by_release.items()
    ]
    return [incident for incident in incidents if incident is not None]
