"""`parity serve --first-run`'s first run: the suite on the defaults, once, while no run has
succeeded, in the foreground with its progress (written to the store as well, for the dashboard
that `parity serve` starts first). It is a run of the queue that this process
claims and holds under a lease as a worker would, so that a stop (Ctrl-C, or SIGTERM, which
every `parity` command turns into KeyboardInterrupt) kills its suite and engines and puts it
back in the queue, where the scheduler or the next first run takes it; a queued first run is
claimed again rather than queued twice."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Mapping
from datetime import timedelta

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import update
from sqlalchemy.orm import Session

from jobs.progress import ProgressWriter, expected_duration
from jobs.worker import Lease
from monitor.cli.common import errors, fail, plain, reading, shown, store
from monitor.cli.findings import print_finished
from monitor.cli.run import progress_bar, step_line, suite_events
from monitor.cli.summary import print_summary
from monitor.config import Settings
from monitor.engines import EngineSpecError, parse_package
from monitor.envs import EnvBuildError, ReleaseEnv, index_config, release_env
from monitor.errors import one_line
from monitor.pipeline import STORE_PATIENCE_S, Held, end_without_result, execute, finish
from monitor.pipeline import write_patiently as write
from monitor.progress import ProgressFeed, RunProgress
from monitor.releases import DiscoveryError, candidate_releases
from monitor.requests import RequestError, check_options, suite_config
from monitor.runners.base import RunnerLost, RunnerUnavailable, attempt_dir
from monitor.schema import SuiteConfig, SuiteOptions, SuiteResult
from monitor.store import IngestError, Store, StoreError, record_release
from monitor.store import models as m
from monitor.store.queries import list_runs
from monitor.store.queue import (
    ClaimedRun,
    LeaseLost,
    held_run,
    insert_run,
    record_job_id,
    release_claim,
    run_with_config,
)

FIRST_RUN = "first run"
"""Who asked for it, as the queue records it (served before routine scheduled runs)."""
BAD_INPUT = (EngineSpecError, EnvBuildError, DiscoveryError, RequestError)


def needs_first_run(settings: Settings) -> bool:
    with reading(settings) as session:
        return not list_runs(session, status="succeeded", limit=1)


def _environment(settings: Settings, progress: Progress) -> tuple[ReleaseEnv, dict[str, str]]:
    """The newest release of the engine package that installs here (of the newest few), and
    why each newer one did not, by version."""
    task = progress.add_task("environment", total=None)

    def log(message: str) -> None:
        progress.update(task, description=shown(message))
        step_line(progress, message)

    package = parse_package(settings.engine_package)
    index = index_config(settings, None, [])
    refused: dict[str, str] = {}
    for spec in candidate_releases(package, None, settings, log):
        try:
            env = release_env(spec, settings, index, log, here=settings.runner == "local")
        except EnvBuildError as exc:
            refused[str(spec.version)] = one_line(exc)
            log(f"{spec} does not install here")
            continue
        verb = "reused" if env.reused else "built"
        described = f"environment {env.spec} {verb} ({env.build_seconds:.1f} s)"
        progress.update(task, description=shown(described), total=1, completed=1)
        step_line(progress, described)
        return env, refused
    raise EnvBuildError("; ".join(refused.values()))


def _take(session: Session, run_id: int, owner: str, lease_s: float) -> ClaimedRun | None:
    """Claim one queued run by id (the queue's own claim takes whichever is due first)."""
    now = m.utcnow()
    done = session.execute(
        update(m.RunRow)
        .where(m.RunRow.id == run_id, m.RunRow.status == m.RunStatus.QUEUED)
        .values(
            status=m.RunStatus.RUNNING,
            claimed_by=owner,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_s),
            runner_job_id=None,
        )
        .execution_options(synchronize_session=False)
    )
    return held_run(session, run_id) if done.rowcount == 1 else None  # type: ignore[attr-defined]


def claim_first_run(
    session: Session,
    config: SuiteConfig,
    runner: str,
    owner: str,
    lease_s: float,
    refused: Mapping[str, str],
) -> ClaimedRun:
    """The queued run of `config` (a first run stopped before) or a new one, claimed; the
    newer releases that did not install are stored as such, so discovery does not queue them."""
    package = config.engine.package
    for version, reason in refused.items():
        record_release(session, package, version, installable=False, install_error=reason)
    record_release(session, package, str(config.engine.version))
    waiting = run_with_config(session, config, status=m.RunStatus.QUEUED)
    claimed = _take(session, waiting, owner, lease_s) if waiting is not None else None
    if claimed is None:
        claimed = _take(session, insert_run(session, config, runner, FIRST_RUN), owner, lease_s)
    assert claimed is not None
    return claimed


