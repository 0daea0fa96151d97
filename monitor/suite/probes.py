"""The parity probes. Each names the engine configs it needs and what it does on each engine;
the runner starts every distinct config once and lets every probe that needs it visit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from monitor.metrics import HARNESS, REPLAY
from monitor.recipe import (
    AFTER_UPDATE,
    FRESH_AFTER_UPDATE,
    RECIPE_PROBE,
    RESET_PRACTICE,
    Recipe,
    derive_recipe,
)
from monitor.schema import (
    PROBE_NAMES,
    ArmResult,
    EffectiveConfig,
    ProbeResult,
    SamplingSpec,
    SuiteConfig,
    Versions,
)
from monitor.suite.arms import (
    failed_arm,
    not_applicable,
    pair_arm,
    score_rollouts,
    topk_arm_metrics,
    trainer_arm,
    with_unmet,
)
from monitor.suite.engine import (
    Engine,
    EngineConfig,
    KnobMissing,
    ReleaseKnobs,
    Rollout,
    read_back_problems,
    recipe_read_back,
    resolved_key,
)
from monitor.suite.replay import ReplayCorpus
from monitor.suite.trainer import SEMANTICS, Trainer

Progress = Callable[..., None]
"""(step message, **counts): one step of the suite, e.g. `prompts=` a generation's prompts."""


def engine_plan(engine_dtype: str, knobs: ReleaseKnobs) -> dict[str, EngineConfig]:
    """Named engine configs: one knob changed from the base at a time. The V0 and V1 engines
    report processed logprobs where the release can be asked to (else its default)."""
    base = EngineConfig(dtype=engine_dtype)
    generations = base if knobs.has("logprobs_mode") else base.replace(logprobs_mode=None)
    return {
        "base": base,
        "default_mode": base.replace(logprobs_mode=None),
        "raw": base.replace(logprobs_mode="raw_logprobs"),
        "cache_on": base.replace(prefix_caching=True),
        "async_on": base.replace(async_scheduling=True),
        "bf16_head": base.replace(dtype="bfloat16"),
        "fp32_head": base.replace(dtype="bfloat16", head_dtype="float32"),
        "v0": generations.replace(env=(("VLLM_USE_V1", "0"),)),
        "v1": generations.replace(env=(("VLLM_USE_V1", "1"),)),
    }


