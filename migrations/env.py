"""Alembic environment of the results store. The connection comes from the caller
(`open_store`, tests) through `config.attributes["connection"]`, else from the monitor's
settings. Tables owned by others (the scheduler's job store) are left out of autogenerate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from monitor.config import Settings
from monitor.store.db import create_store_engine, database_url
from monitor.store.migrate import check_foreign_keys, foreign_keys_off, include_name
from monitor.store.models import Base, UTCDateTime


def render_item(type_: str, obj: object, _context: object) -> str | bool:
    """Generated scripts spell the store's UTC column type as plain SQLAlchemy."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        render_item=render_item,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        check_foreign_keys(connection)


def run_online() -> None:
    given = context.config.attributes.get("connection")
    if isinstance(given, Connection):
        run_on(given)
        return
    engine = given if isinstance(given, Engine) else create_store_engine(database_url(Settings()))
    with engine.connect() as connection, foreign_keys_off(connection), connection.begin():
        run_on(connection)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_online()
