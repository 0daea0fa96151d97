"""Judging a stored run: detection (monitor.detection, pure) against the run's baseline, its
release's repeats and its series' history, all read from the store, then the incident of its
release opened, updated or confirmed (monitor.incidents). The pipeline calls it on every run it
finishes, with the settings it was given; `parity detect` calls it on demand. Idempotent: a run
judged twice records nothing more the second time."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.detection.baseline import choose_baseline
from monitor.detection.detect import (
    ArmInput,
    DetectionPolicy,
    RunInput,
    SeriesName,
    draft_incident,
    evaluate_release,
    pairing_problem,
    repeat_problem,
    unusable,
)
from monitor.detection.errors import DetectionError
from monitor.detection.findings import (
    SEVERITY_RANK,
    Finding,
    IncidentDraft,
    unmeasured_incident,
    unusable_run,
)
from monitor.incidents.lifecycle import (
    Action,
    confirmation_failed,
    open_or_update,
    settle_confirmation,
    settle_unmeasured,
    unmeasured,
)
from monitor.schema import SuiteConfig
from monitor.store import models as m
from monitor.store.db import Store
from monitor.store.errors import UnreadableRun
from monitor.store.incident_reads import (
    StoredRun,
    arm_metric_values,
    series_runs,
    stored_run,
)
from monitor.store.models import CONFIRMATION, Confirmation
from monitor.store.queries import run_detail, version_key
from monitor.store.queue import run_with_config

WRITE_TRIES = 2
MAX_REPEATS = 5


@dataclass(frozen=True)
class DetectionOutcome:
    """What judging one run did: the action taken, the incident and its draft (None when
    nothing regressed), the findings judged and the runs involved."""

    run_id: int
    release: str
    action: Action
    incident_id: int | None = None
    draft: IncidentDraft | None = None
    findings: list[Finding] = field(default_factory=list)
    baseline_run_id: int | None = None
    confirmation_run_id: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class Inputs:
    """Everything detection needs for one run, read from the store, and the stored runs it
    left out (as baseline or repeat), each as an info finding saying why."""

    candidate: RunInput
    baseline: RunInput | None
    repeats: list[RunInput]
    history: dict[SeriesName, list[float]]
    repeat_history: dict[SeriesName, list[list[float]]] = field(default_factory=dict)
    left_out: list[Finding] = field(default_factory=list)


class UnusableRun(DetectionError):
    """The run being judged holds data detection cannot use (written before the result schema
    refused it): it is skipped with a finding saying why."""


def run_input(session: Session, run: StoredRun) -> RunInput:
    """A stored run as detection takes it: its arms' metrics and decoded token arrays."""
    detail = run_detail(session, run.run_id, traces=True)
    return RunInput(
        release=run.version,
        run_id=str(run.run_id),
        prompts_sha256=str(detail.config["prompts_sha256"]),
        arms={
            (arm.probe, arm.arm): ArmInput(
                arm.applicable, arm.gated, arm.metrics, arm.trace, arm.reason
            )
            for arm in detail.arms
        },
    )


def _representatives(runs: Sequence[StoredRun]) -> dict[str, StoredRun]:
    """The newest full run (not a confirmation re-run) of each release, by version."""
    return {run.version: run for run in runs if run.requested_by != CONFIRMATION}


class _Loader:
    """Loads the runs one judgement compares, each once, leaving out (with a finding) those
    detection cannot use or pair with the run they are compared with."""

    def __init__(self, session: Session, run: StoredRun, policy: DetectionPolicy) -> None:
        self.session, self.run, self.policy = session, run, policy
        self.left_out: list[Finding] = []
        self.left_out_ids: set[int] = set()
        self.loaded: dict[int, RunInput] = {}
        candidate = run_input(session, run)
        problem = unusable(candidate, policy)
        if problem is not None:
            raise UnusableRun(problem)
        self.candidate = candidate

    def usable(
        self, stored: StoredRun, role: str, pairs: Callable[[RunInput], str | None] | None = None
    ) -> RunInput | None:
        """The run, or None (noted) when it is unusable or `pairs` finds it cannot be compared
        with the run it is to be compared with."""
        if stored.run_id not in self.loaded:
            self.loaded[stored.run_id] = run_input(self.session, stored)
        each = self.loaded[stored.run_id]
        problem = unusable(each, self.policy)
        if problem is None and pairs is not None:
            problem = pairs(each)
        if problem is None:
            return each
        which = f"{stored.run_id} ({stored.version})"
        self.left_out_ids.add(stored.run_id)
        self.left_out.append(
            unusable_run(self.run.version, str(self.run.run_id), role, which, problem)
        )
        return None

    def baseline(self, stored: StoredRun) -> RunInput | None:
        return self.usable(
            stored, "baseline", lambda each: pairing_problem(each, self.candidate, self.policy)
        )

    def repeat(self, stored: StoredRun, first: RunInput | None) -> RunInput | None:
        if first is None:
            return self.usable(stored, "repeat")
        return self.usable(stored, "repeat", lambda each: repeat_problem(first, each, self.policy))


