"""Which stored values are comparable. A metric value belongs to one series: values are compared,
drawn as one line or fed to detection only within a series. What identifies a series is derived
from the `SuiteOptions` roles (monitor.schema) and the sampling an arm used. Pure, no I/O."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from monitor.schema import ArmResult, SamplingSpec, SuiteConfig, SuiteOptions, option_role

SERIES_OPTIONS: tuple[str, ...] = tuple(
    name for name in SuiteOptions.model_fields if option_role(name) == "series"
)
"""Options whose value is part of every series' identity."""
SAMPLING_OPTIONS: tuple[str, ...] = tuple(
    name for name in SuiteOptions.model_fields if option_role(name) == "sampling"
)
"""Options that set the rollout sampling (an arm's own sampling may differ)."""
SAMPLING_FIELDS: tuple[str, ...] = tuple(SamplingSpec.model_fields)
NOT_REQUESTED = frozenset({"engine", "prompts", "kv_cache_gib"})
"""Config fields that do not change what a run was asked to measure: the release, the prompt
file's path (its content's hash stays) and the KV cache size (a resource)."""


@dataclass(frozen=True)
class SeriesKey:
    """probe + arm + metric, the model's weights, the device and the prompt set, the arm's own
    sampling, and every option whose role is "series" (SERIES_OPTIONS): a change in any of them
    changes what the number measures."""

    probe: str
    arm: str
    metric: str
    model: str
    device: str
    prompts_sha256: str
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    ignore_eos: bool
    engine_dtype: str
    trainer_dtype: str
    weight_step: float

    def components(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @cached_property
    def hash(self) -> str:
        return digest(self.components())[:32]

    @property
    def label(self) -> str:
        return series_label(self.probe, self.arm, self.metric)


def series_label(probe: str, arm: str, metric: str) -> str:
    """How people and detection name a series within one run configuration."""
    return f"{probe}/{arm}/{metric}"


def config_sampling(config: SuiteConfig) -> SamplingSpec:
    """The sampling a run was asked for; the key of an arm that reports no sampling of its own."""
    return SamplingSpec(**{name: getattr(config, name) for name in SAMPLING_OPTIONS})


def run_identity(
    config: SuiteConfig, model: str, device: str, sampling: SamplingSpec | None = None
) -> dict[str, Any]:
    """What makes runs of different releases comparable: the model's fingerprint, the device,
    the prompt set, the sampling (an arm's own, else the config's) and the series options."""
    used = sampling or config_sampling(config)
    return {
        "model": model,
        "device": device,
        "prompts_sha256": config.prompts_sha256,
        **{name: getattr(used, name) for name in SAMPLING_FIELDS},
        **{name: getattr(config, name) for name in SERIES_OPTIONS},
    }


def series_config(config: SuiteConfig, model: str, device: str) -> str:
    """Hash of a run's identity: one incident per release and series configuration."""
    return digest(run_identity(config, model, device))


def series_key(
    config: SuiteConfig, model: str, device: str, arm: ArmResult, metric: str
) -> SeriesKey:
    """The series of one metric of one arm of a run."""
    identity = run_identity(config, model, device, arm.sampling)
    return SeriesKey(probe=arm.probe, arm=arm.arm, metric=metric, **identity)


def config_hash(config: SuiteConfig) -> str:
    """Hash of what the suite was asked to do, minus what does not change the measurement
    (NOT_REQUESTED): runs of different releases with the same hash are comparable."""
    return digest(config.model_dump(mode="json", exclude=set(NOT_REQUESTED)))


def digest(values: dict[str, Any]) -> str:
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()
