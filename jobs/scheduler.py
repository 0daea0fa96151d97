"""The scheduler process: APScheduler 3.x with its job store in the results database (table
`apscheduler_jobs`, outside the Alembic models), fixed job ids, coalescing, one instance per job
and a misfire grace time. The nightly job keeps its stored next run time across restarts while
its time is unchanged, so a nightly run missed while the scheduler was down still fires within
the grace time; the interval jobs run at once on start. Run one scheduler per database: a 3.x
job store is not shared between processes (two schedulers would not run a run twice, claims
are atomic, but would discover twice)."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from jobs import tasks
from jobs.discovery import scheduled_options
from jobs.tasks import Service
from monitor.alerts import send_due
from monitor.config import Settings
from monitor.errors import one_line
from monitor.requests import RequestError
from monitor.runners import make_runner
from monitor.store import Store, open_store
from monitor.store.db import create_store_engine, database_url
from monitor.store.leader import Leadership, take_leadership
from monitor.store.migrate import SQLITE_IMMEDIATE

logger = logging.getLogger("jobs.scheduler")
JOB_TABLE = "apscheduler_jobs"
REQUESTS_INTERVAL_S = 10.0
NIGHTLY_GRACE_S = 6 * 3600
INTERVAL_GRACE_S = 300
JOBSTORE_RETRY_S = 10.0
OVERDUE_INTERVAL_MIN = 15.0


class SchedulerConfigError(ValueError):
    """Settings the scheduler cannot start with; the message names the setting."""


class PatientJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """APScheduler's SQL job store, except that a database that is locked or unreachable while
    a job's next run time is saved is logged instead of ending the scheduler's main loop (the
    job then fires again at the next wake-up, coalesced)."""

    def update_job(self, job: Any) -> None:
        try:
            super().update_job(job)
        except SQLAlchemyError as exc:
            logger.warning("job store: next run of %s not saved yet: %s", job.id, one_line(exc))

    def get_next_run_time(self) -> datetime | None:
        try:
            found: datetime | None = super().get_next_run_time()
            return found
        except SQLAlchemyError as exc:
            logger.warning("job store unreadable, retrying: %s", one_line(exc))
            return datetime.now(UTC) + timedelta(seconds=JOBSTORE_RETRY_S)


def check_settings(settings: Settings) -> None:
    """What the scheduler needs, checked before it starts: one line naming a bad setting."""
    try:
        make_runner(settings.runner, settings)
    except Exception as exc:
        raise SchedulerConfigError(f"PARITY_RUNNER={settings.runner}: {one_line(exc)}") from None
    try:
        scheduled_options(settings)
    except RequestError as exc:
        raise SchedulerConfigError(
            f"scheduled runs: {exc} (PARITY_SCHEDULED_MODEL / PARITY_SCHEDULED_PROBES)"
        ) from None
    if not settings.discovery_packages:
        raise SchedulerConfigError("PARITY_DISCOVERY_PACKAGES is empty")


def job_specs(settings: Settings) -> dict[str, tuple[Any, Any, int]]:
    """Job id -> (function, trigger, misfire grace seconds)."""
    hour, minute = (int(part) for part in settings.nightly_time.split(":"))
    every = IntervalTrigger
    dispatch_s = settings.dispatch_interval_s
    return {
        "discover": (
            tasks.discover_job,
            every(minutes=settings.discovery_interval_min, timezone=UTC),
            INTERVAL_GRACE_S,
        ),
        "dispatch": (tasks.dispatch_job, every(seconds=dispatch_s, timezone=UTC), 60),
        "requests": (
            tasks.requests_job,
            every(seconds=min(REQUESTS_INTERVAL_S, dispatch_s), timezone=UTC),
            60,
        ),
        "collect": (
            tasks.collect_job,
            every(seconds=max(5.0, settings.lease_s / 2), timezone=UTC),
            60,
        ),
        "nightly": (
            tasks.nightly_job,
            CronTrigger(hour=hour, minute=minute, timezone=UTC),
            NIGHTLY_GRACE_S,
        ),
        "alerts": (alerts_job, every(seconds=settings.alert_interval_s, timezone=UTC), 60),
        "overdue": (tasks.overdue_job, every(minutes=OVERDUE_INTERVAL_MIN, timezone=UTC), 60),
    }


@tasks._guarded("alerts")
def alerts_job(service: Service) -> None:
    """Deliver the outbox's due alerts (monitor.alerts): claimed, retried with backoff, once."""
    send_due(service.store, service.settings)


class Scheduler:
    """The scheduler of one process: `start()` installs the jobs and runs them in background
    threads; `stop()` ends them and asks the workers started here to put their runs back."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        check_settings(settings)
        self.settings = settings
        self.store = store or open_store(settings)
        self.service = Service(self.store, settings)
        self.leadership: Leadership | None = None
        engine = create_store_engine(database_url(settings)).execution_options(
            **{SQLITE_IMMEDIATE: True}
        )
        self.aps = BackgroundScheduler(
            jobstores={"default": PatientJobStore(engine=engine, tablename=JOB_TABLE)},
            job_defaults={"coalesce": True, "max_instances": 1},
            executors={"default": {"type": "threadpool", "max_workers": 4}},
            jobstore_retry_interval=JOBSTORE_RETRY_S,
            timezone=UTC,
        )

    def start(self) -> None:
        """Take the database's scheduler lock (SchedulerRunning when another scheduler holds
        it), then install and resume the jobs."""
        self.leadership = take_leadership(self.store)
        tasks.install(self.service)
        self.aps.start(paused=True)
        now = datetime.now(UTC)
        for job_id, (function, trigger, grace) in job_specs(self.settings).items():
            existing = self.aps.get_job(job_id)
            if job_id == "nightly" and existing and str(existing.trigger) == str(trigger):
                logger.info("job nightly kept, next run %s", existing.next_run_time)
                continue
            when = {} if job_id == "nightly" else {"next_run_time": now}
            self.aps.add_job(
                function,
                trigger,
                id=job_id,
                name=job_id,
                replace_existing=True,
                misfire_grace_time=grace,
                **when,
            )
        self.aps.resume()
        logger.info(
            "scheduler started: %s, runner %s, discovery of %s every %g min, nightly at %s UTC",
            self.store.url,
            self.settings.runner,
            ", ".join(self.settings.discovery_packages),
            self.settings.discovery_interval_min,
            self.settings.nightly_time,
        )

    def stop(self) -> None:
        logger.info("scheduler stopping")
        if self.aps.running:
            self.aps.pause()
            self.aps.shutdown(wait=True)
        self.service.stop_workers()
        tasks.install(None)
        if self.leadership is not None:
            self.leadership.release()
        self.store.close()
        logger.info("scheduler stopped")


def stop_on_signals(stopped: threading.Event) -> None:
    """SIGINT and SIGTERM set `stopped` (the main thread then shuts down in order)."""

    def handle(signum: int, _frame: object) -> None:
        logger.info("%s received", signal.Signals(signum).name)
        stopped.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def run_forever(settings: Settings) -> None:
    """`parity scheduler`: run until SIGINT or SIGTERM."""
    scheduler = Scheduler(settings)
    stopped = threading.Event()
    stop_on_signals(stopped)
    scheduler.start()
    try:
        while not stopped.wait(1.0):
            pass
    finally:
        scheduler.stop()