def detection_inputs(
    session: Session,
    run: StoredRun,
    policy: DetectionPolicy,
    *,
    baseline_run_id: int | None = None,
    choose: bool = True,
) -> Inputs:
    """The candidate, its baseline (the previous measured release's newest full run, or the
    given run), repeat runs for the noise floor (the baseline release's, else the candidate
    release's other runs: a floor must not hold the change it judges) and earlier releases'
    values. A baseline or repeat detection cannot use is left out (the next lower release
    becomes the baseline); UnusableRun when the candidate itself cannot be used."""
    runs = series_runs(session, run.package, run.series_config)
    releases = _representatives(runs)
    loader = _Loader(session, run, policy)
    base, baseline = None, None
    if choose:
        measured = [v for v in releases if v != run.version]
        while (version := choose_baseline(measured, run.version)) is not None:
            baseline = loader.baseline(releases[version])
            if baseline is not None:
                base = releases[version]
                break
            measured.remove(version)
    else:
        base = next((r for r in runs if r.run_id == baseline_run_id), None)
        baseline = loader.baseline(base) if base else None
        base = base if baseline is not None else None
    stored_repeats = [r for r in runs if base is not None and r.version == base.version]
    if len(stored_repeats) < 2:
        stored_repeats = [r for r in runs if r.version == run.version and r.run_id != run.run_id]
    repeats: list[RunInput] = []
    for each in stored_repeats[-MAX_REPEATS:] if len(stored_repeats) >= 2 else []:
        found = loader.repeat(each, repeats[0] if repeats else None)
        if found is not None:
            repeats.append(found)
    earlier = [
        each.run_id
        for version, each in releases.items()
        if version_key(version) < version_key(run.version)
        and each.run_id not in loader.left_out_ids
    ]
    others = [r for r in runs if r.run_id != run.run_id and r.run_id not in loader.left_out_ids]
    values = arm_metric_values(session, [r.run_id for r in others])
    history: dict[SeriesName, list[float]] = {}
    for run_id in earlier:
        for key, value in values[run_id].items():
            if key[2] in policy.metrics:
                history.setdefault(key, []).append(value)
    return Inputs(
        candidate=loader.candidate,
        baseline=baseline,
        repeats=repeats if len(repeats) >= 2 else [],
        history=history,
        repeat_history=_by_release(others, values, policy),
        left_out=loader.left_out,
    )


def _by_release(
    runs: list[StoredRun], values: dict[int, dict[SeriesName, float]], policy: DetectionPolicy
) -> dict[SeriesName, list[list[float]]]:
    """Per series, its values in every stored run, grouped by release: the repeat history
    whole-run shifts are pooled over."""
    grouped: dict[SeriesName, dict[str, list[float]]] = {}
    for each in runs:
        for key, value in values[each.run_id].items():
            if key[2] in policy.metrics:
                grouped.setdefault(key, {}).setdefault(each.version, []).append(value)
    return {key: list(releases.values()) for key, releases in grouped.items()}


def _findings(inputs: Inputs, settings: Settings, policy: DetectionPolicy) -> list[Finding]:
    """Every finding of the candidate, the runs left out included. Should the comparison still
    fail, the candidate is judged alone (its gates and history) and the baseline noted as left
    out; UnusableRun when even that fails."""

    def evaluate(baseline: RunInput | None, repeats: list[RunInput]) -> list[Finding]:
        return evaluate_release(
            inputs.candidate,
            baseline,
            repeats=repeats,
            history=inputs.history,
            repeat_history=inputs.repeat_history,
            tolerances=settings.tolerances,
            policy=policy,
        )

    try:
        return [*evaluate(inputs.baseline, inputs.repeats), *inputs.left_out]
    except DetectionError as exc:
        if inputs.baseline is None and not inputs.repeats:
            raise UnusableRun(str(exc)) from None
        problem = str(exc)
    candidate = inputs.candidate
    other = inputs.baseline.run_id if inputs.baseline else "repeats"
    note = unusable_run(candidate.release, candidate.run_id, "baseline", other, problem)
    try:
        return [*evaluate(None, []), *inputs.left_out, note]
    except DetectionError as exc:
        raise UnusableRun(str(exc)) from None


def _skipped(run_id: int, release: str, problem: str) -> DetectionOutcome:
    """The outcome of judging a run detection cannot use: skipped, with a finding saying why."""
    version = release.partition("==")[2]
    finding = unusable_run(version, str(run_id), "candidate", str(run_id), problem, "major")
    why = f"run {run_id} cannot be judged: {problem}"
    return DetectionOutcome(run_id, release, "skipped", findings=[finding], reason=why)


