"""Upgrade advice read from the store: a release's recipe derived again from its newest stored
run (with the stored `recipe` probe's verdict), and the upgrade from one release to another
judged by detection (drift tests and noise floors) on their newest runs of one configuration.
The CLI (`parity recipe`, `parity upgrade`) and the dashboard's Upgrade page both come here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.detection.detect import DetectionPolicy, evaluate_release
from monitor.detection.errors import DetectionError
from monitor.recipe import RECIPE_PROBE, Recipe, derive_recipe, unmeasured
from monitor.schema import ArmResult, EffectiveConfig, ProbeResult
from monitor.store.incident_reads import (
    StoredRun,
    incident_detail,
    list_incidents,
    release_runs,
)
from monitor.store.queries import run_detail, version_key
from monitor.store.views import ArmView, RunDetail
from monitor.upgrade import (
    OpenIncident,
    Upgrade,
    Verification,
    config_diff,
    decide,
    knob_diff,
    moves,
    recipe_diff,
    verification,
)


class AdviceError(ValueError):
    """A release the store cannot advise on (none measured, no shared configuration); one
    line."""


DEFAULT_ARM = ("logprob_semantics", "default_vs_trainer_processed")
"""The arm measured on the release's own defaults: its effective config is the defaults."""


@dataclass(frozen=True)
class StoredRecipe:
    """A release's recipe as derived from one stored run, and whether it was verified."""

    run_id: int
    recipe: Recipe
    verified: Verification
    detail: RunDetail
    unmeasured: list[str]


def _arm(view: ArmView) -> ArmResult:
    """A stored arm as the recipe rules read it (validated when it was stored)."""
    effective = (
        EffectiveConfig.model_validate(view.effective_config) if view.effective_config else None
    )
    return ArmResult.model_construct(
        probe=view.probe,
        arm=view.arm,
        description=view.description,
        applicable=view.applicable,
        reason=view.reason,
        engine_config=view.engine_config,
        effective_config=effective,
        reference=view.reference,
        metrics=view.metrics,
        extra=view.extra,
        gated=view.gated,
        verdict="n/a",
    )


def probe_results(detail: RunDetail) -> list[ProbeResult]:
    """A stored run's probes as the suite wrote them (without token traces)."""
    return [
        ProbeResult.model_construct(
            name=probe.probe,
            description=probe.description,
            finding=probe.finding,
            arms=[_arm(arm) for arm in probe.arms],
        )
        for probe in detail.probes
    ]


def tested_recipe(detail: RunDetail) -> Recipe | None:
    """The recipe the stored recipe probe ran (its arms' extra["recipe"]), if readable."""
    for probe in detail.probes:
        if probe.probe != RECIPE_PROBE:
            continue
        for arm in probe.arms:
            stored = arm.extra.get("recipe")
            if stored is None:
                continue
            try:
                return Recipe.model_validate(stored)
            except ValidationError:
                return None
    return None


def incident_arms(draft: dict[str, Any]) -> tuple[str, ...]:
    """The "probe/arm" series an incident's findings name (info findings left out)."""
    named = {
        f"{finding.get('probe')}/{finding.get('arm')}"
        for finding in draft.get("findings", [])
        if finding.get("severity") != "info"
    }
    return tuple(sorted(named))


def recipe_of(detail: RunDetail, settings: Settings) -> StoredRecipe:
    """The run's recipe and its verification by the run's own recipe probe."""
    probes = probe_results(detail)
    recipe = derive_recipe(probes, detail.environment).model_copy(
        update={"engine_package": detail.package, "version": detail.version}
    )
    arms = [arm for probe in detail.probes if probe.probe == RECIPE_PROBE for arm in probe.arms]
    verified = verification(arms, settings.tolerances, tested_recipe(detail), recipe)
    return StoredRecipe(detail.id, recipe, verified, detail, unmeasured(probes))


def release_run(session: Session, package: str, version: str) -> StoredRun:
    """The newest succeeded full run of a release (AdviceError when there is none)."""
    runs = release_runs(session, package, version)
    if not runs:
        raise AdviceError(f"no succeeded run of {package}=={version} in the store")
    return max(runs, key=lambda r: r.run_id)


def stored_recipe(session: Session, package: str, version: str, settings: Settings) -> StoredRecipe:
    """The recipe of a release from its newest succeeded run."""
    run = release_run(session, package, version)
    return recipe_of(run_detail(session, run.run_id, traces=False), settings)


