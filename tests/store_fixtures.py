"""Fixtures of the results store's tests: every store test runs on SQLite (a file per test) and
on PostgreSQL (a database created for the test session, emptied before each test, dropped at the
end). Without a server the PostgreSQL cases skip, saying how to enable them; with CI=true they
fail."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from monitor.config import Settings, get_settings
from monitor.store import Store, open_store
from monitor.store import models as m

PG_ADMIN_URL = os.environ.get(
    "PARITY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """URL of a uniquely named PostgreSQL database for this test session."""
    admin = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    shown = make_url(PG_ADMIN_URL).render_as_string(hide_password=True)
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        reason = str(exc.orig).strip().splitlines()[0]
        message = (
            f"PostgreSQL store tests need a server at {shown} ({reason}); start one there or "
            "point PARITY_TEST_PG_URL at an admin URL"
        )
        if in_ci():
            pytest.fail(f"{message} (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    name = f"parity_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def empty_pg(url: str) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'parity.db'}"
    url: str = request.getfixturevalue("pg_database")
    empty_pg(url)
    return url


@pytest.fixture
def store_settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url)


@pytest.fixture
def store(store_settings: Settings) -> Iterator[Store]:
    """An open, migrated, empty store."""
    opened = open_store(store_settings)
    yield opened
    opened.close()


@pytest.fixture
def store_cli(
    store: Store, store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    """A CliRunner whose commands use the test's store (on each backend), 200 columns wide."""
    monkeypatch.setenv("PARITY_DATABASE_URL", store_settings.database_url or "")
    monkeypatch.setenv("PARITY_DATA_DIR", str(store_settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def error_line(stderr: str) -> str:
    """The one `error:` line of a failed command (asserting there is exactly one)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def count_rows(store: Store, model: type[m.Base], *where: object) -> int:
    """How many rows of `model` the store holds (those matching `where`)."""
    with store.reading() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0
