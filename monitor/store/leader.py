"""One scheduler per database, enforced by the database's own locks: a PostgreSQL session
advisory lock held on a dedicated connection, or on SQLite (one machine's file) an exclusive
lock on a file beside the database. Both vanish with the process that held them, so a killed
scheduler never leaves a stale claim. The dispatch lock serialises "count running, claim next"
across processes, so `max_parallel_runs` holds with two dispatchers."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from monitor.store.db import Store
from monitor.store.errors import StoreError

SCHEDULER_LOCK = 0x70617269_7479_01
"""PostgreSQL advisory lock key of the scheduler's leadership ("parity", 1)."""
DISPATCH_LOCK = 0x70617269_7479_02
"""PostgreSQL advisory lock key that serialises dispatching ("parity", 2)."""
APPLICATION = "parity scheduler"


class SchedulerRunning(StoreError):
    """Another scheduler already serves this database; the message names it."""


def holder_name() -> str:
    """Who holds the lock, as the other scheduler will be told."""
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{socket.gethostname()} pid {os.getpid()}, since {started}"


@dataclass
class Leadership:
    """The held leadership of one database; `release()` gives it up."""

    connection: Connection | None = None
    handle: IO[str] | None = None

    def release(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": SCHEDULER_LOCK}
                )
                self.connection.close()
            self.connection = None
        if self.handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.handle, fcntl.LOCK_UN)
                self.handle.close()
            self.handle = None


def take_leadership(store: Store) -> Leadership:
    """Hold this database's scheduler lock, or raise SchedulerRunning naming who holds it."""
    me = holder_name()
    if store.engine.dialect.name == "postgresql":
        connection = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.execute(
            text("SELECT set_config('application_name', :n, false)"), {"n": f"{APPLICATION}: {me}"}
        )
        if connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCHEDULER_LOCK}):
            return Leadership(connection=connection)
        holder = connection.scalar(
            text(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND (l.classid::bigint << 32 | l.objid::bigint) = :k LIMIT 1"
            ),
            {"k": SCHEDULER_LOCK},
        )
        connection.close()
        raise SchedulerRunning(_taken(store, str(holder or "another session")))
    path = _lock_file(store)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise SchedulerRunning(_taken(store, holder or "another process")) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{APPLICATION}: {me}\n")
    handle.flush()
    return Leadership(handle=handle)


def _taken(store: Store, holder: str) -> str:
    return f"a scheduler already serves {store.url} ({holder}); stop it first, one per database"


def _lock_file(store: Store) -> Path:
    database = store.engine.url.database
    if not database or database == ":memory:":
        raise StoreError("the scheduler needs a database file, not an in-memory SQLite")
    return Path(database).with_name(f"{Path(database).name}.scheduler.lock")


def lock_dispatch(session: Session) -> None:
    """Serialise dispatching until the session's transaction ends (SQLite's write
    transactions already are: they begin IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": DISPATCH_LOCK})
