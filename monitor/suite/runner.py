"""Runs the selected probes inside a release environment: every distinct engine config is
started once, every probe that needs it visits it, and the arms are scored at the end."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from monitor.progress import SCORING_PHASE
from monitor.schema import (
    EngineRecord,
    ModelRef,
    ProbeResult,
    SamplingSpec,
    SuiteConfig,
    SuiteResult,
    Versions,
)
from monitor.suite.engine import (
    Engine,
    EngineConfig,
    EngineRefused,
    KnobMissing,
    ReleaseKnobs,
    recipe_engine_kwargs,
    resolved_key,
    version_tuple,
)
from monitor.suite.models import resolve_model
from monitor.suite.probes import (
    FRESH_ENGINE_NAME,
    PROBES,
    RECIPE_ENGINE_NAME,
    TOPK_WANTED,
    DtypeFloor,
    Probe,
    RecipeRun,
    Replay,
    SuiteContext,
    engine_plan,
)
from monitor.suite.prompts import load_prompts
from monitor.suite.replay import ReplayCorpus, bundled_prompt_ids, replay_corpus
from monitor.suite.trainer import Trainer

Emit = Callable[..., None]
BASE = "base"


class BaseEngineRefused(RuntimeError):
    """The release would not start the base config every probe compares against: the run
    fails (the release could not be measured), never a run of not-applicable arms."""


ENGINE_KNOBS = (
    "dtype",
    "logprobs_mode",
    "enable_prefix_caching",
    "async_scheduling",
    "hf_overrides",
)


def installed_versions(engine_package: str) -> Versions:
    import torch
    import transformers
    import vllm

    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    else:
        device = f"cpu: {_cpu_model()} ({os.cpu_count()} logical cores)"
    try:
        monitor_version = metadata.version("vllm-parity-monitor")
    except metadata.PackageNotFoundError:
        monitor_version = "source"
    return Versions(
        engine_package=engine_package,
        vllm=vllm.__version__,
        torch=torch.__version__,
        transformers=transformers.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        device=device,
        monitor=monitor_version,
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_suite(
    config: SuiteConfig, work_dir: Path, cache_dir: Path, emit: Emit, started_at: datetime
) -> SuiteResult:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    package = config.engine.package
    versions = installed_versions(package)
    emit("stage", message=f"vLLM {versions.vllm}, torch {versions.torch} on {versions.device}")

    emit("stage", message=f"model {config.model}")
    info = resolve_model(config.model, cache_dir)
    model = ModelRef(
        name=info.name,
        source=info.source,
        fingerprint=info.fingerprint,
        architecture=info.architecture,
        n_parameters=info.n_parameters,
    )
    trainer = Trainer(Path(info.path), config.trainer_dtype)
    harness_trainer = (
        Trainer(Path(info.path), "float64") if DtypeFloor.name in config.probes else None
    )
    tokenizer = trainer.tokenizer()
    prompts = load_prompts(Path(config.prompts) if config.prompts != "bundled" else None)
    tokenized = [(i, list(tokenizer.encode(p.text))) for i, p in enumerate(prompts)]
    longest = max(len(ids) for _, ids in tokenized)
    replay = None
    if Replay.name in config.probes:
        replay = _replay(info.name, info.fingerprint, trainer, tokenizer, cache_dir, emit)
        longest = max(longest, replay.longest - config.max_tokens)
    timings["setup"] = time.perf_counter() - clock

    seed = config.seed
    knobs = ReleaseKnobs.read()
    ctx = SuiteContext(
        config=config,
        knobs=knobs,
        vllm_version=version_tuple(versions.vllm),
        prompts=tokenized,
        group_indices={i for i, p in enumerate(prompts) if p.group},
        rollout_sampling=SamplingSpec(
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            max_tokens=config.max_tokens,
            seed=seed,
        ),
        plain_sampling=SamplingSpec(
            temperature=1.0, top_p=1.0, top_k=-1, max_tokens=config.max_tokens, seed=seed
        ),
        greedy_sampling=SamplingSpec(
            temperature=0.0, top_p=1.0, top_k=-1, max_tokens=config.max_tokens, seed=seed
        ),
        trainer=trainer,
        harness_trainer=harness_trainer,
        work_dir=work_dir,
        progress=lambda message, **counts: emit("step", message=message, **counts),
        plan=engine_plan(config.engine_dtype, knobs),
        replay=replay,
    )
    probes = [cls() for cls in PROBES if cls.name in config.probes]
    base_kwargs: dict[str, Any] = {
        "model": info.path,
        "tokenizer": info.path,
        "seed": seed,
        "enforce_eager": True,
        "max_model_len": min(_round_up(longest + config.max_tokens + 8, 64), 4096),
    }
    default_max = knobs.fields.get("max_logprobs")
    if isinstance(default_max, int) and 0 <= default_max < TOPK_WANTED:
        base_kwargs["max_logprobs"] = TOPK_WANTED
    recipe = next((p for p in probes if isinstance(p, RecipeRun)), None)
    after = [SCORING_PHASE, *((RECIPE_ENGINE_NAME, FRESH_ENGINE_NAME) if recipe else ())]
    engines = _visit_engines(
        ctx, probes, base_kwargs, emit, extra_engines=int(bool(recipe)), after=after
    )

    clock = time.perf_counter()
    emit("stage", message="scoring arms against the trainer", phase=SCORING_PHASE)
    results = [_scored(ctx, probe) for probe in probes if probe is not recipe]
    timings["scoring"] = time.perf_counter() - clock
    if recipe is not None:
        clock = time.perf_counter()
        recipe.derive(results, versions)
        engines += _recipe_engines(ctx, recipe, base_kwargs, emit, len(engines))
        results.append(_scored(ctx, recipe))
        timings["recipe"] = time.perf_counter() - clock
    return SuiteResult(
        status="succeeded",
        started_at=started_at,
        finished_at=datetime.now(UTC),
        config=config,
        versions=versions,
        model=model,
        probes=results,
        engines=engines,
        engine_starts=sum(e.started for e in engines),
        trainer_forwards=ctx.scored(),
        timings_s=timings,
    )


def _scored(ctx: SuiteContext, probe: Probe) -> ProbeResult:
    arms = probe.arms(ctx)
    ctx.progress(f"scored {probe.name}", scored=ctx.scored())
    return ProbeResult(
        name=probe.name, description=probe.description, finding=probe.finding(arms), arms=arms
    )


def _recipe_engines(
    ctx: SuiteContext, probe: RecipeRun, base_kwargs: dict[str, Any], emit: Emit, done: int
) -> list[EngineRecord]:
    """Start the recipe's engine (harness settings + the recipe's engine arguments over the
    release's defaults), read it back and let the recipe probe run on it; then, when the
    recipe's answer to weight updates is a fresh engine, one started from the updated
    checkpoint. A recipe the release cannot start is recorded and fails the probe's arms,
    never the run."""
    fresh = probe.recipe is not None and probe.recipe.fresh_engine()
    total = done + 1 + int(fresh)
    emit(
        "engine",
        message=f"engine {done + 1}/{total}: recipe",
        done=done,
        total=total,
        phase=RECIPE_ENGINE_NAME,
    )
    kwargs = _recipe_kwargs(ctx, probe, base_kwargs)
    if kwargs is None:
        records = [EngineRecord(names=[RECIPE_ENGINE_NAME], started=False, reason=probe.failure)]
    else:
        visit = partial(probe.visit, ctx, RECIPE_ENGINE_NAME)
        records = [
            _run_recipe_engine(ctx, RECIPE_ENGINE_NAME, "the recipe's engine", kwargs, visit)
        ]
        probe.failure = probe.failure or records[0].reason
    if kwargs is not None and fresh and not probe.failure:
        message = f"engine {total}/{total}: {FRESH_ENGINE_NAME}"
        emit("engine", message=message, done=total - 1, total=total, phase=FRESH_ENGINE_NAME)
        probe.updated = probe.updated_trainer(ctx)
        started_fresh = {**kwargs, "model": str(probe.updated.path)}
        visit = partial(probe.visit_fresh, ctx)
        records.append(
            _run_recipe_engine(ctx, FRESH_ENGINE_NAME, "the fresh engine", started_fresh, visit)
        )
        probe.fresh_failure = records[-1].reason
    emit("engine", message="engines done", done=total, total=total)
    return records


def _recipe_kwargs(
    ctx: SuiteContext, probe: RecipeRun, base_kwargs: dict[str, Any]
) -> dict[str, Any] | None:
    """The recipe engine's `vllm.LLM` arguments; None (and the probe's failure set) when there
    is no recipe or the release lacks one of its arguments."""
    if probe.recipe is None:
        probe.failure = probe.failure or "no recipe"
        return None
    try:
        return recipe_engine_kwargs(
            ctx.config.engine_dtype, probe.recipe.engine_kwargs(), ctx.knobs, base_kwargs
        )
    except KnobMissing as exc:
        probe.failure = f"the recipe's engine did not start: release lacks {exc}"
        return None


def _run_recipe_engine(
    ctx: SuiteContext,
    name: str,
    what: str,
    kwargs: dict[str, Any],
    visit: Callable[[Engine], None],
) -> EngineRecord:
    """Start one of the recipe probe's engines with `kwargs`, record what it runs with, let
    `visit` use it; a refusal is recorded with its reason (never raised)."""
    clock = time.perf_counter()
    try:
        engine = Engine.launch(kwargs, EngineConfig(dtype=ctx.config.engine_dtype))
    except EngineRefused as exc:
        reason = f"{what} did not start: engine refused {exc}"
        return EngineRecord(names=[name], started=False, reason=reason)
    started = time.perf_counter() - clock
    requested = {k: v for k, v in kwargs.items() if k in ENGINE_KNOBS}
    with engine:
        ctx.effective[name] = engine.effective_config()
        ctx.requested[name] = requested
        ctx.progress(f"recipe on {name}")
        visit(engine)
    return EngineRecord(
        names=[name],
        requested=requested,
        started=True,
        start_seconds=started,
        work_seconds=time.perf_counter() - clock - started,
        operations=engine.operations,
    )


def _replay(
    model: str, fingerprint: str, trainer: Trainer, tokenizer: Any, cache_dir: Path, emit: Emit
) -> ReplayCorpus:
    """The model's replay corpus (made from the bundled prompts if the model has none yet)."""
    bundled = bundled_prompt_ids(tokenizer)
    corpus, origin = replay_corpus(model, fingerprint, bundled, trainer, cache_dir)
    emit("stage", message=f"replay corpus {corpus.digest} ({origin})")
    return corpus


