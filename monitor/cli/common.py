"""What every `parity` command shares: the consoles, the one-line error and its exit code, the
settings (a bad PARITY_* variable is one line for every command) and the opened store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.orm import Session

from monitor.config import Settings, get_settings
from monitor.errors import one_line
from monitor.store import Store, StoreError, open_store

errors = Console(stderr=True)
BAD_INPUT = 2
"""Exit code of a command refused for bad input; 1 means the work itself failed."""


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


def settings() -> Settings:
    """The PARITY_* settings, or the command ends with one line naming the bad variable."""
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "PARITY_" + "_".join(str(part) for part in first["loc"]).upper()
        fail(f"{where}: {str(first['msg']).removeprefix('Value error, ')}")


def store(chosen: Settings) -> Store:
    """Open and upgrade the store, or end the command with one line saying why not."""
    try:
        return open_store(chosen)
    except StoreError as exc:
        fail(str(exc))


@contextmanager
def reading(chosen: Settings) -> Iterator[Session]:
    """A read transaction on the store; a store error ends the command with one line."""
    opened = store(chosen)
    try:
        with opened.reading() as session:
            yield session
    except StoreError as exc:
        fail(one_line(exc))
    finally:
        opened.close()


def run_number(text: str, what: str = "RUN") -> int:
    if not text.isdigit() or int(text) < 1:
        fail(f"{what} must be a run number such as 12, not {text!r}")
    return int(text)
