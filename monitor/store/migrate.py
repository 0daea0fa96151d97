"""Schema migrations (Alembic, scripts in `migrations/`): locate them, read a database's revision,
upgrade it to head under a lock so that two processes starting at once migrate once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, text

from monitor.store.errors import MigrationError

SQLITE_IMMEDIATE = "sqlite_immediate"
PG_MIGRATION_LOCK = 0x70617269  # pg_advisory_xact_lock key, "pari"
EXCLUDED_TABLES = frozenset({"apscheduler_jobs"})


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Autogenerate's filter: tables other parts own in the same database are not ours."""
    return not (type_ == "table" and name in EXCLUDED_TABLES)


def migrations_dir() -> Path:
    """`migrations/` beside the package (checkout) or packed inside it (wheel)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise MigrationError(f"migration scripts not found beside {package}")


def alembic_config(connection: Connection | Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


def _check_known(current: set[str], script: ScriptDirectory, url: str) -> None:
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            raise MigrationError(
                f"database {url} is at schema revision {revision}, which this monitor does not "
                "know (written by a newer version?)"
            ) from None


@contextmanager
def foreign_keys_off(connection: Connection) -> Iterator[Connection]:
    """SQLite only: a batch migration copies a table and drops the old one, and with foreign
    keys on that drop cascades into every table referencing it (a run's metrics, strata and
    traces would be deleted). They are switched off around the migration, outside any
    transaction as SQLite requires, and the migrated data is checked instead
    (`check_foreign_keys`)."""
    if connection.dialect.name != "sqlite":
        yield connection
        return
    if connection.in_transaction():
        raise MigrationError("foreign keys can only be switched off outside a transaction")
    raw = connection.connection.dbapi_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys = OFF")
    try:
        yield connection
    finally:
        raw.execute("PRAGMA foreign_keys = ON")


def check_foreign_keys(connection: Connection) -> None:
    """SQLite only: fail the migration (it rolls back) if it left rows pointing nowhere."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        tables = sorted({str(row[0]) for row in broken})
        raise MigrationError(
            f"migration left {len(broken)} row(s) with dangling foreign keys in "
            f"{', '.join(tables)}; nothing was changed"
        )


def upgrade_to_head(engine: Engine) -> bool:
    """Bring the schema to head; True when something was migrated. Cheap when already there."""
    heads = head_revisions()
    with engine.connect() as connection:
        if current_revisions(connection) == heads:
            return False
    url = engine.url.render_as_string(hide_password=True)
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    writer = engine.execution_options(**{SQLITE_IMMEDIATE: True})
    with writer.connect() as connection, foreign_keys_off(connection), connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
            )
        current = current_revisions(connection)
        if current == heads:
            return False
        _check_known(current, script, url)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return True