@dataclass
class SuiteContext:
    """Shared state of one suite run: prompts, samplers, trainers and memoised rollouts."""

    config: SuiteConfig
    knobs: ReleaseKnobs
    vllm_version: tuple[int, ...]
    prompts: list[tuple[int, list[int]]]
    group_indices: set[int]
    rollout_sampling: SamplingSpec
    plain_sampling: SamplingSpec
    greedy_sampling: SamplingSpec
    trainer: Trainer
    harness_trainer: Trainer | None
    work_dir: Path
    progress: Progress
    plan: dict[str, EngineConfig] = field(default_factory=dict)
    effective: dict[str, EffectiveConfig] = field(default_factory=dict)
    requested: dict[str, dict[str, Any]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    extra_trainers: list[Trainer] = field(default_factory=list)
    replay: ReplayCorpus | None = None
    _memo: dict[tuple[Any, ...], list[Rollout]] = field(default_factory=dict)

    def trainers(self) -> list[Trainer]:
        """Every trainer this run used, the weight-sync copy included."""
        harness = [self.harness_trainer] if self.harness_trainer is not None else []
        return [self.trainer, *harness, *self.extra_trainers]

    def scored(self) -> int:
        """Sequences the trainers have scored so far (each distinct one once)."""
        return sum({id(t): t.forwards for t in self.trainers()}.values())

    def group_prompts(self) -> list[tuple[int, list[int]]]:
        return [p for p in self.prompts if p[0] in self.group_indices]

    def generate(
        self,
        engine: Engine,
        label: str,
        sampling: SamplingSpec,
        prompts: list[tuple[int, list[int]]] | None = None,
        batched: bool = True,
        memo: bool = True,
        top_logprobs: int = 1,
    ) -> list[Rollout]:
        """Generate on `engine`; memoised rollouts are shared by probes on the same engine."""
        key = (resolved_key(engine.config, self.knobs), label)
        if memo and key in self._memo:
            return self._memo[key]
        chosen = prompts if prompts is not None else self.prompts
        self.progress(f"generate {label}", prompts=len(chosen))
        rollouts = engine.generate(chosen, sampling, batched, top_logprobs)
        if memo:
            self._memo[key] = rollouts
        return rollouts

    def engine_facts(self, name: str) -> tuple[dict[str, Any], EffectiveConfig | None]:
        return self.requested.get(name, {}), self.effective.get(name)

    def read_back(self, *names: str) -> list[str]:
        """What the named engines' read-backs contradict of the configs they were started with."""
        return [
            problem
            for name in dict.fromkeys(names)
            if name in self.plan
            for problem in read_back_problems(self.plan[name], self.effective.get(name), self.knobs)
        ]


class Probe:
    """A probe: engine configs it needs, what it does on each, and the arms it reports."""

    name = ""
    description = ""
    engines: tuple[str, ...] = ()
    mutates_engine = False

    compares_runs = False

    def __init__(self) -> None:
        self.rollouts: dict[str, list[Rollout]] = {}
        self.greedy: dict[str, list[Rollout]] = {}
        self.skipped: dict[str, str] = {}

    def not_applicable(self, ctx: SuiteContext) -> str | None:
        return None

    def visit(self, ctx: SuiteContext, name: str, engine: Engine) -> None:
        self.rollouts[name] = ctx.generate(engine, "rollout", ctx.rollout_sampling)
        if self.compares_runs:
            self.greedy[name] = ctx.generate(engine, "greedy", ctx.greedy_sampling)

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        raise NotImplementedError

    def finding(self, arms: list[ArmResult]) -> str:
        return _summary(arms)

    def missing(self, ctx: SuiteContext, *names: str) -> str | None:
        for name in names:
            reason = self.skipped.get(name) or ctx.unavailable.get(name)
            if reason:
                return reason
            if name not in self.rollouts and name not in self.greedy:
                return f"no rollouts for {name!r}"
        return None

    def vs_trainer(
        self,
        ctx: SuiteContext,
        arm: str,
        description: str,
        name: str,
        semantics: str = "processed",
        trainer: Trainer | None = None,
        sampling: SamplingSpec | None = None,
        rollouts: list[Rollout] | None = None,
        extra: dict[str, Any] | None = None,
        contrast: str | None = None,
        claims: list[str] | None = None,
    ) -> ArmResult:
        """The engine `name`'s rollouts (or `rollouts` made on it) against a trainer; `claims`
        adds what else the arm found unmet to what the engine's read-back contradicts."""
        reason = None if rollouts is not None else self.missing(ctx, name)
        if reason:
            return not_applicable(self.name, arm, description, reason)
        requested, effective = ctx.engine_facts(name)
        return trainer_arm(
            self.name,
            arm,
            description,
            rollouts if rollouts is not None else self.rollouts[name],
            trainer or ctx.trainer,
            semantics,
            sampling or ctx.rollout_sampling,
            requested,
            effective,
            extra,
            contrast,
            [*ctx.read_back(name), *(claims or [])],
        )

    def vs_run(
        self,
        ctx: SuiteContext,
        arm: str,
        description: str,
        name: str,
        reference_name: str,
        candidate: list[Rollout] | None = None,
        reference: list[Rollout] | None = None,
        sampling: SamplingSpec | None = None,
        label: str | None = None,
        engine: str | None = None,
        claims: list[str] | None = None,
    ) -> ArmResult:
        """Compare two vLLM runs; `engine` names the engine both ran on when `name` is a run."""
        reason = self.missing(ctx, name, reference_name) if candidate is None else None
        if reason:
            return not_applicable(self.name, arm, description, reason)
        requested, effective = ctx.engine_facts(engine or name)
        return pair_arm(
            self.name,
            arm,
            description,
            candidate if candidate is not None else self.greedy[name],
            reference if reference is not None else self.greedy[reference_name],
            label or reference_name,
            sampling or ctx.greedy_sampling,
            requested,
            effective,
            unmet=[*ctx.read_back(engine or name, reference_name), *(claims or [])],
        )


class LogprobSemantics(Probe):
    name = "logprob_semantics"
    description = (
        "What vLLM's logprobs mean at T≠1 with top-p/top-k: the release default vs raw_logprobs "
        "vs processed_logprobs, each against trainer recomputes that are raw, temperature-scaled, "
        "or fully processed (renormalised over the top-k/top-p support)."
    )
    engines = ("default_mode", "raw", "base")
    modes: ClassVar[dict[str, str]] = {
        "default": "default_mode",
        "raw": "raw",
        "processed": "base",
    }

    claims: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {("default", "processed"), ("raw", "raw"), ("processed", "processed")}
    )
    """(mode, semantics) pairs that claim parity: the default against the sampling
    distribution (what an RL ratio needs), and each explicit mode against its own semantics.
    The other six are contrasts: they size a mismatch, whatever the release does."""

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        return [
            self.vs_trainer(
                ctx,
                f"{mode}_vs_trainer_{semantics}",
                f"vLLM {mode} logprobs vs trainer {semantics} recompute",
                name,
                semantics,
                contrast=None
                if (mode, semantics) in self.claims
                else f"vLLM {mode} logprobs against a {semantics} recompute",
            )
            for mode, name in self.modes.items()
            for semantics in SEMANTICS
        ]

    def finding(self, arms: list[ArmResult]) -> str:
        default = [a for a in arms if a.arm.startswith("default_") and a.applicable]
        if not default:
            return _summary(arms)
        best = min(default, key=lambda a: a.metrics.get("mean_abs_delta", float("inf")))
        mode = best.effective_config.logprobs_mode if best.effective_config else None
        semantics = best.arm.rsplit("_", 1)[-1]
        processed = next((a for a in default if a.arm.endswith("_processed")), None)
        gap = processed.metrics.get("mean_abs_delta", float("nan")) if processed else float("nan")
        return (
            f"default logprobs_mode={mode or 'unknown'} matches trainer {semantics} semantics "
            f"(mean|δ| {best.metrics.get('mean_abs_delta', float('nan')):.3g}); against the "
            f"sampling distribution (processed) mean|δ| is {gap:.3g}"
        )