def _visit_engines(
    ctx: SuiteContext,
    probes: list[Probe],
    base_kwargs: dict[str, Any],
    emit: Emit,
    extra_engines: int = 0,
    after: Sequence[str] = (),
) -> list[EngineRecord]:
    """Start each distinct engine config once, in plan order, and let the probes visit it;
    `extra_engines` started later (the recipe's) count in the progress total. The plan event
    names each engine's phase, then the phases `after` them (for the estimate)."""
    needed: dict[str, list[Probe]] = {}
    for probe in probes:
        reason = probe.not_applicable(ctx)
        for name in probe.engines:
            if reason:
                probe.skipped[name] = reason
            else:
                needed.setdefault(name, []).append(probe)
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name in ctx.plan:
        if name in needed:
            groups.setdefault(resolved_key(ctx.plan[name], ctx.knobs), []).append(name)
    records = []
    total = len(groups) + extra_engines
    emit("plan", phases=[*("+".join(names) for names in groups.values()), *after])
    for index, names in enumerate(groups.values(), start=1):
        label = "+".join(names)
        emit(
            "engine",
            message=f"engine {index}/{total}: {label}",
            done=index - 1,
            total=total,
            phase=label,
        )
        clock = time.perf_counter()
        try:
            engine = Engine.start(ctx.plan[names[0]], ctx.knobs, base_kwargs)
        except (KnobMissing, EngineRefused) as exc:
            why = "release lacks the knob" if isinstance(exc, KnobMissing) else "engine refused"
            reason = f"{why} {exc}"
            if BASE in names:
                raise BaseEngineRefused(
                    f"the base engine ({label}) did not start: {reason}"
                ) from exc
            ctx.unavailable.update(dict.fromkeys(names, reason))
            records.append(EngineRecord(names=names, started=False, reason=reason))
            continue
        started = time.perf_counter() - clock
        requested = {k: v for k, v in engine.kwargs.items() if k in ENGINE_KNOBS}
        with engine:
            effective = engine.effective_config()
            for name in names:
                ctx.effective[name] = effective
                ctx.requested[name] = requested
            visits = [(p, n) for n in names for p in needed[n]]
            for probe, name in sorted(visits, key=lambda visit: visit[0].mutates_engine):
                emit("step", message=f"{probe.name} on {name}")
                probe.visit(ctx, name, engine)
        records.append(
            EngineRecord(
                names=names,
                requested=requested,
                started=True,
                start_seconds=started,
                work_seconds=time.perf_counter() - clock - started,
                operations=engine.operations,
            )
        )
    if not extra_engines:
        emit("engine", message="engines done", done=len(groups), total=len(groups))
    return records


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
