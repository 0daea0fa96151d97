"""The results store: every suite result in a database (SQLite by default, PostgreSQL for a
team), schema managed by Alembic. Writes go through `ingest`, reads through `queries`."""

from monitor.store.db import Store, database_url, open_store
from monitor.store.errors import IngestError, MigrationError, NotFound, StoreError, StoreUnavailable
from monitor.store.ingest import IngestOutcome, ingest_result, record_release

__all__ = [
    "IngestError",
    "IngestOutcome",
    "MigrationError",
    "NotFound",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "database_url",
    "ingest_result",
    "open_store",
    "record_release",
]