def judge_run(
    store: Store, run_id: int, settings: Settings, *, policy: DetectionPolicy | None = None
) -> DetectionOutcome:
    """Judge a run's release and record the result once: a new incident (with its confirmation
    run queued), an updated one, or nothing. A confirmation run is judged as a confirmation; a
    run that ended without a result, of a release not measured in its configuration, opens an
    incident of its own (the release could not be measured)."""
    policy = policy or DetectionPolicy()
    with store.reading() as session:
        row = session.get_one(m.RunRow, run_id)
        status, error = row.status, row.error
        stored_release = session.get_one(m.ReleaseRow, row.release_id)
        release = f"{stored_release.package}=={stored_release.version}"
        try:
            run = stored_run(session, run_id)
        except UnreadableRun as exc:
            return _skipped(run_id, release, str(exc))
        confirms = session.scalars(
            select(m.IncidentRow).where(m.IncidentRow.confirmation_run_id == run_id)
        ).one_or_none()
        held = IncidentDraft.model_validate(confirms.draft) if confirms is not None else None
        measured_before = run_with_config(
            session, SuiteConfig.model_validate(row.config), status=m.RunStatus.SUCCEEDED
        )
    if confirms is not None and held is not None and unmeasured(held):
        with store.writing() as session:
            action = settle_unmeasured(session, confirms.id, run_id, str(status), held, settings)
        if status != m.RunStatus.SUCCEEDED:
            return DetectionOutcome(run_id, release, action, confirms.id, held)
    elif run.requested_by == CONFIRMATION:
        return confirm(store, run_id, settings, policy=policy)
    if status != m.RunStatus.SUCCEEDED:
        if measured_before is not None:
            return DetectionOutcome(run_id, release, "skipped", reason=f"run is {status}")
        why = f"run {run_id} ended {status}: {error or 'no reason recorded'}"
        news = unmeasured_incident(run.version, str(run_id), str(status), why)
        return _record(store, run, news, settings)
    try:
        with store.reading() as session:
            inputs = detection_inputs(session, run, policy)
        findings = _findings(inputs, settings, policy)
    except UnusableRun as exc:
        return _skipped(run_id, release, str(exc))
    draft = draft_incident(inputs.candidate, findings, policy)
    baseline_id = int(inputs.baseline.run_id) if inputs.baseline else None
    if draft is None:
        return DetectionOutcome(
            run_id, release, "clean", findings=inputs.left_out, baseline_run_id=baseline_id
        )
    return _record(store, run, draft, settings, baseline_id)


def _record(
    store: Store,
    run: StoredRun,
    draft: IncidentDraft,
    settings: Settings,
    baseline_id: int | None = None,
) -> DetectionOutcome:
    """Open or update the release's incident with a draft; a concurrent opener is retried."""
    release = f"{run.package}=={run.version}"
    for attempt in range(1, WRITE_TRIES + 1):
        try:
            with store.writing() as session:
                action, incident = open_or_update(session, run, draft, settings)
                return DetectionOutcome(
                    run.run_id,
                    release,
                    action,
                    incident.id,
                    IncidentDraft.model_validate(incident.draft),
                    list(draft.findings),
                    baseline_id,
                    incident.confirmation_run_id,
                )
        except IntegrityError:
            if attempt == WRITE_TRIES:
                raise
    raise AssertionError("unreachable")


def _regressed(findings: Sequence[Finding]) -> set[str]:
    return {f.series for f in findings if SEVERITY_RANK[f.severity] > 0}


def confirm(
    store: Store, run_id: int, settings: Settings, *, policy: DetectionPolicy | None = None
) -> DetectionOutcome:
    """Judge a confirmation run: when it reproduces a regressed series of its incident (against
    the incident's baseline), confirm the incident and write its alerts in one transaction;
    otherwise mark it not confirmed. A confirmation run that failed leaves it pending (the next
    judgement of the release queues another)."""
    policy = policy or DetectionPolicy()
    with store.reading() as session:
        run = stored_run(session, run_id)
        release = f"{run.package}=={run.version}"
        row = session.scalars(
            select(m.IncidentRow).where(m.IncidentRow.confirmation_run_id == run_id)
        ).one_or_none()
        if row is None:
            return DetectionOutcome(run_id, release, "skipped", reason="confirms no incident")
        incident_id, baseline_run_id = row.id, row.baseline_run_id
        draft = IncidentDraft.model_validate(row.draft)
        if row.confirmation != Confirmation.PENDING:
            return DetectionOutcome(run_id, release, "unchanged", incident_id, draft)
        status = session.scalar(select(m.RunRow.status).where(m.RunRow.id == run_id))
        ended, inputs, findings = str(status), None, []
        if status == m.RunStatus.SUCCEEDED:
            try:
                inputs = detection_inputs(
                    session, run, policy, baseline_run_id=baseline_run_id, choose=False
                )
                findings = _findings(inputs, settings, policy)
            except UnusableRun as exc:
                ended, inputs = f"unusable ({exc})", None
    if inputs is None:
        with store.writing() as session:
            confirmation_failed(session, incident_id, run_id, ended)
        return DetectionOutcome(run_id, release, "waiting", incident_id, draft)
    reproduced = sorted(_regressed(findings) & _regressed(draft.findings))
    with store.writing() as session:
        action = settle_confirmation(session, incident_id, run_id, reproduced, draft, settings)
    if action == "unchanged":
        return DetectionOutcome(run_id, release, action, incident_id, draft)
    return DetectionOutcome(
        run_id, release, action, incident_id, draft, findings, baseline_run_id, run_id
    )
