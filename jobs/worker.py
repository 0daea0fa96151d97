"""One attempt of one claimed run, in its own process (`python -m jobs.worker`): renew the run's
lease and take the run through the pipeline (monitor.pipeline: environment, the run's runner,
then store and judge). The scheduler starts one per claimed run in a session of its own, so a
scheduler restart leaves it running; SIGTERM stops the job and puts the run back in the queue.
Settings arrive as JSON on stdin (they may hold the database password)."""

from __future__ import annotations

import _thread
import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TypeVar

from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError

from jobs.logs import configure as configure_logging
from jobs.progress import ProgressWriter, expected_duration
from monitor.config import Settings
from monitor.envs import EnvBuildError
from monitor.errors import one_line
from monitor.pipeline import (
    TRANSIENT,
    Held,
    end_without_result,
    execute,
    finish,
    not_installable,
    write_patiently,
)
from monitor.progress import ProgressFeed, RunProgress
from monitor.runners.base import RunnerLost, RunnerUnavailable, attempt_dir
from monitor.schema import SuiteResult
from monitor.store import IngestError, Store, StoreError, open_store
from monitor.store.queue import (
    ClaimedRun,
    LeaseLost,
    held_run,
    record_job_id,
    release_claim,
    renew_lease,
)

logger = logging.getLogger("jobs.worker")
STORE_PATIENCE_S = 600.0
"""A worker waits this long for a locked or unreachable database before leaving its result."""
T = TypeVar("T")


def settings_json(settings: Settings) -> str:
    """Every setting, secrets in clear, for the worker's stdin."""
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings
    }
    return json.dumps(values, default=str)


def spawn(run_id: int, owner: str, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """Start the worker of a claimed run in a session of its own, its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "jobs.worker", "--run-id", str(run_id), "--owner", owner]
    with log.open("ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    assert process.stdin is not None
    process.stdin.write(settings_json(settings).encode())
    process.stdin.close()
    return process


class Lease(threading.Thread):
    """Renews the run's lease every third of its length; when the run is no longer this
    worker's (taken over after the lease expired), interrupts the main thread to stop the job."""

    def __init__(self, store: Store, run_id: int, owner: str, lease_s: float) -> None:
        super().__init__(name=f"lease-{run_id}", daemon=True)
        self.store, self.run_id, self.owner, self.lease_s = store, run_id, owner, lease_s
        self.stopped = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while True:
            held = True
            try:
                with self.store.writing() as session:
                    held = renew_lease(session, self.run_id, self.owner, self.lease_s)
            except (SQLAlchemyError, StoreError) as exc:
                logger.warning(
                    "cannot renew the lease of run %d yet: %s", self.run_id, one_line(exc)
                )
            if not held and not self.stopped.is_set():
                logger.error("run %d is no longer this worker's; stopping its job", self.run_id)
                self.lost.set()
                _thread.interrupt_main()
                return
            if self.stopped.wait(max(0.5, self.lease_s / 3)):
                return

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=self.lease_s)


