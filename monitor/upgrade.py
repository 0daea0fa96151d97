"""The upgrade verdict from one release to the next, pure: what changed (effective defaults,
knobs, arms detection found moved beyond their noise floor, the recipe), whether the recipe was
verified, and one verdict for CI (exit 0 safe as is, 1 safe with these recipe changes,
2 regression). The store reads that feed it are in `monitor.advice`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from monitor.detection.findings import Finding
from monitor.gates import Tolerances, resolve_gates
from monitor.recipe import Evidence, Recipe
from monitor.verdicts import ArmFacts, judge_arm

VerdictName = Literal["safe as is", "safe with these recipe changes", "regression"]
EXIT_CODES: dict[str, int] = {
    "safe as is": 0,
    "safe with these recipe changes": 1,
    "regression": 2,
}
BAD_REQUEST = 3
"""Exit code of `parity upgrade`/`parity recipe` refused for bad input or a release the store
has not measured: distinct from the three verdicts."""
REGRESSION_SEVERITIES = frozenset({"major", "critical"})
"""A move for the worse makes a regression from 3 noise floors (detection's major)."""
MOVE_KINDS = frozenset({"drift", "change_point"})


@dataclass(frozen=True)
class Verification:
    """Whether the stored `recipe` probe ran this recipe and every gated arm of it passed."""

    state: Literal["verified", "not verified", "failed"]
    text: str
    numbers: list[Evidence] = field(default_factory=list)


NOT_RUN = Verification("not verified", "not verified (no recipe run stored)")


def verification(
    arms: Sequence[ArmFacts], tolerances: Tolerances, tested: Recipe | None, derived: Recipe
) -> Verification:
    """Verified only when a stored recipe run tested this recipe's settings and practices and
    every gated arm of it passed; "failed: <arm/metric value > limit>" names what broke."""
    if not arms:
        return NOT_RUN
    if tested is None:
        return Verification(
            "not verified", "not verified (the stored recipe run does not say what it tested)"
        )
    if (
        tested.engine_kwargs() != derived.engine_kwargs()
        or tested.practices() != derived.practices()
        or tested.update_arms() != derived.update_arms()
    ):
        return Verification(
            "not verified",
            "not verified (the stored recipe run tested another recipe: "
            f"{tested.engine_kwargs()} {sorted(tested.practices())})",
        )
    gated = [arm for arm in arms if arm.applicable and arm.gated]
    if not gated:
        return Verification("not verified", "not verified (the recipe run measured no arm)")
    unmeasured = [arm for arm in derived.update_arms() if arm not in {a.arm for a in gated}]
    if unmeasured:
        return Verification(
            "not verified",
            "not verified (the recipe run did not measure its weight update: "
            f"{', '.join(unmeasured)})",
        )
    numbers: list[Evidence] = []
    failures: list[str] = []
    for arm in gated:
        judged = judge_arm(arm, tolerances)
        if judged.verdict == "fail":
            failures += [f"{arm.arm}: {reason}" for reason in judged.reasons]
        limits = {gate.metric: gate.limit for gate in resolve_gates(arm.probe, arm.arm, tolerances)}
        numbers += [
            Evidence(
                probe=arm.probe,
                arm=arm.arm,
                metric=metric,
                value=arm.metrics[metric],
                limit=limits.get(metric),
            )
            for metric in ("k3", "token_mult_prob_error")
            if metric in arm.metrics
        ]
    if failures:
        return Verification("failed", f"failed: {'; '.join(failures)}", numbers)
    shown = ", ".join(item.text() for item in numbers)
    return Verification("verified", f"verified ({shown})" if shown else "verified", numbers)


@dataclass(frozen=True)
class OpenIncident:
    """An open incident of the new release: its label and the "probe/arm" series its findings
    name."""

    label: str
    arms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    """A setting, knob or recipe line that differs (None: absent on that side)."""

    key: str
    old: Any
    new: Any


def config_diff(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[Change]:
    """Effective defaults that changed between the two releases' default engines."""
    before, after = dict(old or {}), dict(new or {})
    return [
        Change(key, before.get(key), after.get(key))
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]


def knob_diff(old: Iterable[str], new: Iterable[str]) -> tuple[list[str], list[str]]:
    """(added, removed) knobs: settings or arms one release exposes and the other does not."""
    before, after = set(old), set(new)
    return sorted(after - before), sorted(before - after)


def recipe_diff(old: Recipe, new: Recipe) -> list[Change]:
    """Recipe lines added, removed or given another value, by (kind, key)."""
    before = {f"{line.kind}:{line.key}": line.value for line in old.lines}
    after = {f"{line.kind}:{line.key}": line.value for line in new.lines}
    return [
        Change(key, before.get(key), after.get(key))
        for key in [*before, *(k for k in after if k not in before)]
        if before.get(key) != after.get(key)
    ]


def moves(findings: Sequence[Finding]) -> list[Finding]:
    """Detection's findings of numbers that moved beyond the floor (drift against the from
    release, change points in the series' history), worst first."""
    moved = [f for f in findings if f.kind in MOVE_KINDS]
    return sorted(moved, key=lambda f: (f.direction != "worse", -floors(f)))


def floors(finding: Finding) -> float:
    """How many noise floors a finding moved, whichever way (0 where no floor was measured)."""
    return abs(finding.effect_in_floors or 0.0)


@dataclass(frozen=True)
class Upgrade:
    """Everything `parity upgrade` and the Upgrade page show, and the verdict."""

    package: str
    old: str
    new: str
    old_run: int
    new_run: int
    config_changes: list[Change]
    knobs_added: list[str]
    knobs_removed: list[str]
    moved: list[Finding]
    new_gates: list[Finding]
    old_recipe: Recipe
    new_recipe: Recipe
    recipe_changes: list[Change]
    verified: Verification
    open_incidents: list[str]
    unmeasured: list[str]
    """Rule probes the new release's run did not measure: its recipe is silent on them."""
    verdict: VerdictName
    reasons: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]


def decide(
    moved: Sequence[Finding],
    new_gates: Sequence[Finding],
    old_recipe: Recipe,
    new_recipe: Recipe,
    verified: Verification,
    open_incidents: Sequence[OpenIncident],
) -> tuple[VerdictName, list[str]]:
    """Regression: a move for the worse of 3 or more floors or a newly broken gate, on an arm
    no line of the new recipe replaces; a new problem no setting fixes; a failed recipe run;
    an open incident naming an arm no recipe line replaces (one about what the recipe replaces
    is the defaults' known mismatch). An arm the recipe relies on (its fix, e.g. processed
    logprobs or the reset) is never excused: a move there is what a user of the recipe gets.
    Else safe with these recipe changes when the recipe changed, else safe as is."""
    addressed = {(e.probe, e.arm) for line in new_recipe.lines for e in line.evidence if e.breaks()}
    reasons = [
        f"{f.series} moved {f.direction} by {floors(f):.1f} floors ({f.severity})"
        for f in moved
        if f.direction == "worse"
        and f.severity in REGRESSION_SEVERITIES
        and (f.probe, f.arm) not in addressed
    ]
    reasons += [
        f"{f.series} newly breaks its gate ({_num(f.candidate_value)} > {_num(f.limit)}) and "
        "no recipe line addresses it"
        for f in new_gates
        if (f.probe, f.arm) not in addressed
    ]
    old_unfixable = {line.key for line in old_recipe.unfixable()}
    reasons += [
        f"new problem no setting fixes: {line.key} ({line.why})"
        for line in new_recipe.unfixable()
        if line.key not in old_unfixable
    ]
    if verified.state == "failed":
        reasons.append(f"recipe run {verified.text}")
    replaced = {f"{probe}/{arm}" for probe, arm in addressed}
    reasons += [
        f"open incident {incident.label}"
        for incident in open_incidents
        if not incident.arms or not set(incident.arms) <= replaced
    ]
    if reasons:
        return "regression", reasons
    if recipe_diff(old_recipe, new_recipe):
        return "safe with these recipe changes", ["the recipe changed"]
    return "safe as is", []


def _value(value: Any) -> str:
    return "(none)" if value is None else str(value)


def markdown(upgrade: Upgrade) -> str:
    """The upgrade as a pull-request comment."""
    head = f"{upgrade.package} {upgrade.old} → {upgrade.new}"
    out = [
        f"### vLLM parity upgrade: {head}",
        "",
        f"**Verdict: {upgrade.verdict}** (exit {upgrade.exit_code}; runs {upgrade.old_run} → "
        f"{upgrade.new_run})",
        "",
    ]
    out += [f"- {reason}" for reason in upgrade.reasons]
    out += (
        ["", "#### Defaults that changed", ""]
        if upgrade.reasons
        else ["#### Defaults that changed", ""]
    )
    out += _table(
        ["setting", upgrade.old, upgrade.new],
        [[c.key, _value(c.old), _value(c.new)] for c in upgrade.config_changes],
    )
    out += ["", "#### Knobs", ""]
    out += [
        f"- added: {', '.join(upgrade.knobs_added) or 'none'}",
        f"- removed: {', '.join(upgrade.knobs_removed) or 'none'}",
    ]
    out += ["", "#### Moved beyond the noise floor", ""]
    out += _table(
        ["series", "direction", "from", "to", "floors", "severity"],
        [
            [
                f.series,
                f.direction,
                _num(f.baseline_value),
                _num(f.candidate_value),
                _num(floors(f)) if f.effect_in_floors is not None else "",
                f.severity,
            ]
            for f in upgrade.moved
        ],
    )
    out += ["", "#### Recipe changes", ""]
    out += _table(
        ["line", upgrade.old, upgrade.new],
        [[c.key, _value(c.old), _value(c.new)] for c in upgrade.recipe_changes],
    )
    out += ["", f"Recipe of {upgrade.new}: {upgrade.verified.text}", ""]
    if upgrade.unmeasured:
        out += [f"Not measured, so not in the recipe: {', '.join(upgrade.unmeasured)}", ""]
    out += [
        f"- `{line.kind}` `{line.key}` = `{line.value}`: {line.why}"
        for line in upgrade.new_recipe.lines
    ]
    out += ["", f"Open incidents: {', '.join(upgrade.open_incidents) or 'none'}"]
    return "\n".join(out) + "\n"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["none"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
