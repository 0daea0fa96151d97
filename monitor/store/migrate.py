"""Schema migrations (Alembic, scripts in `migrations/`): locate them, read a database's revision,
upgrade it to head under a lock so that two processes starting at once migrate once, downgrade
it to an earlier revision. A downgrade step that would delete stored data refuses unless data
loss is allowed (`refuse_data_loss`); what a step can keep instead it keeps in a `kept_…` table
that the step's upgrade reads back and drops (see docs/store.md, "Migrations")."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from monitor.store.errors import MigrationError

SQLITE_IMMEDIATE = "sqlite_immediate"
PG_MIGRATION_LOCK = 0x70617269  # pg_advisory_xact_lock key, "pari"
EXCLUDED_TABLES = frozenset({"apscheduler_jobs"})
KEPT_PREFIX = "kept_"
"""Tables a downgrade step leaves behind for its upgrade to read back (`kept_0004_contrast_arms`
…); they exist only below the revision that wrote them."""
ALLOW_DATA_LOSS = "allow_data_loss"
"""The x-argument (`alembic -x allow_data_loss=1 downgrade …`) and the `Config.attributes` key
(`downgrade(..., allow_data_loss=True)`) that let a downgrade delete stored data."""
_YES = frozenset({"", "1", "true", "yes", "on"})
_NO = frozenset({"0", "false", "no", "off"})
log = logging.getLogger(__name__)


class DataLossRefused(MigrationError, CommandError):
    """A downgrade step that would delete stored data, not explicitly allowed; nothing was
    changed. Also an Alembic CommandError, so the `alembic` command prints it as one line."""


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Autogenerate's filter: tables other parts own in the same database are not ours, and
    neither are the tables a downgrade keeps for its upgrade."""
    return not (
        type_ == "table" and (name in EXCLUDED_TABLES or (name or "").startswith(KEPT_PREFIX))
    )


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


def counted(number: int, singular: str, plural: str | None = None) -> str:
    """`1 alert`, `4 alerts`, `2 series`."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _joined(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else f"{', '.join(phrases[:-1])} and {phrases[-1]}"


def data_loss_allowed() -> bool:
    """Inside a migration: whether its caller allowed deleting data, through
    `config.attributes["allow_data_loss"]` or the x-argument `allow_data_loss=1`."""
    from alembic import context

    if context.config.attributes.get(ALLOW_DATA_LOSS):
        return True
    given = context.get_x_argument(as_dictionary=True)
    assert isinstance(given, dict)
    if ALLOW_DATA_LOSS not in given:
        return False
    value = given[ALLOW_DATA_LOSS].strip().lower()
    if value not in _YES | _NO:
        raise DataLossRefused(
            f"x-argument {ALLOW_DATA_LOSS} must be 1 or 0, not {given[ALLOW_DATA_LOSS]!r}; "
            "nothing was changed"
        )
    return value in _YES


def refuse_data_loss(revision: str, losses: Iterable[str]) -> None:
    """Called by the downgrade of `revision` before it changes anything, with what it would
    delete (`counted(4, "incident")` …, empty phrases left out): raises DataLossRefused naming
    them unless data loss is allowed (then it only logs them). Nothing lost, nothing said."""
    phrases = [phrase for phrase in losses if phrase]
    if not phrases:
        return
    what = f"downgrading below {revision} would delete {_joined(phrases)}"
    if data_loss_allowed():
        log.warning("%s; allowed (%s=1)", what, ALLOW_DATA_LOSS)
        return
    raise DataLossRefused(
        f"{what}; pass --allow-data-loss / set x-argument {ALLOW_DATA_LOSS}=1 to proceed"
    )


def has_table(connection: Connection, name: str) -> bool:
    return inspect(connection).has_table(name)


def keep_rows(connection: Connection, table: str, select: str) -> int:
    """Inside a downgrade: `CREATE TABLE table AS select` (replacing a stale one left by an
    earlier downgrade that was never upgraded back), only when the select finds rows; returns
    how many it kept."""
    assert table.startswith(KEPT_PREFIX)
    drop_kept(connection, table)
    found = connection.execute(text(f"SELECT count(*) FROM ({select}) AS found")).scalar_one()
    if found:
        connection.execute(text(f"CREATE TABLE {table} AS {select}"))
    return int(found)


def drop_kept(connection: Connection, *tables: str) -> None:
    for table in tables:
        assert table.startswith(KEPT_PREFIX)
        if has_table(connection, table):
            connection.execute(text(f"DROP TABLE {table}"))


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


def downgrade(engine: Engine, revision: str, *, allow_data_loss: bool = False) -> None:
    """Bring the schema down to `revision` (an earlier revision id, or "base"), under the same
    lock as `upgrade_to_head`, in one transaction. Unless `allow_data_loss`, a step that would
    delete stored data raises DataLossRefused (one line naming the revision and what would be
    lost) and nothing is changed; what a step can keep it keeps for its upgrade."""
    url = engine.url.render_as_string(hide_password=True)
    config = alembic_config()
    config.attributes[ALLOW_DATA_LOSS] = allow_data_loss
    script = ScriptDirectory.from_config(config)
    writer = engine.execution_options(**{SQLITE_IMMEDIATE: True})
    with writer.connect() as connection, foreign_keys_off(connection), connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
            )
        _check_known(current_revisions(connection), script, url)
        config.attributes["connection"] = connection
        try:
            command.downgrade(config, revision)
        except DataLossRefused:
            raise
        except CommandError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MigrationError(
                f"cannot downgrade database {url} to {revision}: {first}"
            ) from None