class Worker:
    def __init__(
        self, store: Store, settings: Settings, run: ClaimedRun, owner: str, lease: Lease
    ) -> None:
        self.store, self.settings, self.run, self.owner = store, settings, run, owner
        self.lease = lease
        self.held = Held(run.run_id, owner)
        self.dir = attempt_dir(settings.runs_dir, run.run_id, run.attempt)

    def execute(self) -> int:
        run = self.run
        logger.info("run %d attempt %d: %s on %s", run.run_id, run.attempt, run.spec, run.runner)
        progress = RunProgress(
            stage="environment", expected_s=expected_duration(self.store, run.run_id)
        )
        writer = ProgressWriter(self.store, run.run_id, self.owner)
        writer.start()
        writer.offer(progress)
        feed = ProgressFeed(
            progress, writer.offer, lambda line: logger.info("run %d: %s", run.run_id, line)
        )

        def environment(message: str) -> None:
            logger.info("%s", message)
            feed({"event": "stage", "message": message})

        try:
            result = execute(
                run.config,
                self.settings,
                runner=run.runner,
                run_dir=self.dir,
                name=f"run-{run.run_id}-attempt-{run.attempt}",
                on_job=self._record_job,
                on_event=feed,
                log=environment,
            )
        except EnvBuildError as exc:
            return self._not_installable(one_line(exc))
        except (RunnerUnavailable, RunnerLost) as exc:
            return self._retry(one_line(exc))
        finally:
            writer.stop()
        return self.store_result(result, self.dir / "result.json")

    def _record_job(self, job_id: str) -> None:
        logger.info("run %d job %s", self.run.run_id, job_id)
        try:
            write_patiently(
                self.store, STORE_PATIENCE_S, record_job_id, self.run.run_id, self.owner, job_id
            )
        except TRANSIENT as exc:
            logger.warning("could not record job %s of run %d: %s", job_id, self.run.run_id, exc)

    def _retry(self, reason: str) -> int:
        self.lease.stop()
        ended = end_without_result(
            self.store, self.settings, self.held, reason, retry=True, patience_s=STORE_PATIENCE_S
        )
        logger.error(
            "run %d attempt %d: %s; run is now %s",
            self.run.run_id,
            self.run.attempt,
            reason,
            ended.status,
        )
        return 0

    def _not_installable(self, reason: str) -> int:
        self.lease.stop()
        not_installable(
            self.store,
            self.settings,
            self.held,
            self.run.config,
            reason,
            patience_s=STORE_PATIENCE_S,
        )
        logger.error("run %d: %s is not installable: %s", self.run.run_id, self.run.spec, reason)
        return 0

    def store_result(self, result: SuiteResult, path: Path) -> int:
        """Store and judge the result in the run; if the database stays unreachable, the file
        is left for the scheduler to collect once the lease has expired. The lease stops
        renewing first: a renewal racing the run's end would take the ended run as lost."""
        self.lease.stop()
        try:
            finished = finish(
                self.store,
                self.settings,
                result,
                runner=self.run.runner,
                held=self.held,
                patience_s=STORE_PATIENCE_S,
            )
        except LeaseLost:
            logger.warning("run %d was taken over; its result stays in %s", self.run.run_id, path)
            return 0
        except IngestError as exc:
            reason = f"result could not be stored: {exc}"
            logger.error("run %d: %s", self.run.run_id, reason)
            end_without_result(self.store, self.settings, self.held, reason, retry=False)
            return 0
        except TRANSIENT as exc:
            logger.error(
                "run %d: result not stored (%s); kept in %s", self.run.run_id, one_line(exc), path
            )
            return 1
        judged = finished.judged.action if finished.judged else finished.problem
        logger.info("run %d %s; judged: %s", self.run.run_id, finished.status, judged)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.worker")
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--owner", required=True)
    args = parser.parse_args(argv)
    configure_logging()
    settings = Settings(**json.loads(sys.stdin.read() or "{}"))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    store = open_store(settings)
    with store.reading() as session:
        run = held_run(session, args.run_id)
    if run is None or run.owner != args.owner:
        logger.warning("run %d is not held by %s; nothing to do", args.run_id, args.owner)
        return 0
    lease = Lease(store, run.run_id, args.owner, settings.lease_s)
    lease.start()
    worker = Worker(store, settings, run, args.owner, lease)
    try:
        return worker.execute()
    except KeyboardInterrupt:
        lease.stop()
        if lease.lost.is_set():
            return 0
        write_patiently(store, STORE_PATIENCE_S, release_claim, run.run_id, args.owner)
        logger.warning("run %d stopped (pid %d); back in the queue", run.run_id, os.getpid())
        return 0
    except Exception as exc:
        logger.exception("run %d failed in its worker", run.run_id)
        lease.stop()
        end_without_result(
            store,
            settings,
            Held(run.run_id, args.owner),
            f"worker error: {one_line(exc)}",
            retry=False,
        )
        return 1
    finally:
        lease.stop()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
