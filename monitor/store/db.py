"""Connecting to the results store: SQLite (a WAL file in the data dir) by default, PostgreSQL
through `PARITY_DATABASE_URL`. `open_store` checks the connection, upgrades the schema to this
monitor's revision and hands back session factories; every command and the scheduler use it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random

from monitor.config import Settings
from monitor.store.errors import MigrationError, StoreUnavailable
from monitor.store.migrate import SQLITE_IMMEDIATE, upgrade_to_head

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10


def database_url(settings: Settings) -> URL:
    """The configured URL, or the SQLite file `<data_dir>/parity.db`; bare `postgresql://`
    URLs get the psycopg (3) driver."""
    if not settings.database_url:
        return URL.create("sqlite+pysqlite", database=str(settings.data_dir / "parity.db"))
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise StoreUnavailable(
            f"PARITY_DATABASE_URL is not a database URL: {_without_password(settings.database_url)}"
        ) from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def shown(url: URL) -> str:
    """The URL as it may be printed: the password masked."""
    return url.render_as_string(hide_password=True)


def _without_password(raw: str) -> str:
    scheme, sep, rest = raw.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return raw
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def create_store_engine(url: URL) -> Engine:
    """An engine with the store's connection settings; does not connect yet."""
    options: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            try:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot open database {shown(url)}: {exc.strerror}"
                ) from None
    elif url.get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(url, **options)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise StoreUnavailable(f"cannot use database {shown(url)}: {_first_line(exc)}") from None
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine)
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL, a busy timeout and foreign keys on every connection; transactions begin explicitly
    (BEGIN IMMEDIATE for writers, so two writers queue instead of failing on lock upgrade)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            _switch_to_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(SQLITE_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@retry(
    retry=retry_if_exception(lambda exc: "locked" in str(exc)),
    wait=wait_random(0.01, 0.1),
    stop=stop_after_delay(SQLITE_BUSY_TIMEOUT_MS / 1000),
    reraise=True,
)
def _switch_to_wal(cursor: Any) -> None:
    """Once per database file (WAL persists). Needs an exclusive lock, for which SQLite does not
    wait on its busy timeout: processes opening a new file at once retry here instead."""
    cursor.execute("PRAGMA journal_mode = WAL")


def _first_line(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def check_connection(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise StoreUnavailable(
            f"cannot reach database {shown(engine.url)}: {_first_line(exc)}"
        ) from None


@dataclass(frozen=True)
class Store:
    """An open, migrated store: `reading()` and `writing()` give sessions in one transaction."""

    engine: Engine
    readers: sessionmaker[Session]
    writers: sessionmaker[Session]

    @classmethod
    def from_engine(cls, engine: Engine) -> Store:
        writer_engine = engine.execution_options(**{SQLITE_IMMEDIATE: True})
        return cls(
            engine=engine,
            readers=sessionmaker(engine, expire_on_commit=False),
            writers=sessionmaker(writer_engine, expire_on_commit=False),
        )

    @property
    def url(self) -> str:
        return shown(self.engine.url)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.readers() as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """One write transaction: committed when the block ends, rolled back on any error."""
        with self.writers() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def open_store(settings: Settings, *, upgrade: bool = True) -> Store:
    """Connect, upgrade the schema to head (unless told not to) and return the store."""
    engine = create_store_engine(database_url(settings))
    try:
        check_connection(engine)
        if upgrade:
            upgrade_to_head(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise MigrationError(
            f"cannot migrate database {shown(engine.url)}: {_first_line(exc)}"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return Store.from_engine(engine)