def give_back(opened: Store, run: ClaimedRun, owner: str, lease: Lease) -> None:
    """After a stop: the run back in the queue as it was (unless a scheduler took it over)."""
    lease.stop()
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    if lease.lost.is_set():
        said = f"run {run.run_id} was taken over by a scheduler"
    else:
        try:
            write(opened, STORE_PATIENCE_S, release_claim, run.run_id, owner)
            said = (
                f"run {run.run_id} is back in the queue; the scheduler runs it "
                "(`parity serve`, or `make run` to watch it)"
            )
        except StoreError as exc:
            said = f"run {run.run_id} not given back ({exc}); it is queued again after its lease"
    errors.print(plain(f"stopped: {said}"), highlight=False)


def first_run(settings: Settings) -> bool:
    """Run, store and judge the first run, printing its summary and findings; False when it
    was stopped (Ctrl-C, SIGTERM). A run that fails ends the command with one line."""
    try:
        options = check_options(SuiteOptions())
    except RequestError as exc:
        fail(one_line(exc))
    opened = store(settings)
    owner = uuid.uuid4().hex
    try:
        with progress_bar() as progress:
            env, refused = _environment(settings, progress)
            config = suite_config(env.spec, options, None, settings)
            run = write(
                opened,
                STORE_PATIENCE_S,
                claim_first_run,
                config,
                settings.runner,
                owner,
                settings.lease_s,
                refused,
            )
            lease = Lease(opened, run.run_id, owner, settings.lease_s)
            lease.start()
            try:
                result = _execute(opened, settings, run, owner, env, progress)
            except KeyboardInterrupt:
                give_back(opened, run, owner, lease)
                return False
            except (RunnerUnavailable, RunnerLost) as exc:
                lease.stop()
                reason = one_line(exc)
                end_without_result(opened, settings, Held(run.run_id, owner), reason, retry=True)
                fail(f"{run.runner} runner: {reason} (run {run.run_id} is queued again)", code=1)
            finally:
                lease.stop()
    except KeyboardInterrupt:
        errors.print("stopped before the first run started", highlight=False)
        return False
    except BAD_INPUT as exc:
        fail(one_line(exc))
    finally:
        opened.close()
    _finish(settings, run, owner, result)
    return True


def _execute(
    opened: Store,
    settings: Settings,
    run: ClaimedRun,
    owner: str,
    env: ReleaseEnv,
    progress: Progress,
) -> SuiteResult:
    def record(job_id: str) -> None:
        write(opened, STORE_PATIENCE_S, record_job_id, run.run_id, owner, job_id)

    track = RunProgress(stage=f"suite on {env.spec}")
    track.expected_s = expected_duration(opened, run.run_id)
    writer = ProgressWriter(opened, run.run_id, owner)
    writer.start()
    writer.offer(track)
    try:
        return execute(
            run.config,
            settings,
            runner=run.runner,
            run_dir=attempt_dir(settings.runs_dir, run.run_id, run.attempt),
            name=f"run-{run.run_id}-attempt-{run.attempt}",
            env=env,
            on_job=record,
            on_event=suite_events(progress, ProgressFeed(track, writer.offer)),
        )
    finally:
        writer.stop()


def _finish(settings: Settings, run: ClaimedRun, owner: str, result: SuiteResult) -> None:
    """Show the summary, store and judge the result in the held run, show what judging found."""
    where = attempt_dir(settings.runs_dir, run.run_id, run.attempt) / "result.json"
    print_summary(result, settings.tolerances, Console())
    errors.print(plain(f"result: {where}"), highlight=False)
    opened = store(settings)
    held = Held(run.run_id, owner)
    try:
        finished = finish(opened, settings, result, runner=run.runner, held=held)
    except LeaseLost:
        fail(f"run {run.run_id} was taken over by a scheduler; its result stays in {where}", 1)
    except IngestError as exc:
        end_without_result(
            opened, settings, held, f"result could not be stored: {exc}", retry=False
        )
        fail(f"{shown(where)}: {exc}", code=1)
    except StoreError as exc:
        fail(f"{shown(where)}: {exc} (nothing stored; the scheduler stores it once its lease ends)")
    finally:
        opened.close()
    print_finished(finished, Console())
    if result.status != "succeeded":
        if result.error_tail:
            errors.print(plain(result.error_tail, "dim", lines=True), highlight=False)
        fail(f"suite failed: {result.error}", code=1)
