"""The scheduler's jobs: discover releases, dispatch queued runs (the dashboard's requests on a
short interval of their own), collect runs whose worker is gone, queue the nightly repeat run of
the newest release. Each is a module-level function (APScheduler's job store keeps a reference
to it) acting on the process's `Service`, and none ever raises: a failure is logged and the next
interval tries again."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version
from sqlalchemy.exc import SQLAlchemyError

from jobs.discovery import Discovered, discover, scheduled_options
from jobs.worker import spawn
from monitor.config import Settings
from monitor.engines import EngineSpec
from monitor.incidents.overdue import flag_overdue
from monitor.pipeline import Held, end_without_result, finish
from monitor.requests import RunRequest, queue_request
from monitor.runners import make_runner
from monitor.runners.base import RunnerUnavailable, attempt_dir
from monitor.schema import SchemaError, load_result
from monitor.store import IngestError, Store, StoreError
from monitor.store.leader import lock_dispatch
from monitor.store.models import NIGHTLY
from monitor.store.queue import (
    ClaimedRun,
    LeaseLost,
    claim_next,
    expired_runs,
    has_pending,
    newest_release,
    running_count,
    take_over,
)

logger = logging.getLogger("jobs")
STOP_GRACE_S = 30.0
Spawn = Callable[[int, str, Settings, Any], subprocess.Popen[bytes]]


def new_owner() -> str:
    return uuid.uuid4().hex


@dataclass
class Service:
    """What the jobs act on: the store, the settings and the worker processes started here."""

    store: Store
    settings: Settings
    spawn: Spawn = spawn
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    dispatching: threading.Lock = field(default_factory=threading.Lock)

    def discover(self) -> list[Discovered]:
        return discover(self.store, self.settings)

    def dispatch(self, *, requested_only: bool = False) -> list[int]:
        """Claim due queued runs while fewer than `max_parallel_runs` run, and start a worker
        for each; returns the run ids started. Counting and claiming hold the database's
        dispatch lock, so the limit holds across threads and processes on PostgreSQL too."""
        with self.dispatching:
            return self._dispatch(requested_only)

    def _dispatch(self, requested_only: bool) -> list[int]:
        started: list[int] = []
        while True:
            owner = new_owner()
            with self.store.writing() as session:
                lock_dispatch(session)
                if running_count(session) >= self.settings.max_parallel_runs:
                    return started
                claimed = claim_next(
                    session, owner, self.settings.lease_s, requested_only=requested_only
                )
            if claimed is None:
                return started
            self._start_worker(claimed, owner)
            started.append(claimed.run_id)

    def _start_worker(self, run: ClaimedRun, owner: str) -> None:
        log = attempt_dir(self.settings.runs_dir, run.run_id, run.attempt) / "worker.log"
        try:
            self.workers[run.run_id] = self.spawn(run.run_id, owner, self.settings, log)
        except OSError as exc:
            reason = f"cannot start a worker: {exc.strerror or exc}"
            end_without_result(
                self.store, self.settings, Held(run.run_id, owner), reason, retry=True
            )
            logger.error("run %d: %s", run.run_id, reason)
            return
        logger.info(
            "run %d (%s, attempt %d, %s) started in worker %d; log %s",
            run.run_id,
            run.spec,
            run.attempt,
            run.runner,
            self.workers[run.run_id].pid,
            log,
        )

    def reap(self) -> None:
        for run_id, process in list(self.workers.items()):
            code = process.poll()
            if code is not None:
                del self.workers[run_id]
                log = logger.info if code == 0 else logger.warning
                log("worker of run %d exited with code %d", run_id, code)

    def collect(self) -> list[int]:
        """Runs whose lease expired (their worker died or hangs): stop what is left of the job,
        store the result it left behind, or queue the run again (backoff) or fail it once its
        attempts are spent. Returns the run ids handled."""
        self.reap()
        with self.store.reading() as session:
            expired = expired_runs(session)
        handled = []
        for run in expired:
            owner = new_owner()
            with self.store.writing() as session:
                if not take_over(session, run.run_id, run.owner, owner, self.settings.lease_s):
                    continue
            self._recover(run, owner)
            handled.append(run.run_id)
        return handled

    def _recover(self, run: ClaimedRun, owner: str) -> None:
        self._kill_worker(run.run_id)
        run_dir = attempt_dir(self.settings.runs_dir, run.run_id, run.attempt)
        if run.runner_job_id:
            with contextlib.suppress(RunnerUnavailable):
                if make_runner(run.runner, self.settings).stop(run.runner_job_id, run_dir):
                    logger.warning(
                        "run %d: stopped job %s left by its worker", run.run_id, run.runner_job_id
                    )
        held = Held(run.run_id, owner)
        result_file = run_dir / "result.json"
        if result_file.is_file():
            try:
                finish(
                    self.store,
                    self.settings,
                    load_result(result_file),
                    runner=run.runner,
                    held=held,
                )
            except (SchemaError, IngestError, LeaseLost) as exc:
                logger.error(
                    "run %d: result left in %s not stored: %s", run.run_id, result_file, exc
                )
            else:
                logger.info(
                    "run %d: stored the result its worker left in %s", run.run_id, result_file
                )
                return
        reason = "worker lost: its lease expired without a result"
        ended = end_without_result(self.store, self.settings, held, reason, retry=True)
        logger.warning(
            "run %d attempt %d: %s; run is now %s", run.run_id, run.attempt, reason, ended.status
        )

    def _kill_worker(self, run_id: int) -> None:
        process = self.workers.pop(run_id, None)
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def nightly(self) -> dict[str, int]:
        """Queue a repeat run of each package's newest release (the noise floor's data), unless
        the last one has not run yet."""
        queued = {}
        options = scheduled_options(self.settings)
        for package in self.settings.discovery_packages:
            with self.store.writing() as session:
                version = newest_release(
                    session, package, prereleases=self.settings.discovery_prereleases
                )
                if version is None:
                    logger.info("nightly: no %s release known yet", package)
                    continue
                spec = EngineSpec(package, Version(version))
                if has_pending(session, spec, NIGHTLY):
                    logger.info("nightly: %s still has a run waiting", spec)
                    continue
                request = RunRequest(spec, options, self.settings.runner, None, NIGHTLY)
                run_id = queue_request(session, request, self.settings)
            queued[package] = run_id
            logger.info("nightly: queued run %d of %s", run_id, spec)
        return queued

    def overdue(self) -> list[int]:
        """Alert once on each release discovery queued that nobody could measure in time."""
        touched = flag_overdue(self.store, self.settings)
        if touched:
            logger.warning("unmeasured releases past the wait: incident(s) %s", touched)
        return touched

    def stop_workers(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask every worker started here to stop (its run goes back to the queue); kill the
        ones that do not within `grace_s`."""
        live = {run_id: p for run_id, p in self.workers.items() if p.poll() is None}
        for process in live.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for run_id, process in live.items():
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("worker of run %d did not stop; killing it", run_id)
                self._kill_worker(run_id)
        self.workers.clear()