class PrefixCache(Probe):
    name = "prefix_cache"
    description = (
        "Prefix caching on vs off. The shared-prefix prompts are generated once to fill the cache, "
        "then all prompts are generated again so the cache path is taken."
    )
    compares_runs = True
    engines = ("base", "cache_on")

    def visit(self, ctx: SuiteContext, name: str, engine: Engine) -> None:
        if name == "cache_on":
            ctx.generate(engine, "prime", ctx.rollout_sampling, ctx.group_prompts())
        super().visit(ctx, name, engine)

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        extra: dict[str, Any] = {}
        claims = []
        if "cache_on" in self.rollouts:
            grouped = [r for r in self.rollouts["cache_on"] if r.prompt_index in ctx.group_indices]
            cached = sum(r.cached_tokens or 0 for r in grouped)
            total = sum(len(r.prompt_ids) for r in grouped)
            extra = {
                "cached_prompt_tokens": cached,
                "shared_prefix_prompt_tokens": total,
                "cache_hit_fraction": cached / total if total else 0.0,
            }
            if not cached:
                claims.append("no shared-prefix prompt token came from the prefix cache")
        return [
            self.vs_trainer(ctx, "cache_off", "prefix caching off vs trainer", "base"),
            self.vs_trainer(
                ctx,
                "cache_on",
                "prefix caching on (cache warm) vs trainer",
                "cache_on",
                extra=extra,
                claims=claims,
            ),
            self.vs_run(
                ctx,
                "cache_on_vs_off",
                "cache on vs cache off, greedy",
                "cache_on",
                "base",
                claims=claims,
            ),
        ]


