"""The JSON contract between the parity suite and the monitor (versioned pydantic models).

The suite writes one `SuiteResult`; the monitor validates it on ingest. Bump `SCHEMA_VERSION`'s
major part for any change an older reader cannot understand.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SCHEMA_VERSION = "1.1"
SUPPORTED_MAJOR = 1

Verdict = Literal["pass", "fail", "n/a"]
RunStatus = Literal["succeeded", "failed"]
ArrayDType = Literal["int32", "float64"]


class SchemaError(ValueError):
    """A result file that cannot be read as this schema; the message is one line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class PackedArray(_Model):
    """A 1-D numpy array stored as little-endian base64, so 20k-token traces stay small."""

    dtype: ArrayDType
    n: Annotated[int, Field(ge=0)]
    data: str

    @classmethod
    def pack(cls, values: Any, dtype: ArrayDType) -> PackedArray:
        array = np.ascontiguousarray(np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<")))
        if array.ndim != 1:
            raise ValueError(f"packed arrays are 1-D, got shape {array.shape}")
        return cls(dtype=dtype, n=int(array.size), data=base64.b64encode(array.data).decode())

    def unpack(self) -> np.ndarray:
        raw = base64.b64decode(self.data.encode(), validate=True)
        return np.frombuffer(raw, dtype=np.dtype(self.dtype).newbyteorder("<")).astype(self.dtype)

    @model_validator(mode="after")
    def _length_matches(self) -> PackedArray:
        try:
            raw = base64.b64decode(self.data.encode(), validate=True)
        except ValueError as exc:
            raise ValueError(f"array data is not valid base64 ({exc})") from exc
        itemsize = np.dtype(self.dtype).itemsize
        if len(raw) != self.n * itemsize:
            raise ValueError(
                f"array is truncated: {len(raw)} bytes for n={self.n} {self.dtype} values"
            )
        return self


class TokenTrace(_Model):
    """Per-token arrays of one arm, for drill-down. In vLLM-vs-vLLM arms the reference run plays
    the trainer's part."""

    prompt_index: PackedArray
    position: PackedArray
    token_id: PackedArray
    vllm_logprob: PackedArray
    reference_logprob: PackedArray

    @model_validator(mode="after")
    def _same_length(self) -> TokenTrace:
        lengths = {name: getattr(self, name).n for name in type(self).model_fields}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"token arrays differ in length: {lengths}")
        return self

    @property
    def n_tokens(self) -> int:
        return self.prompt_index.n


class Versions(_Model):
    """Exact versions installed in the environment the suite ran in."""

    engine_package: str
    vllm: str
    torch: str
    transformers: str
    python: str
    platform: str
    device: str
    monitor: str


class ModelRef(_Model):
    name: str
    source: Literal["tiny", "smollm2", "path"]
    fingerprint: str
    architecture: str
    n_parameters: int


class SamplingSpec(_Model):
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    ignore_eos: bool = True


class EffectiveConfig(_Model):
    """Engine settings as read back from the running engine: what took effect, not what was
    asked for. `None` means the release does not expose that setting."""

    engine_version: str
    model_runner: str | None
    logprobs_mode: str | None
    prefix_caching: bool | None
    async_scheduling: bool | None
    dtype: str
    head_dtype: str | None
    lm_head_weight_dtype: str | None
    attention_backend: str | None
    enforce_eager: bool | None
    compilation_mode: str | None
    batch_invariant: bool
    block_size: int | None
    max_model_len: int | None
    seed: int | None


class Stratum(_Model):
    bucket: str
    lo: float
    hi: float
    n_tokens: int
    fraction: float
    mean_abs_delta: float
    k1: float
    k3: float
    token_mult_prob_error: float
    clip_fraction: float


class EngineRecord(_Model):
    """One engine the suite started (or could not): the configs it served and what it cost."""

    names: list[str]
    requested: dict[str, Any] = Field(default_factory=dict)
    started: bool
    reason: str | None = None
    start_seconds: float | None = None
    work_seconds: float | None = None
    operations: list[dict[str, Any]] = Field(default_factory=list)


class ArmResult(_Model):
    """One engine-config arm of a probe, compared against its reference."""

    probe: str
    arm: str
    description: str
    applicable: bool = True
    reason: str | None = None
    engine_config: dict[str, Any] = Field(default_factory=dict)
    effective_config: EffectiveConfig | None = None
    sampling: SamplingSpec | None = None
    reference: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)
    by_probability: list[Stratum] = Field(default_factory=list)
    by_position: list[Stratum] = Field(default_factory=list)
    extra: dict[str, Any] = Field(default_factory=dict)
    tokens: TokenTrace | None = None
    gated: bool = True
    """False for a contrast arm: its two sides use different logprob semantics on purpose, so
    its numbers size that mismatch instead of claiming parity; no verdict (n/a), no gate."""
    verdict: Verdict = "n/a"
    verdict_reasons: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ArmResult:
        if not self.applicable and not self.reason:
            raise ValueError(f"arm {self.probe}/{self.arm} is not applicable but gives no reason")
        if not self.gated and self.verdict != "n/a":
            raise ValueError(f"contrast arm {self.probe}/{self.arm} cannot have a verdict")
        return self


class ProbeResult(_Model):
    name: str
    description: str
    finding: str = ""
    arms: list[ArmResult] = Field(default_factory=list)


class SuiteConfig(_Model):
    """What the suite was asked to do; hashed to group comparable runs."""

    engine: str
    model: str
    prompts: str
    prompts_sha256: str
    n_prompts: int
    probes: list[str]
    engine_dtype: str
    trainer_dtype: str
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    weight_step: float
    kv_cache_gib: float


class SuiteResult(_Model):
    """Everything one suite run produced; the single file the monitor ingests."""

    schema_version: str = SCHEMA_VERSION
    status: RunStatus
    error: str | None = None
    error_tail: str | None = None
    started_at: datetime
    finished_at: datetime
    config: SuiteConfig
    versions: Versions | None = None
    model: ModelRef | None = None
    probes: list[ProbeResult] = Field(default_factory=list)
    engines: list[EngineRecord] = Field(default_factory=list)
    engine_starts: int = 0
    trainer_forwards: int = 0
    timings_s: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _error_when_failed(self) -> SuiteResult:
        if self.status == "failed" and not self.error:
            raise ValueError("a failed result must carry its error")
        return self

    def arms(self) -> list[ArmResult]:
        return [arm for probe in self.probes for arm in probe.arms]


def check_version(version: str) -> None:
    """Reject results written by an incompatible (other major) schema version."""
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) != SUPPORTED_MAJOR:
        raise SchemaError(
            f"result has schema version {version!r}; this monitor reads {SUPPORTED_MAJOR}.x"
        )


def parse_result(text: str, source: str = "result") -> SuiteResult:
    """Validate a result document, raising SchemaError with one line naming the problem."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(document, dict):
        raise SchemaError(f"{source}: expected a JSON object, got {type(document).__name__}")
    check_version(str(document.get("schema_version", "")))
    try:
        return SuiteResult.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise SchemaError(
            f"{source}: {where}: {first['msg']} ({exc.error_count()} problem(s))"
        ) from exc


def load_result(path: Path) -> SuiteResult:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SchemaError(f"cannot read result {path}: {exc.strerror}") from exc
    return parse_result(text, source=str(path))


def write_result(result: SuiteResult, path: Path) -> None:
    """Write atomically: a reader never sees a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(result.model_dump_json(indent=1))
    partial.replace(path)


def json_schema() -> dict[str, Any]:
    return SuiteResult.model_json_schema()
