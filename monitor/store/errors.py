"""Errors of the results store. Every message is one line naming the problem, fit for
`error: ...` on the command line."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store error."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or opened (the message names the URL without password)."""


class MigrationError(StoreError):
    """The database schema cannot be brought to this monitor's revision."""


class IngestError(StoreError):
    """A result that is valid JSON of the schema but cannot be stored (nothing was written)."""


class UnreadableRun(StoreError):
    """A stored run whose config no longer validates (written before the schema refused it)."""


class NotFound(StoreError):
    """A run or series that the store does not hold."""