class WeightSync(Probe):
    name = "weight_sync"
    description = (
        "Update the running engine to a perturbed copy of the weights (one sign-like optimizer "
        "step) through the release's reload path, then compare against the trainer with the new "
        "weights: without and with reset_prefix_cache()."
    )
    engines = ("cache_on",)
    mutates_engine = True

    def __init__(self) -> None:
        super().__init__()
        self.updated: Trainer | None = None
        self.weights_moved: float | None = None
        self.reset_reported = False

    def visit(self, ctx: SuiteContext, name: str, engine: Engine) -> None:
        groups = ctx.group_prompts()
        ctx.generate(engine, "prime", ctx.rollout_sampling, groups)
        ctx.progress("weight sync: perturb and reload weights")
        updated = ctx.trainer.perturbed(
            ctx.config.weight_step, ctx.config.seed, ctx.work_dir / "updated-weights"
        )
        before = engine.weight_sample()
        try:
            engine.reload_weights(updated.path)
        except KnobMissing as exc:
            self.skipped[name] = f"release has no in-place weight reload: {exc}"
            return
        after = engine.weight_sample()
        if before is not None and after is not None:
            self.weights_moved = relative_move(before, after)
        self.updated = updated
        ctx.extra_trainers.append(updated)
        self.rollouts["no_reset"] = ctx.generate(
            engine, "after-update", ctx.rollout_sampling, groups, memo=False
        )
        self.reset_reported = engine.reset_prefix_cache()
        self.rollouts["reset"] = ctx.generate(
            engine, "after-reset", ctx.rollout_sampling, groups, memo=False
        )

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        reason = self.skipped.get("cache_on") or ctx.unavailable.get("cache_on")
        arms = [
            ("no_reset", "after the update, without reset_prefix_cache(), vs trainer(new)"),
            ("reset", "after the update and reset_prefix_cache(), vs trainer(new)"),
        ]
        updated = self.updated
        if reason or updated is None:
            why = reason or "the weight update did not run"
            return [not_applicable(self.name, arm, text, why) for arm, text in arms]
        step = ctx.config.weight_step
        moved = _unmoved(self.weights_moved, step, "reload")
        results = []
        for arm, text in arms:
            rollouts = self.rollouts[arm]
            old = self.vs_trainer(ctx, arm, text, "cache_on", rollouts=rollouts)
            result = self.vs_trainer(
                ctx,
                arm,
                text,
                "cache_on",
                trainer=updated,
                rollouts=rollouts,
                extra={"cached_prompt_tokens": sum(r.cached_tokens or 0 for r in rollouts)},
            )
            to_old = old.metrics.get("mean_abs_delta")
            to_new = result.metrics.get("mean_abs_delta")
            claims = [*ctx.read_back("cache_on"), *moved]
            if arm == "reset" and not self.reset_reported:
                claims.append("reset_prefix_cache() reported that it did not reset")
            stayed = to_old is not None and to_new is not None and to_old <= to_new
            if arm == "reset" and self.weights_moved is None and step > 0 and stayed:
                claims.append(
                    "reload had no effect: the engine is closer to the old weights "
                    f"(mean|δ| {to_old:.3g}) than to the new ({to_new:.3g})"
                )
            with_unmet(result, claims)
            result.extra["mean_abs_delta_vs_old_weights"] = to_old
            result.extra["weights_moved"] = self.weights_moved
            result.extra["weight_step"] = step
            results.append(result)
        return results


MIN_MOVE = 0.1
"""A reload moved the engine when its weights moved at least this share of the update step."""


def relative_move(before: Any, after: Any) -> float:
    """How far a weight sample moved, relative to its own scale (rms of the change over rms
    of the sample before)."""
    import numpy as np

    old, new = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if old.shape != new.shape:
        return float("inf")
    scale = float(np.sqrt(np.mean(old**2))) if old.size else 0.0
    change = float(np.sqrt(np.mean((new - old) ** 2))) if old.size else 0.0
    return change / scale if scale > 0 else change


class AsyncScheduling(Probe):
    name = "async_scheduling"
    description = "Async scheduling on vs off (on by default from vLLM 0.14.0)."
    compares_runs = True
    engines = ("base", "async_on")

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        effective = ctx.effective.get("async_on")
        if effective is not None and effective.async_scheduling is not True:
            self.skipped["async_on"] = (
                "async_scheduling=True was asked for but the engine resolved it to "
                f"{effective.async_scheduling} (no async support on this platform's executor)"
            )
        return [
            self.vs_trainer(ctx, "async_off", "async scheduling off vs trainer", "base"),
            self.vs_trainer(ctx, "async_on", "async scheduling on vs trainer", "async_on"),
            self.vs_run(ctx, "async_on_vs_off", "async on vs off, greedy", "async_on", "base"),
        ]


class BatchInvariance(Probe):
    name = "batch_invariance"
    description = (
        "Greedy decoding of the same prompts as one batch vs one request at a time, and two "
        "identical batched runs (determinism)."
    )
    engines = ("base",)

    def visit(self, ctx: SuiteContext, name: str, engine: Engine) -> None:
        greedy = ctx.greedy_sampling
        self.greedy[name] = ctx.generate(engine, "greedy", greedy)
        self.greedy["batch_1"] = ctx.generate(engine, "greedy-one-at-a-time", greedy, batched=False)
        self.greedy["repeat"] = ctx.generate(engine, "greedy-repeat", greedy, memo=False)

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        return [
            self.vs_run(
                ctx,
                "batch_1_vs_batch_n",
                "one request at a time vs one batch",
                "batch_1",
                "base",
                label="base:batched",
                engine="base",
            ),
            self.vs_run(
                ctx,
                "repeat_run",
                "a second identical batched run vs the first",
                "repeat",
                "base",
                label="base:first-run",
                engine="base",
            ),
        ]


class Fp32Head(Probe):
    name = "fp32_head"
    description = (
        "A bf16 engine with its lm_head in bf16 vs in fp32 (hf_overrides head_dtype=float32), "
        "against the trainer; the head dtype in effect is read back from the loaded model."
    )
    engines = ("bf16_head", "fp32_head")

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        effective = ctx.effective.get("fp32_head")
        if effective is not None and "float32" not in str(effective.head_dtype):
            self.skipped["fp32_head"] = (
                f"release ignores head_dtype=float32 (head ran in {effective.head_dtype})"
            )
        return [
            self.vs_trainer(ctx, "bf16_head", "bf16 engine, bf16 lm_head vs trainer", "bf16_head"),
            self.vs_trainer(ctx, "fp32_head", "bf16 engine, fp32 lm_head vs trainer", "fp32_head"),
        ]


