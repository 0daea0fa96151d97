"""The results store: every suite result in a database (SQLite by default, PostgreSQL for a
team), schema managed by Alembic. It only stores: results go in through `ingest`, the run
queue's lifecycle through `queue`, reads through `queries` and `incident_reads`; judging,
detection and runners live outside and use it."""

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