_service: Service | None = None


def install(service: Service | None) -> None:
    """Make `service` the one the jobs act on (None: none)."""
    global _service
    _service = service


def _guarded(name: str) -> Callable[[Callable[[Service], Any]], Callable[[], None]]:
    def wrap(body: Callable[[Service], Any]) -> Callable[[], None]:
        @functools.wraps(body)
        def job() -> None:
            if _service is None:
                logger.warning("%s: no scheduler service in this process", name)
                return
            try:
                body(_service)
            except (StoreError, SQLAlchemyError) as exc:
                text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
                logger.warning(
                    "%s: database busy or unreachable, next time: %s",
                    name,
                    text[0] if text else exc,
                )
            except Exception:
                logger.exception("%s failed; it runs again at its next time", name)

        return job

    return wrap


@_guarded("discover")
def discover_job(service: Service) -> None:
    service.discover()


@_guarded("dispatch")
def dispatch_job(service: Service) -> None:
    service.dispatch()


@_guarded("requests")
def requests_job(service: Service) -> None:
    service.dispatch(requested_only=True)


@_guarded("collect")
def collect_job(service: Service) -> None:
    service.collect()


@_guarded("nightly")
def nightly_job(service: Service) -> None:
    service.nightly()


@_guarded("overdue")
def overdue_job(service: Service) -> None:
    service.overdue()
