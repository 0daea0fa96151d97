import base64
import json
from datetime import UTC, datetime

import numpy as np
import pytest

from monitor.schema import (
    SCHEMA_VERSION,
    ArmResult,
    PackedArray,
    SchemaError,
    SuiteResult,
    TokenTrace,
    json_schema,
    load_result,
    parse_result,
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
        (lambda arm: arm["metrics"].update(k3=float("nan")), "non-finite metrics: k3"),
        (lambda arm: arm["metrics"].update(k1=float("-inf")), "non-finite metrics: k1"),
        (lambda arm: arm.update(tokens=None), "compared 64 tokens but keeps no token trace"),
        (
            lambda arm: arm["metrics"].update(n_tokens=65.0),
            "compared 65 tokens but keeps 64 in its trace",
        ),
    ],
)
def test_a_gated_arm_without_the_numbers_it_claims_is_refused_in_one_line(
    change, message: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SchemaError, match=message) as info:
        parse_result(_document(change), "upload.json")
    assert "\n" not in str(info.value) and "logprob_semantics/default" in str(info.value)


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