class PrefillVsDecode(Probe):
    name = "prefill_vs_decode"
    description = (
        "The same tokens scored on the decode path (sampling logprobs) and on the prefill path "
        "(prompt_logprobs), at T=1 without top-p/top-k so both mean the same distribution."
    )
    engines = ("base",)

    def visit(self, ctx: SuiteContext, name: str, engine: Engine) -> None:
        decode = ctx.generate(engine, "plain", ctx.plain_sampling)
        ctx.progress("prefill scoring")
        scored = engine.prompt_logprobs(decode)
        self.rollouts["base"] = decode
        self.rollouts["prefill"] = [
            Rollout(r.prompt_index, r.prompt_ids, r.token_ids, logprobs, None, r.cached_tokens)
            for r, logprobs in zip(decode, scored, strict=True)
        ]

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        plain = ctx.plain_sampling
        reason = self.missing(ctx, "base")
        if reason:
            names = ("decode", "prefill", "prefill_vs_decode")
            return [not_applicable(self.name, n, n, reason) for n in names]
        return [
            self.vs_trainer(
                ctx, "decode", "decode logprobs vs trainer", "base", "raw", sampling=plain
            ),
            self.vs_trainer(
                ctx,
                "prefill",
                "prompt_logprobs vs trainer",
                "base",
                "raw",
                sampling=plain,
                rollouts=self.rollouts["prefill"],
            ),
            self.vs_run(
                ctx,
                "prefill_vs_decode",
                "prompt_logprobs vs decode logprobs",
                "base",
                "base",
                candidate=self.rollouts["prefill"],
                reference=self.rollouts["base"],
                sampling=plain,
                label="base:decode",
            ),
        ]


class Replay(Probe):
    name, arm = REPLAY
    description = (
        "A fixed corpus of token sequences, made once per model and kept, scored by teacher "
        "forcing (prompt_logprobs, T=1) and by the trainer: every release scores the very same "
        "tokens, so releases are compared token by token, free of sampling noise."
    )
    engines = ("base",)

    def visit(self, ctx: SuiteContext, name: str, engine: Engine) -> None:
        if ctx.replay is None:
            return
        ctx.progress(f"replay corpus {ctx.replay.digest}")
        corpus = [
            Rollout(s.prompt_index, s.prompt_ids, s.token_ids, np.empty(0), None)
            for s in ctx.replay.sequences
        ]
        scored = engine.prompt_logprobs(corpus)
        self.rollouts["base"] = [
            replace(rollout, logprobs=logprobs)
            for rollout, logprobs in zip(corpus, scored, strict=True)
        ]

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        text = "the replay corpus: prompt_logprobs vs trainer, raw at T=1"
        if ctx.replay is None:
            return [not_applicable(self.name, self.arm, text, "no replay corpus was loaded")]
        return [
            self.vs_trainer(
                ctx,
                self.arm,
                text,
                "base",
                "raw",
                sampling=ctx.replay.sampling(),
                extra={"corpus": ctx.replay.digest},
            )
        ]


class DtypeFloor(Probe):
    name, arm = HARNESS
    description = (
        "The harness's own resolution: the trainer's processed logprobs of the base engine's "
        "rollouts against a float64 trainer's, on the same tokens. No engine is compared, so "
        "it is not gated; detection floors every series with it."
    )
    engines = ("base",)

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        text = f"trainer ({ctx.trainer.dtype}) vs a float64 trainer, processed, same tokens"
        fine = ctx.harness_trainer
        reason = self.missing(ctx, "base")
        if reason or fine is None:
            why = reason or "no float64 trainer was loaded"
            return [not_applicable(self.name, self.arm, text, why)]
        sampling = ctx.rollout_sampling
        rollouts = self.rollouts["base"]
        scores = score_rollouts(ctx.trainer, rollouts, sampling)
        scored = [
            replace(rollout, logprobs=score.processed, top_ids=score.argmax)
            for rollout, score in zip(rollouts, scores, strict=True)
        ]
        return [
            trainer_arm(
                self.name,
                self.arm,
                text,
                scored,
                fine,
                "processed",
                sampling,
                {},
                None,
                contrast=f"the trainer in {ctx.trainer.dtype} against float64: the harness's "
                "resolution, no engine",
            )
        ]


