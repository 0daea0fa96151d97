"""The one run pipeline. `execute` runs the suite of one release on a runner (its environment
prebuilt, cached or built first); every way a run ends then goes through one finish step:
a result (`parity run`, `backfill`, `ingest`, a scheduled or requested run, a result a dead
worker left) is validated, stored, judged against its baseline (incident and confirmation
run), and the after-run hooks are called; a queued run that ends without a result is retried
or failed, then judged and hooked the same way."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from monitor.config import Settings
from monitor.detection.errors import DetectionError
from monitor.envs import IndexConfig, ReleaseEnv, release_env
from monitor.errors import one_line
from monitor.runners import make_runner
from monitor.runners.base import OnEvent, OnJob, SuiteJob, timed_out
from monitor.schema import SuiteConfig, SuiteResult, write_result
from monitor.store import Store, StoreError, record_release
from monitor.store.errors import StoreUnavailable
from monitor.store.ingest import check_storable, ingest_result
from monitor.store.models import RunStatus
from monitor.store.queue import fail_run, retry_or_fail, store_held_result

if TYPE_CHECKING:
    from monitor.judge import DetectionOutcome

logger = logging.getLogger(__name__)
T = TypeVar("T")
Log = Callable[[str], None]
TRANSIENT = (OperationalError, InterfaceError, StoreUnavailable)
"""A database that is locked, restarting or unreachable: worth waiting for."""
STORE_PATIENCE_S = 60.0
"""How long a finish step waits for a locked or unreachable database by default."""


@dataclass(frozen=True)
class Held:
    """A queued run this process holds the lease of (its owner token)."""

    run_id: int
    owner: str


@dataclass(frozen=True)
class Finished:
    """How a run ended: its id, whether this step stored it (False: the same result was there
    already, or the run was queued again), its status, and what judging it did (or why it
    could not)."""

    run_id: int
    created: bool
    status: RunStatus | None
    judged: DetectionOutcome | None = None
    problem: str | None = None


def execute(
    config: SuiteConfig,
    settings: Settings,
    *,
    runner: str,
    run_dir: Path,
    name: str,
    env: ReleaseEnv | None = None,
    index: IndexConfig | None = None,
    on_job: OnJob = lambda _: None,
    on_event: OnEvent = lambda _: None,
    log: Log = lambda _: None,
) -> SuiteResult:
    """Run the suite for `config` on the `runner` backend and keep the result file in
    `run_dir`. Raises EnvBuildError (the release does not install), RunnerUnavailable and
    RunnerLost (retry later); every other problem is a failed result."""
    backend = make_runner(runner, settings)
    chosen = env or release_env(config.engine, settings, index, log, here=runner == "local")
    job = SuiteJob(name, chosen, config, run_dir, settings.suite_timeout_s)
    result = backend.run(job, on_job, on_event)
    write_result(result, job.result_file)
    return result


def final_status(result: SuiteResult) -> RunStatus:
    if timed_out(result):
        return RunStatus.TIMED_OUT
    return RunStatus(result.status)


def _log_retry(state: RetryCallState) -> None:
    problem = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0
    logger.warning("database busy or unreachable, retrying in %.0f s: %s", wait, one_line(problem))


def patiently(patience_s: float, call: Callable[[], T]) -> T:
    """A store operation, retried with backoff while the database is locked or unreachable;
    past `patience_s`, StoreUnavailable with one line saying so."""
    retrying = retry(
        retry=retry_if_exception_type(TRANSIENT),
        stop=stop_after_delay(patience_s),
        wait=wait_exponential(multiplier=1, max=30),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        return retrying(call)()
    except (OperationalError, InterfaceError) as exc:
        raise StoreUnavailable(
            f"database busy or unreachable for {patience_s:g} s: {one_line(exc)}"
        ) from None


def write_patiently(store: Store, patience_s: float, function: Callable[..., T], *args: Any) -> T:
    """`function(session, *args)` in one write transaction, retried as `patiently` does."""

    def once() -> T:
        with store.writing() as session:
            return function(session, *args)

    return patiently(patience_s, once)


def finish(
    store: Store,
    settings: Settings,
    result: SuiteResult,
    *,
    runner: str,
    held: Held | None = None,
    patience_s: float = STORE_PATIENCE_S,
) -> Finished:
    """Validate, store (into the held run, or as a new run), judge, call the hooks. Storing the
    same result twice stores it once. Raises IngestError for a result the store cannot hold
    (nothing written), LeaseLost when the held run was taken over, StoreError when the database
    stays unreachable."""
    check_storable(result)
    status = final_status(result)
    if held is not None:
        outcome = patiently(
            patience_s,
            lambda: store_held_result(store, held.run_id, held.owner, result, status),
        )
    else:
        outcome = patiently(
            patience_s, lambda: ingest_result(store, result, runner=runner, status=status)
        )
    if not outcome.created and held is None:
        return Finished(outcome.run_id, False, status)
    return _ended(store, settings, Finished(outcome.run_id, outcome.created, status))


def end_without_result(
    store: Store,
    settings: Settings,
    held: Held,
    reason: str,
    *,
    retry: bool,
    patience_s: float = STORE_PATIENCE_S,
) -> Finished:
    """A held run that ended without a result: with `retry`, queued again after a backoff
    while attempts remain, else failed with the reason. A run that ends is judged and hooked."""

    def end(session: Session) -> RunStatus | None:
        if retry:
            return retry_or_fail(
                session,
                held.run_id,
                held.owner,
                reason,
                max_attempts=settings.max_attempts,
                backoff_s=settings.retry_backoff_s,
            )
        return RunStatus.FAILED if fail_run(session, held.run_id, held.owner, reason) else None

    return _end_held(store, settings, held, end, patience_s)


def not_installable(
    store: Store,
    settings: Settings,
    held: Held,
    config: SuiteConfig,
    reason: str,
    *,
    patience_s: float = STORE_PATIENCE_S,
) -> Finished:
    """A held run whose release does not install here: the release is marked so and the run
    fails for good (in one transaction), then it is judged and hooked."""

    def end(session: Session) -> RunStatus | None:
        package, version = config.engine.package, str(config.engine.version)
        record_release(session, package, version, installable=False, install_error=reason)
        failed = fail_run(session, held.run_id, held.owner, f"not installable: {reason}")
        return RunStatus.FAILED if failed else None

    return _end_held(store, settings, held, end, patience_s)


def _end_held(
    store: Store,
    settings: Settings,
    held: Held,
    end: Callable[[Session], RunStatus | None],
    patience_s: float,
) -> Finished:
    """End a held run with `end` (its new status; None when the run is no longer held); a run
    that ended rather than going back to the queue is judged and hooked."""
    status = write_patiently(store, patience_s, end)
    if status is None or status == RunStatus.QUEUED:
        return Finished(held.run_id, False, status)
    return _ended(store, settings, Finished(held.run_id, False, status))


def _ended(store: Store, settings: Settings, finished: Finished) -> Finished:
    """Judge a run that ended, then call the after-run hooks; neither ever fails the run.
    Judging is imported here, not at the top: its statistics (SciPy, ruptures) take seconds
    to import, and a worker must renew its lease long before its run ends."""
    from monitor.judge import judge_run

    judged, problem = None, None
    try:
        judged = judge_run(store, finished.run_id, settings)
    except (DetectionError, StoreError, SQLAlchemyError) as exc:
        problem = one_line(exc)
    except Exception as exc:
        logger.exception("judging run %d failed", finished.run_id)
        problem = f"{type(exc).__name__}: {one_line(exc)}"
    if problem is not None:
        logger.warning("run %d not judged: %s", finished.run_id, problem)
    run_hooks(store, finished.run_id, settings.after_run_hooks)
    return Finished(finished.run_id, finished.created, finished.status, judged, problem)


def run_hooks(store: Store, run_id: int, hooks: list[str]) -> None:
    """Call each "module:function" hook with (store, run_id); one that fails is logged."""
    for path in hooks:
        try:
            module, _, name = path.partition(":")
            hook: Any = getattr(importlib.import_module(module), name)
            hook(store, run_id)
        except Exception:
            logger.exception("after-run hook %s failed for run %d", path, run_id)
