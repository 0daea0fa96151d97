"""Which stored values are comparable. A metric value belongs to one series: values are compared,
drawn as one line or fed to detection only within a series. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from monitor.schema import ArmResult, SamplingSpec, SuiteConfig, SuiteResult

CONFIG_HASH_IGNORES = frozenset({"engine", "prompts"})


@dataclass(frozen=True)
class SeriesKey:
    """probe + arm + metric + model + device + sampling params + trainer dtype, plus the engine
    dtype and the prompt set: a change in any of them changes what the number measures."""

    probe: str
    arm: str
    metric: str
    model: str
    device: str
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    ignore_eos: bool
    trainer_dtype: str
    engine_dtype: str
    prompts_sha256: str

    def components(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def hash(self) -> str:
        return _digest(self.components())[:32]

    @property
    def label(self) -> str:
        return f"{self.probe}/{self.arm}/{self.metric}"


def series_key(
    probe: str,
    arm: str,
    metric: str,
    *,
    model: str,
    device: str,
    sampling: SamplingSpec,
    trainer_dtype: str,
    engine_dtype: str,
    prompts_sha256: str,
) -> SeriesKey:
    return SeriesKey(
        probe=probe,
        arm=arm,
        metric=metric,
        model=model,
        device=device,
        temperature=float(sampling.temperature),
        top_p=float(sampling.top_p),
        top_k=int(sampling.top_k),
        max_tokens=int(sampling.max_tokens),
        seed=int(sampling.seed),
        ignore_eos=bool(sampling.ignore_eos),
        trainer_dtype=trainer_dtype,
        engine_dtype=engine_dtype,
        prompts_sha256=prompts_sha256,
    )


def result_sampling(config: SuiteConfig) -> SamplingSpec:
    """The sampling a run was asked for; the key of an arm that reports no sampling of its own."""
    return SamplingSpec(
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        max_tokens=config.max_tokens,
        seed=config.seed,
    )


def arm_series_key(result: SuiteResult, arm: ArmResult, metric: str) -> SeriesKey:
    """The series of one metric of one arm of a result; needs the result's model and versions."""
    if result.model is None or result.versions is None:
        raise ValueError("a result without model and versions has no series")
    return series_key(
        arm.probe,
        arm.arm,
        metric,
        model=result.model.fingerprint,
        device=result.versions.device,
        sampling=arm.sampling or result_sampling(result.config),
        trainer_dtype=result.config.trainer_dtype,
        engine_dtype=result.config.engine_dtype,
        prompts_sha256=result.config.prompts_sha256,
    )


def config_hash(config: SuiteConfig) -> str:
    """Hash of what the suite was asked to do, minus the release and the prompt file's path:
    runs of different releases with the same hash are comparable."""
    fields = config.model_dump(mode="json", exclude=set(CONFIG_HASH_IGNORES))
    return _digest(fields)


def _digest(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