def defaults(detail: RunDetail) -> dict[str, Any] | None:
    """The effective config of the release's default engine (else of any measured arm)."""
    arm = detail.arm(*DEFAULT_ARM)
    if arm is not None and arm.effective_config:
        return arm.effective_config
    return next((a.effective_config for a in detail.arms if a.effective_config), None)


def knobs(detail: RunDetail) -> set[str]:
    """What a release exposes: settings its engines read back, and the arms that apply."""
    exposed = {
        f"setting {key}"
        for arm in detail.arms
        for key, value in (arm.effective_config or {}).items()
        if value is not None
    }
    return exposed | {
        f"arm {arm.probe}/{arm.arm}"
        for arm in detail.arms
        if arm.applicable and arm.probe != RECIPE_PROBE
    }


def _pair(session: Session, package: str, old: str, new: str) -> tuple[StoredRun, StoredRun]:
    """The two releases' newest runs of one series configuration (the newest the new release
    shares with the old one)."""
    olds = release_runs(session, package, old)
    news = release_runs(session, package, new)
    if not olds:
        raise AdviceError(f"no succeeded run of {package}=={old} in the store")
    if not news:
        raise AdviceError(f"no succeeded run of {package}=={new} in the store")
    by_config = {run.series_config: run for run in olds}
    shared = [run for run in news if run.series_config in by_config]
    if not shared:
        raise AdviceError(
            f"{package} {old} and {new} have no run in a common configuration to compare"
        )
    candidate = max(shared, key=lambda r: r.run_id)
    return by_config[candidate.series_config], candidate


def upgrade(
    session: Session,
    package: str,
    old: str,
    new: str,
    settings: Settings,
    policy: DetectionPolicy | None = None,
) -> Upgrade:
    """The upgrade from `old` to `new`: detection's findings on the new release's run with
    the old release's run as its baseline, the two recipes and the new release's incidents."""
    from monitor.judge import detection_inputs  # statistics take seconds to import: only here

    if version_key(new) == version_key(old):
        raise AdviceError(f"--from and --to name the same release ({old})")
    policy = policy or DetectionPolicy()
    base, candidate = _pair(session, package, old, new)
    try:
        inputs = detection_inputs(
            session, candidate, policy, baseline_run_id=base.run_id, choose=False
        )
    except DetectionError as exc:
        raise AdviceError(f"run {candidate.run_id} of {new} cannot be judged: {exc}") from None
    if inputs.baseline is None:
        why = "; ".join(f.detail for f in inputs.left_out) or "it cannot be paired"
        raise AdviceError(f"run {base.run_id} of {old} cannot be compared with {new}: {why}")
    findings = evaluate_release(
        inputs.candidate,
        inputs.baseline,
        repeats=inputs.repeats,
        history={},
        repeat_history=inputs.repeat_history,
        tolerances=settings.tolerances,
        policy=policy,
    )
    before = recipe_of(run_detail(session, base.run_id, traces=False), settings)
    after = recipe_of(run_detail(session, candidate.run_id, traces=False), settings)
    moved = moves(findings)
    new_gates = [f for f in findings if f.kind == "gate" and f.severity != "info"]
    incidents = [
        OpenIncident(
            f"#{incident.id} ({incident.severity}, {incident.status})",
            incident_arms(incident_detail(session, incident.id).draft),
        )
        for incident in list_incidents(session, package=package, version=new, open_only=True)
    ]
    added, removed = knob_diff(knobs(before.detail), knobs(after.detail))
    verdict, reasons = decide(
        moved, new_gates, before.recipe, after.recipe, after.verified, incidents
    )
    return Upgrade(
        package=package,
        old=base.version,
        new=candidate.version,
        old_run=base.run_id,
        new_run=candidate.run_id,
        config_changes=config_diff(defaults(before.detail), defaults(after.detail)),
        knobs_added=added,
        knobs_removed=removed,
        moved=moved,
        new_gates=new_gates,
        old_recipe=before.recipe,
        new_recipe=after.recipe,
        recipe_changes=recipe_diff(before.recipe, after.recipe),
        verified=after.verified,
        open_incidents=[
            f"{incident.label} on {', '.join(incident.arms) or 'no arm'}" for incident in incidents
        ],
        unmeasured=after.unmeasured,
        verdict=verdict,
        reasons=reasons,
    )