class V0VsV1(Probe):
    name = "v0_vs_v1"
    description = (
        "The V0 and V1 engines of one release (only 0.7.x to 0.10.x have both), each on "
        "processed logprobs where the release can be asked for them."
    )
    compares_runs = True
    engines = ("v0", "v1")

    def not_applicable(self, ctx: SuiteContext) -> str | None:
        if ctx.vllm_version >= (0, 11):
            return "the V0 engine was removed in vLLM 0.11.0"
        if ctx.vllm_version < (0, 7):
            return "the V1 engine arrived in vLLM 0.7"
        return None

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        contrast = (
            None
            if ctx.knobs.has("logprobs_mode")
            else "no logprobs_mode: each engine reports its own default logprobs"
        )
        return [
            self.vs_trainer(ctx, "v0", "V0 engine vs trainer", "v0", contrast=contrast),
            self.vs_trainer(ctx, "v1", "V1 engine vs trainer", "v1", contrast=contrast),
            self.vs_run(ctx, "v0_vs_v1", "V0 vs V1, greedy", "v0", "v1"),
        ]


TOPK_WANTED = 64
"""Top logprobs asked per position (the suite raises the release's max_logprobs to it where the
release has the setting; the engine's own limit is read back and caps it)."""
TOPK_STRIDE = 4
TOPK_CAP = 256
"""Top-k positions: every 4th generated token of each sequence, at most 256 per arm."""


def topk_asked(limit: int) -> int:
    """How many top logprobs to ask of an engine whose max_logprobs is `limit` (negative: no
    limit, as newer releases allow)."""
    return TOPK_WANTED if limit < 0 else min(TOPK_WANTED, limit)


def trainer_semantics(logprobs_mode: str | None) -> str:
    """The trainer semantics of the logprobs an engine reports: processed for
    processed_logprobs/processed_logits, else raw (logits differ from logprobs by a constant
    per position, which the top-k comparison's renormalisation cancels)."""
    return "processed" if logprobs_mode and "processed" in logprobs_mode.lower() else "raw"


