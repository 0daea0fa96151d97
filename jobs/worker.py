"""One attempt of one claimed run, in its own process (`python -m jobs.worker`): renew the run's
lease, build or reuse the release's environment, run the suite on the run's runner and store the
result in the run. The scheduler starts one per claimed run in a session of its own, so a
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
from typing import Any

from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from jobs.hooks import after_run
from jobs.logs import configure as configure_logging
from monitor.config import Settings
from monitor.engines import EngineSpec, parse_engine
from monitor.envs import EnvBuildError, ReleaseEnv, ensure_env
from monitor.orchestrate import index_config
from monitor.runners.base import (
    RunnerLost,
    RunnerUnavailable,
    RunRequest,
    attempt_dir,
    make_runner,
)
from monitor.schema import SuiteResult, write_result
from monitor.store import IngestError, Store, StoreError, open_store, record_release
from monitor.store.jobs import (
    ClaimedRun,
    LeaseLost,
    fail_run,
    finish,
    held_run,
    record_job_id,
    release_claim,
    renew_lease,
    retry_or_fail,
)

logger = logging.getLogger("jobs.worker")
STORE_PATIENCE_S = 600.0
TRANSIENT = (SQLAlchemyError, StoreError)


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
            except TRANSIENT as exc:
                logger.warning("cannot renew the lease of run %d yet: %s", self.run_id, _line(exc))
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


def _line(exc: BaseException | None) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _log_retry(state: RetryCallState) -> None:
    problem = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0
    logger.warning("database busy or unreachable, retrying in %.0f s: %s", wait, _line(problem))


@retry(
    retry=retry_if_exception_type(TRANSIENT),
    stop=stop_after_delay(STORE_PATIENCE_S),
    wait=wait_exponential(multiplier=1, max=30),
    before_sleep=_log_retry,
    reraise=True,
)
def _write(function: Any, *args: Any, **kwargs: Any) -> Any:
    """One store write, retried while the database is locked or unreachable."""
    return function(*args, **kwargs)


def _in_transaction(store: Store, function: Any, *args: Any, **kwargs: Any) -> Any:
    def once() -> Any:
        with store.writing() as session:
            return function(session, *args, **kwargs)

    return _write(once)


def release_env(spec: EngineSpec, settings: Settings, *, here: bool = True) -> ReleaseEnv:
    """The release's prebuilt environment if the settings name one, else the cached (or newly
    built) environment of the data dir. A prebuilt one is checked only when the run is `here`
    (a Ray node's own environments are not visible from this machine)."""
    for key, path in settings.prebuilt_envs.items():
        if parse_engine(key) == (spec.package, spec.version):
            if here and not (path / "bin" / "python").exists():
                raise EnvBuildError(f"prebuilt environment {path} of {spec} has no bin/python")
            return ReleaseEnv(spec, path, reused=True, build_seconds=0.0)
    return ensure_env(
        spec,
        settings.envs_dir,
        index_config(settings, None, []),
        settings.env_python,
        lambda message: logger.info("%s", message),
    )


class Worker:
    def __init__(
        self, store: Store, settings: Settings, run: ClaimedRun, owner: str, lease: Lease
    ) -> None:
        self.store, self.settings, self.run, self.owner = store, settings, run, owner
        self.lease = lease
        self.dir = attempt_dir(settings.runs_dir, run.run_id, run.attempt)

    def execute(self) -> int:
        run = self.run
        logger.info("run %d attempt %d: %s on %s", run.run_id, run.attempt, run.spec, run.runner)
        try:
            runner = make_runner(run.runner, self.settings)
            env = release_env(run.spec, self.settings, here=run.runner == "local")
        except RunnerUnavailable as exc:
            return self._retry(str(exc))
        except EnvBuildError as exc:
            return self._not_installable(_line(exc))
        request = RunRequest(
            run.run_id, run.attempt, env, run.config, self.dir, self.settings.suite_timeout_s
        )
        try:
            result = runner.run(request, self._record_job)
        except (RunnerUnavailable, RunnerLost) as exc:
            return self._retry(_line(exc))
        write_result(result, request.result_file)
        return self.store_result(result, request.result_file)

    def _record_job(self, job_id: str) -> None:
        logger.info("run %d job %s", self.run.run_id, job_id)
        try:
            _in_transaction(self.store, record_job_id, self.run.run_id, self.owner, job_id)
        except TRANSIENT as exc:
            logger.warning("could not record job %s of run %d: %s", job_id, self.run.run_id, exc)

    def _retry(self, reason: str) -> int:
        self.lease.stop()
        status = _in_transaction(
            self.store,
            retry_or_fail,
            self.run.run_id,
            self.owner,
            reason,
            max_attempts=self.settings.max_attempts,
            backoff_s=self.settings.retry_backoff_s,
        )
        logger.error(
            "run %d attempt %d: %s; run is now %s",
            self.run.run_id,
            self.run.attempt,
            reason,
            status,
        )
        if status is not None and status != "queued":
            after_run(self.store, self.run.run_id, self.settings.after_run_hooks)
        return 0

    def _not_installable(self, reason: str) -> int:
        self.lease.stop()

        def record(session: Any) -> bool:
            record_release(
                session,
                self.run.package,
                self.run.version,
                installable=False,
                install_error=reason,
            )
            return fail_run(session, self.run.run_id, self.owner, f"not installable: {reason}")

        if _in_transaction(self.store, record):
            after_run(self.store, self.run.run_id, self.settings.after_run_hooks)
        logger.error("run %d: %s is not installable: %s", self.run.run_id, self.run.spec, reason)
        return 0

    def store_result(self, result: SuiteResult, path: Path) -> int:
        """Store the result in the run; if the database stays unreachable, the file is left for
        the scheduler to collect once the lease has expired. The lease stops renewing first: a
        renewal racing the run's end would take the ended run as lost and interrupt the hooks."""
        self.lease.stop()
        try:
            _write(finish, self.store, self.run.run_id, self.owner, result)
        except LeaseLost:
            logger.warning("run %d was taken over; its result stays in %s", self.run.run_id, path)
            return 0
        except IngestError as exc:
            reason = f"result could not be stored: {exc}"
            logger.error("run %d: %s", self.run.run_id, reason)
            _in_transaction(self.store, fail_run, self.run.run_id, self.owner, reason)
        except TRANSIENT as exc:
            logger.error(
                "run %d: result not stored (%s); kept in %s", self.run.run_id, _line(exc), path
            )
            return 1
        logger.info("run %d %s", self.run.run_id, result.status)
        after_run(self.store, self.run.run_id, self.settings.after_run_hooks)
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
        _in_transaction(store, release_claim, run.run_id, args.owner)
        logger.warning("run %d stopped (pid %d); back in the queue", run.run_id, os.getpid())
        return 0
    except Exception as exc:
        logger.exception("run %d failed in its worker", run.run_id)
        lease.stop()
        _in_transaction(store, fail_run, run.run_id, args.owner, f"worker error: {_line(exc)}")
        after_run(store, run.run_id, settings.after_run_hooks)
        return 1
    finally:
        lease.stop()
        store.close()


if __name__ == "__main__":
    sys.exit(main())
