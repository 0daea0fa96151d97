"""The parity recipe of a release: the engine settings and practices that restore parity, each
derived by one rule from the release's own measured arms, each line with the facts behind it.

Pure and light: it reads probe results (monitor.schema) and the default gate limits
(monitor.gates, itself pure), so the suite can derive the recipe inside a release environment
and run it (the `recipe` probe), and the monitor can derive it again from a stored run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from monitor.gates import resolve_gates
from monitor.schema import ArmResult, ProbeResult, Versions

RECIPE_PROBE = "recipe"
"""The probe that runs a release once with its whole recipe (the suite's last probe)."""
PROCESSED = "processed_logprobs"
RESET_PRACTICE = "reset_prefix_cache_after_weight_update"
NO_EFFECT = "reload had no effect"
"""What the weight_sync probe's unmet claim says when the reload left weights unchanged."""
NO_RELOAD = "release has no in-place weight reload"
"""How the weight_sync probe says the release lacks a reload path."""
FRESH_ENGINE = "start a fresh engine from the updated checkpoint after each update"
RELOAD_INSTEAD = (
    f"{FRESH_ENGINE} (or write every parameter, tied embedding and head included, through the "
    "release's load_weights path); the recipe probe checks the fresh engine"
)
FRESH_ENGINE_KEYS = frozenset({"reload_weights_incomplete", "no_inplace_reload"})
"""Unfixable lines whose answer is a fresh engine per update: the recipe probe verifies it."""
AFTER_UPDATE = "after_update"
"""The recipe probe's arm that checks the reset practice (reload, reset, generate)."""
FRESH_AFTER_UPDATE = "fresh_after_update"
"""The recipe probe's arm that checks a fresh engine started from the updated checkpoint."""


class Evidence(BaseModel):
    """One measured fact behind a recipe line: an arm's metric and the gate limit it is held to
    (None where the fact is a comparison, not a gate)."""

    probe: str
    arm: str
    metric: str
    value: float
    limit: float | None

    def breaks(self) -> bool:
        """The fact is a gate this arm breaks (the problem a line answers, not its fix)."""
        return self.limit is not None and self.value > self.limit

    def text(self) -> str:
        where = f"{self.probe}/{self.arm} {self.metric} = {self.value:.4g}"
        if self.limit is None:
            return where
        return f"{where} {'>' if self.breaks() else '<='} {self.limit:g}"


class RecipeLine(BaseModel):
    """One thing to set or do: a `vllm.LLM` keyword, a practice around weight updates, or a
    problem no setting fixes (its value then says what to do instead)."""

    kind: Literal["engine_arg", "practice", "unfixable"]
    key: str
    value: Any
    why: str
    evidence: list[Evidence] = Field(default_factory=list)


class Recipe(BaseModel):
    """Everything a release needs for parity, derived from one run's probe results."""

    engine_package: str
    version: str
    lines: list[RecipeLine] = Field(default_factory=list)

    def engine_kwargs(self) -> dict[str, Any]:
        """The `vllm.LLM` keyword arguments of the engine_arg lines."""
        return {line.key: line.value for line in self.lines if line.kind == "engine_arg"}

    def practices(self) -> set[str]:
        return {line.key for line in self.lines if line.kind == "practice"}

    def unfixable(self) -> list[RecipeLine]:
        return [line for line in self.lines if line.kind == "unfixable"]

    def fresh_engine(self) -> bool:
        """Weight sync needs a fresh engine per update (no reload, or one that misses weights)."""
        return any(line.key in FRESH_ENGINE_KEYS for line in self.unfixable())

    def update_arms(self) -> list[str]:
        """The recipe probe's arms that must pass for the recipe's weight-update practice to
        count as verified (none when the recipe says nothing about updates)."""
        wanted = {
            AFTER_UPDATE: RESET_PRACTICE in self.practices(),
            FRESH_AFTER_UPDATE: self.fresh_engine(),
        }
        return [arm for arm, needed in wanted.items() if needed]


Arms = dict[tuple[str, str], ArmResult]
Rule = Callable[[Arms], RecipeLine | None]


def broken(arm: ArmResult | None) -> list[Evidence]:
    """The default gates a measured, gated arm breaks, as evidence (empty when it passes, does
    not apply, measured nothing or is a contrast)."""
    if arm is None or not arm.applicable or not arm.gated or arm.metrics.get("n_tokens", 0) <= 0:
        return []
    found = []
    for gate in resolve_gates(arm.probe, arm.arm, {}):
        value = arm.metrics.get(gate.metric)
        if value is not None and gate.check(value) is not None:
            found.append(
                Evidence(
                    probe=arm.probe,
                    arm=arm.arm,
                    metric=gate.metric,
                    value=gate.measured(value),
                    limit=gate.limit,
                )
            )
    return found


def passes(arm: ArmResult | None) -> bool:
    """A gated arm that applied, compared tokens and breaks no default gate."""
    return (
        arm is not None
        and arm.applicable
        and arm.gated
        and arm.metrics.get("n_tokens", 0) > 0
        and not broken(arm)
    )


def _fact(arm: ArmResult, metric: str, limit: float | None = None) -> Evidence:
    return Evidence(
        probe=arm.probe,
        arm=arm.arm,
        metric=metric,
        value=float(arm.metrics.get(metric, 0.0)),
        limit=limit,
    )


def _passing(arm: ArmResult) -> list[Evidence]:
    """The arm's headline numbers held to their gates (evidence that it passes)."""
    limits = {gate.metric: gate.limit for gate in resolve_gates(arm.probe, arm.arm, {})}
    return [
        _fact(arm, metric, limits.get(metric))
        for metric in ("k3", "token_mult_prob_error")
        if metric in arm.metrics
    ]


def logprobs_mode_rule(arms: Arms) -> RecipeLine | None:
    """The default logprobs break a gate against the sampling distribution while
    processed_logprobs pass it: ask for processed_logprobs (the ratio's denominator)."""
    default = arms.get(("logprob_semantics", "default_vs_trainer_processed"))
    processed = arms.get(("logprob_semantics", "processed_vs_trainer_processed"))
    if not broken(default) or not passes(processed):
        return None
    assert default is not None and processed is not None
    mode = default.effective_config.logprobs_mode if default.effective_config else None
    if mode == PROCESSED:
        return None
    return RecipeLine(
        kind="engine_arg",
        key="logprobs_mode",
        value=PROCESSED,
        why=f"the default ({mode or 'unknown'}) is not the sampling distribution; "
        "processed_logprobs is",
        evidence=[*broken(default), *_passing(processed)],
    )


def default_logprobs_unfixable_rule(arms: Arms) -> RecipeLine | None:
    """The default logprobs break a gate and the release cannot be asked for processed ones:
    recompute the behaviour logprobs in the trainer instead."""
    default = arms.get(("logprob_semantics", "default_vs_trainer_processed"))
    processed = arms.get(("logprob_semantics", "processed_vs_trainer_processed"))
    if not broken(default) or passes(processed):
        return None
    return RecipeLine(
        kind="unfixable",
        key="default_logprobs_not_sampling",
        value="recompute the rollout's logprobs with the trainer (or correct them by importance "
        "sampling); no logprobs_mode of this release matches the sampling distribution",
        why="neither the default nor processed_logprobs passes against the sampling distribution",
        evidence=[*broken(default), *broken(processed)],
    )


def reset_practice_rule(arms: Arms) -> RecipeLine | None:
    """After a weight update the cached prefixes are stale (no_reset breaks a gate) and
    reset_prefix_cache() restores parity (reset passes): reset after every update."""
    stale = arms.get(("weight_sync", "no_reset"))
    reset = arms.get(("weight_sync", "reset"))
    if not broken(stale) or not passes(reset):
        return None
    assert reset is not None
    return RecipeLine(
        kind="practice",
        key=RESET_PRACTICE,
        value=True,
        why="prefix-cache KV computed with the old weights is reused after an update (or run "
        "with enable_prefix_caching=False)",
        evidence=[*broken(stale), *_passing(reset)],
    )


def prefix_caching_rule(arms: Arms) -> RecipeLine | None:
    """A warm prefix cache changes numbers without any weight update (cache_on breaks a gate
    that cache_off passes): turn prefix caching off."""
    on = arms.get(("prefix_cache", "cache_on"))
    off = arms.get(("prefix_cache", "cache_off"))
    if not broken(on) or not passes(off):
        return None
    return RecipeLine(
        kind="engine_arg",
        key="enable_prefix_caching",
        value=False,
        why="cached prefixes change logprobs even with unchanged weights",
        evidence=broken(on),
    )


def async_scheduling_rule(arms: Arms) -> RecipeLine | None:
    """Async scheduling changes numbers (async_on or the on-vs-off pair breaks a gate while
    async_off passes): turn it off."""
    on = arms.get(("async_scheduling", "async_on"))
    pair = arms.get(("async_scheduling", "async_on_vs_off"))
    off = arms.get(("async_scheduling", "async_off"))
    facts = [*broken(on), *broken(pair)]
    if not facts or not passes(off):
        return None
    return RecipeLine(
        kind="engine_arg",
        key="async_scheduling",
        value=False,
        why="async scheduling changes the sampled tokens' logprobs or outputs",
        evidence=facts,
    )


def fp32_head_rule(arms: Arms) -> RecipeLine | None:
    """A bf16 lm_head breaks a gate that an fp32 head passes (read back as fp32): keep the head
    in fp32. Matters for bf16 engines; an fp32 engine's head is fp32 already."""
    bf16 = arms.get(("fp32_head", "bf16_head"))
    fp32 = arms.get(("fp32_head", "fp32_head"))
    if not broken(bf16) or not passes(fp32):
        return None
    assert fp32 is not None
    return RecipeLine(
        kind="engine_arg",
        key="hf_overrides",
        value={"head_dtype": "float32"},
        why="a bf16 head breaks a gate an fp32 head passes (bf16 engines)",
        evidence=[*broken(bf16), *_passing(fp32)],
    )


def batch_invariance_rule(arms: Arms) -> RecipeLine | None:
    """Outputs depend on batch composition (one-at-a-time vs batched breaks a gate): nothing
    the suite measures fixes it; say so instead of guessing a setting."""
    pair = arms.get(("batch_invariance", "batch_1_vs_batch_n"))
    facts = broken(pair)
    if not facts:
        return None
    return RecipeLine(
        kind="unfixable",
        key="batch_variant_outputs",
        value="score rollouts with the trainer, or enable the release's batch-invariant mode "
        "where it has one (not measured by this suite)",
        why="the same prompt decodes differently alone and in a batch",
        evidence=facts,
    )


def _no_effect(arm: ArmResult) -> bool:
    if NO_EFFECT in (arm.reason or ""):
        return True
    to_old = arm.extra.get("mean_abs_delta_vs_old_weights")
    to_new = arm.metrics.get("mean_abs_delta")
    return isinstance(to_old, int | float) and to_new is not None and to_old <= to_new


def reload_unfixable_rule(arms: Arms) -> RecipeLine | None:
    """The release's weight reload leaves the engine on (partly) old weights even after a cache
    reset (the measured SmolLM2 case: a tied embedding/head that reload_weights skips): no
    setting fixes it; rebuild the engine or write every parameter instead."""
    reset = arms.get(("weight_sync", "reset"))
    if reset is None or not reset.applicable:
        return None
    if not _no_effect(reset) and not broken(reset):
        return None
    facts = broken(reset) or [_fact(reset, "mean_abs_delta")]
    to_old = reset.extra.get("mean_abs_delta_vs_old_weights")
    if isinstance(to_old, int | float):
        facts.append(
            Evidence(
                probe=reset.probe,
                arm=reset.arm,
                metric="mean_abs_delta_vs_old_weights",
                value=float(to_old),
                limit=None,
            )
        )
    return RecipeLine(
        kind="unfixable",
        key="reload_weights_incomplete",
        value=RELOAD_INSTEAD,
        why="after reload_weights and a cache reset the engine still does not match the new "
        "weights",
        evidence=facts,
    )


def no_reload_rule(arms: Arms) -> RecipeLine | None:
    """The release has no in-place weight reload: weight sync needs a fresh engine."""
    reset = arms.get(("weight_sync", "reset"))
    if reset is None or reset.applicable or NO_RELOAD not in (reset.reason or ""):
        return None
    return RecipeLine(
        kind="unfixable",
        key="no_inplace_reload",
        value=f"{FRESH_ENGINE}; the recipe probe checks it",
        why=str(reset.reason),
        evidence=[],
    )


RULES: tuple[Rule, ...] = (
    logprobs_mode_rule,
    default_logprobs_unfixable_rule,
    prefix_caching_rule,
    async_scheduling_rule,
    fp32_head_rule,
    reset_practice_rule,
    reload_unfixable_rule,
    no_reload_rule,
    batch_invariance_rule,
)
"""Every rule, in the order its lines are shown (engine arguments, practices, then what no
setting fixes)."""


RULE_PROBES = (
    "logprob_semantics",
    "prefix_cache",
    "async_scheduling",
    "fp32_head",
    "weight_sync",
    "batch_invariance",
)
"""The probes the rules read: a recipe says nothing about the ones a run did not measure."""


def unmeasured(probes: Sequence[ProbeResult]) -> list[str]:
    """The rule probes of which the run measured no arm (not run, or not applicable): no
    line about them means "not known", not "at parity"."""
    measured = {
        arm.probe
        for arm in arms_of(probes).values()
        if arm.applicable and arm.metrics.get("n_tokens", 0) > 0
    }
    return [probe for probe in RULE_PROBES if probe not in measured]


def arms_of(probes: Sequence[ProbeResult]) -> Arms:
    """The arms of the probes that measure the release as it is (the recipe probe's own arms,
    which measure the recipe, are left out)."""
    return {
        (arm.probe, arm.arm): arm
        for probe in probes
        if probe.name != RECIPE_PROBE
        for arm in probe.arms
    }


def derive_recipe(probes: Sequence[ProbeResult], versions: Versions | None) -> Recipe:
    """The release's recipe: every rule applied to the run's own probe results."""
    arms = arms_of(probes)
    lines = [line for rule in RULES if (line := rule(arms)) is not None]
    kinds = {"engine_arg": 0, "practice": 1, "unfixable": 2}
    lines.sort(key=lambda line: kinds[line.kind])
    package = versions.engine_package if versions else ""
    version = versions.vllm.split("+", 1)[0] if versions else ""
    return Recipe(engine_package=package, version=version, lines=lines)