class RecipeRun(Probe):
    name = RECIPE_PROBE
    description = (
        "The release's parity recipe, derived from this run's other probes, run once: an engine "
        "with the harness settings and the recipe's engine arguments over the release's "
        "defaults, its rollouts against the trainer, and its weight-update practice; vLLM's "
        "top-k logprobs against the trainer's whole distribution on the base and recipe engines."
    )
    engines = ("base",)
    """The base engine gives the top-k yardstick; the recipe's own engine is started by the
    runner after every other probe has been scored (`derive`, then `visit(ctx, "recipe", …)`)."""

    def __init__(self) -> None:
        super().__init__()
        self.recipe: Recipe | None = None
        self.failure: str | None = None
        self.update_failure: str | None = None
        self.updated: Trainer | None = None
        self.weights_moved: float | None = None
        self.reset_reported = False
        self.fresh_failure: str | None = None
        self.fresh_moved: float | None = None
        self.original_sample: np.ndarray | None = None
        self.top_k: dict[str, int] = {}

    def derive(self, probes: Sequence[ProbeResult], versions: Versions | None) -> Recipe | None:
        """The recipe of this run's earlier probe results (monitor.recipe.derive_recipe); a
        rule that breaks fails this probe's arms with its error, not the run's measurements."""
        try:
            self.recipe = derive_recipe(probes, versions)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.failure = f"the recipe could not be derived: {error}"
        return self.recipe

    def practices(self) -> set[str]:
        return set(self.recipe.practices()) if self.recipe is not None else set()

    def update_arms(self) -> list[str]:
        return self.recipe.update_arms() if self.recipe is not None else []

    def updated_trainer(self, ctx: SuiteContext) -> Trainer:
        """The trainer after one update step: weight_sync's when it made one, else made now."""
        step = ctx.config.weight_step
        label = f"perturbed(step={step:g})"
        updated = next((t for t in ctx.extra_trainers if t.label == label), None)
        if updated is None:
            ctx.progress("recipe: perturb weights")
            updated = ctx.trainer.perturbed(
                step, ctx.config.seed, ctx.work_dir / "recipe-updated-weights"
            )
            ctx.extra_trainers.append(updated)
        return updated

    def visit(self, ctx: SuiteContext, name: str, engine: Engine) -> None:
        k = topk_asked(engine.max_logprobs())
        self.top_k[name] = k
        if name == "base":
            self.rollouts[name] = ctx.generate(
                engine, "top-k", ctx.rollout_sampling, top_logprobs=k
            )
            return
        self.rollouts[name] = ctx.generate(
            engine, "recipe-rollout", ctx.rollout_sampling, memo=False, top_logprobs=k
        )
        self.original_sample = engine.weight_sample()
        if RESET_PRACTICE in self.practices():
            self._update(ctx, engine)

    def visit_fresh(self, ctx: SuiteContext, engine: Engine) -> None:
        """The fresh-engine practice: an engine started from the updated checkpoint generates
        the prompts the reset practice would, nothing reloaded in place."""
        self.rollouts[FRESH_AFTER_UPDATE] = ctx.generate(
            engine,
            "recipe-fresh-after-update",
            ctx.rollout_sampling,
            ctx.group_prompts(),
            memo=False,
        )
        fresh = engine.weight_sample()
        if self.original_sample is not None and fresh is not None:
            self.fresh_moved = relative_move(self.original_sample, fresh)

    def _update(self, ctx: SuiteContext, engine: Engine) -> None:
        """The recipe's weight-update practice, as the weight_sync probe does it: prime the
        shared prefixes, reload updated weights, reset_prefix_cache(), generate again."""
        groups = ctx.group_prompts()
        ctx.generate(engine, "recipe-prime", ctx.rollout_sampling, groups, memo=False)
        updated = self.updated_trainer(ctx)
        before = engine.weight_sample()
        try:
            engine.reload_weights(updated.path)
        except KnobMissing as exc:
            self.update_failure = f"release has no in-place weight reload: {exc}"
            return
        after = engine.weight_sample()
        if before is not None and after is not None:
            self.weights_moved = relative_move(before, after)
        self.updated = updated
        self.reset_reported = engine.reset_prefix_cache()
        self.rollouts[AFTER_UPDATE] = ctx.generate(
            engine, "recipe-after-update", ctx.rollout_sampling, groups, memo=False
        )

    def _topk(self, ctx: SuiteContext, name: str) -> tuple[dict[str, float], dict[str, Any]]:
        """The top-k comparison of engine `name`'s rollouts; run before the arm is scored, its
        trainer forwards also score those rollouts."""
        effective = ctx.effective.get(name)
        semantics = trainer_semantics(effective.logprobs_mode if effective else None)
        values, facts = topk_arm_metrics(
            self.rollouts[name], ctx.trainer, semantics, ctx.rollout_sampling, TOPK_STRIDE, TOPK_CAP
        )
        return values, {**facts, "topk_asked": self.top_k.get(name)}

    @staticmethod
    def _with_topk(result: ArmResult, topk: tuple[dict[str, float], dict[str, Any]]) -> ArmResult:
        """Add a top-k comparison to an arm's metrics (a measured arm's) and facts."""
        values, facts = topk
        if result.applicable and "n_tokens" in result.metrics:
            result.metrics.update(values)
        result.extra.update(facts)
        return result

    def arms(self, ctx: SuiteContext) -> list[ArmResult]:
        recipe = {"recipe": self.recipe.model_dump(mode="json")} if self.recipe else {}
        base_text = "the suite's base engine (every parity knob set): top-k vs trainer"
        reason = self.missing(ctx, "base")
        if reason:
            base = not_applicable(self.name, "base", base_text, reason)
        else:
            topk = self._topk(ctx, "base")
            base = self.vs_trainer(
                ctx,
                "base",
                base_text,
                "base",
                extra=dict(recipe),
                contrast="the suite's base config, the yardstick the recipe's engine is read "
                "against (processed_vs_trainer_processed gates it)",
            )
            self._with_topk(base, topk)
        text = "the recipe's engine, sampled rollouts vs trainer (processed)"
        wanted = self.update_arms()
        if self.failure or RECIPE_ENGINE_NAME not in self.rollouts:
            why = self.failure or "the recipe's engine did not run"
            texts = [("rollout", text), *((arm, UPDATE_TEXTS[arm]) for arm in wanted)]
            return [base, *(failed_arm(self.name, arm, t, why, recipe) for arm, t in texts)]
        assert self.recipe is not None
        claims = recipe_read_back(
            self.recipe.engine_kwargs(), ctx.effective.get(RECIPE_ENGINE_NAME)
        )
        topk = self._topk(ctx, RECIPE_ENGINE_NAME)
        rollout = self.vs_trainer(
            ctx, "rollout", text, RECIPE_ENGINE_NAME, extra=dict(recipe), claims=claims
        )
        arms = [base, self._with_topk(rollout, topk)]
        if AFTER_UPDATE in wanted:
            arms.append(self._after_update(ctx, recipe, claims))
        if FRESH_AFTER_UPDATE in wanted:
            arms.append(self._fresh_after_update(ctx, recipe))
        return arms

    def _after_update(
        self, ctx: SuiteContext, recipe: dict[str, Any], claims: list[str]
    ) -> ArmResult:
        text = UPDATE_TEXTS[AFTER_UPDATE]
        updated = self.updated
        if self.update_failure or updated is None or AFTER_UPDATE not in self.rollouts:
            why = self.update_failure or "the weight update did not run"
            return failed_arm(self.name, AFTER_UPDATE, text, why, recipe)
        rollouts = self.rollouts[AFTER_UPDATE]
        unmet = [*claims, *_unmoved(self.weights_moved, ctx.config.weight_step, "reload")]
        if not self.reset_reported:
            unmet.append("reset_prefix_cache() reported that it did not reset")
        extra = {
            **recipe,
            "cached_prompt_tokens": sum(r.cached_tokens or 0 for r in rollouts),
            "weights_moved": self.weights_moved,
            "weight_step": ctx.config.weight_step,
        }
        return self.vs_trainer(
            ctx,
            AFTER_UPDATE,
            text,
            "recipe",
            trainer=updated,
            rollouts=rollouts,
            extra=extra,
            claims=unmet,
        )

    def _fresh_after_update(self, ctx: SuiteContext, recipe: dict[str, Any]) -> ArmResult:
        text = UPDATE_TEXTS[FRESH_AFTER_UPDATE]
        updated = self.updated
        if self.fresh_failure or updated is None or FRESH_AFTER_UPDATE not in self.rollouts:
            why = self.fresh_failure or "the fresh engine did not run"
            return failed_arm(self.name, FRESH_AFTER_UPDATE, text, why, recipe)
        assert self.recipe is not None
        unmet = [
            *recipe_read_back(self.recipe.engine_kwargs(), ctx.effective.get(FRESH_ENGINE_NAME)),
            *_unmoved(self.fresh_moved, ctx.config.weight_step, "the fresh engine"),
        ]
        extra = {**recipe, "weights_moved": self.fresh_moved, "weight_step": ctx.config.weight_step}
        return self.vs_trainer(
            ctx,
            FRESH_AFTER_UPDATE,
            text,
            FRESH_ENGINE_NAME,
            trainer=updated,
            rollouts=self.rollouts[FRESH_AFTER_UPDATE],
            extra=extra,
            claims=unmet,
        )


UPDATE_TEXTS = {
    AFTER_UPDATE: "the recipe's engine after a weight update and its practice, vs trainer(new)",
    FRESH_AFTER_UPDATE: "a fresh engine with the recipe's arguments, started from the updated "
    "checkpoint, vs trainer(new)",
}
RECIPE_ENGINE_NAME = "recipe"
"""The recipe probe's engine: the harness settings and the recipe's engine arguments."""
FRESH_ENGINE_NAME = "recipe-fresh"
"""The recipe probe's second engine (started only when the recipe needs a fresh engine per
update)."""


def _unmoved(moved: float | None, step: float, what: str) -> list[str]:
    """The claim that the engine's weights did not move by the update step (the sample moved
    less than MIN_MOVE of it); none when it moved or could not be read."""
    if moved is None or moved >= step * MIN_MOVE:
        return []
    return [
        f"{what} had no effect: the engine's weights moved {moved:.3g} of their scale, "
        f"{step:g} expected"
    ]


PROBES: tuple[type[Probe], ...] = (
    LogprobSemantics,
    PrefixCache,
    WeightSync,
    AsyncScheduling,
    BatchInvariance,
    Fp32Head,
    PrefillVsDecode,
    Replay,
    DtypeFloor,
    V0VsV1,
    RecipeRun,
)
if tuple(p.name for p in PROBES) != PROBE_NAMES:
    raise ImportError("the suite's probes and monitor.schema.PROBE_NAMES disagree")


def _summary(arms: list[ArmResult]) -> str:
    """What was measured, without judging it (the monitor judges with its tolerances)."""
    applicable = [a for a in arms if a.applicable]
    if not applicable:
        return f"not applicable: {arms[0].reason}" if arms else "no arms"
    measured = [a for a in applicable if "mean_abs_delta" in a.metrics]
    if not measured:
        return f"{len(applicable)} arm(s) applicable, none compared a token"
    worst = max(measured, key=lambda a: a.metrics["mean_abs_delta"])
    return (
        f"{len(measured)}/{len(applicable)} applicable arm(s) measured; largest mean|δ| "
        f"{worst.metrics['mean_abs_delta']:.3g} in {worst.arm}"
    )
