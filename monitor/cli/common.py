"""What every `parity` command shares: the consoles, the one-line error and its exit code, the
settings (a bad PARITY_* variable is one line for every command), the opened store, the one
type of every id argument, the checks of file arguments, and `shown`/`plain`, through which
every stored or user-given text reaches the terminal (so it cannot act on it)."""

from __future__ import annotations

import os
import re
import signal
import stat
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.text import Text
from sqlalchemy.exc import DataError, SQLAlchemyError
from sqlalchemy.orm import Session
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential
from typer.core import TyperGroup

from monitor.config import Settings, get_settings
from monitor.engines import EngineSpecError
from monitor.errors import one_line
from monitor.pipeline import STORE_PATIENCE_S, patiently
from monitor.schema import SchemaError, SuiteResult, parse_result
from monitor.store import Store, StoreError, open_store

T = TypeVar("T")
errors = Console(stderr=True)
BAD_INPUT = 2
"""Exit code of a command refused for bad input; 1 means the work itself failed."""
MAX_ID = 2**63 - 1
"""The largest id a 64-bit signed id column holds: larger ids are refused, never looked up."""
PATIENCE_S = STORE_PATIENCE_S
"""How long a command retries (with backoff) a database that stays locked or unreachable,
each attempt after SQLite's own busy timeout, before it ends with one line saying so."""

_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def shown(value: object, *, lines: bool = False) -> str:
    """`value` as text that cannot act on a terminal: control characters (C0, DEL, C1, and
    newlines too unless `lines`), bidi controls, line separators and lone surrogates are
    written as escapes (`\\x1b`, `\\u202e`, `\\n`). Rich markup in it is left as it is: print
    it as `plain(...)` (a Text), or with markup off."""
    text = str(value)
    if lines:
        return "\n".join(_UNSAFE.sub(_escaped, line) for line in text.split("\n"))
    return _UNSAFE.sub(_escaped, text)


def plain(value: object, style: str = "", *, lines: bool = False) -> Text:
    """Stored or user-given text as a rich Text: no markup interpreted, nothing that can act on
    the terminal (see `shown`)."""
    return Text(shown(value, lines=lines), style=style)


def layout_width(console: Console) -> int:
    """The width to lay a table out in: `COLUMNS` when the user set it (a console made with a
    fixed width would ignore it), else the console's."""
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else console.width


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """End the command with one `error: ...` line (the message's lines joined, escaped) and
    `code`."""
    flat = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    errors.print(
        Text.assemble(("error:", "bold red"), " ", plain(flat)), highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def _variable(field: object) -> str:
    return "PARITY_" + str(field).upper()


def settings() -> Settings:
    """The PARITY_* settings, or the command ends with one line naming the bad variable. The
    one place the CLI loads them: every command that needs settings comes here."""
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        where = _variable(loc[0]) if loc else "PARITY_* settings"
        if len(loc) > 1 and isinstance(loc[1], (int, str)):
            where += f"[{loc[1]!r}]"
        fail(f"{where}: {str(first['msg']).removeprefix('Value error, ')}")
    except SettingsError as exc:
        # a value pydantic-settings cannot even decode (a JSON list or object that is not JSON)
        field = re.search(r'field "([^"]+)"', str(exc))
        where = _variable(field.group(1)) if field else "PARITY_* settings"
        cause = exc.__cause__
        why = f"not valid JSON ({one_line(cause)})" if cause is not None else one_line(exc)
        fail(f"{where}: {why}")
    except ValueError as exc:
        fail(f"PARITY_* settings: {one_line(exc)}")


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, StoreError) and "locked" in str(exc).lower()


def spec(parse: Callable[[str], T], text: str) -> T:
    """`parse` (a monitor.engines parser) of user-given text; whatever it cannot parse is an
    EngineSpecError. (packaging raises a bare ValueError for a release number longer than
    Python converts to int: `--since 999…9`.)"""
    try:
        return parse(text)
    except EngineSpecError:
        raise
    except ValueError:
        shown_text = text if len(text) <= 40 else f"{text[:40]}…"
        raise EngineSpecError(
            f"{shown_text!r} is not a PEP 440 version (a number in it is too long)"
        ) from None


def store(chosen: Settings) -> Store:
    """Open and upgrade the store, or end the command with one line saying why not. A
    database locked past SQLite's busy timeout is tried again with backoff for PATIENCE_S."""
    opening = retry(
        retry=retry_if_exception(_locked),
        stop=stop_after_delay(PATIENCE_S),
        wait=wait_exponential(multiplier=1, max=30),
        reraise=True,
    )
    try:
        return opening(open_store)(chosen)
    except StoreError as exc:
        fail(str(exc))


def store_failure(exc: BaseException) -> NoReturn:
    """A store or database error as the command's one line: a database still locked after
    SQLite's busy timeout says so."""
    text = one_line(exc)
    if isinstance(exc, SQLAlchemyError) and "locked" in text.lower():
        fail(f"another process kept the database locked past the busy timeout: {text}")
    fail(text)


@contextmanager
def store_errors() -> Iterator[None]:
    """Inside it, a store or database error ends the command with one line (`store_failure`)."""
    try:
        yield
    except (StoreError, SQLAlchemyError) as exc:
        store_failure(exc)


def transaction(
    chosen: Settings,
    work: Callable[[Session], T],
    *,
    write: bool = False,
    missing: str | None = None,
) -> T:
    """`work(session)` in one read (or `write`) transaction on the store, retried with backoff
    while the database is locked or unreachable (`monitor.pipeline.patiently`, for PATIENCE_S);
    a store or database error ends the command with one line. An id the database's column
    cannot even hold (PostgreSQL: "integer out of range") is the `missing` line."""
    opened = store(chosen)

    def once() -> T:
        with opened.writing() if write else opened.reading() as session:
            return work(session)

    try:
        with store_errors():
            try:
                return patiently(PATIENCE_S, once)
            except DataError as exc:
                if missing is not None and "out of range" in one_line(exc):
                    fail(missing)
                raise
    finally:
        opened.close()


@contextmanager
def reading(chosen: Settings) -> Iterator[Session]:
    """A read transaction on the store (not retried: for work that cannot be repeated, such
    as streaming rows out); a store or database error ends the command with one line."""
    opened = store(chosen)
    try:
        with store_errors(), opened.reading() as session:
            yield session
    finally:
        opened.close()


class BadId(typer.BadParameter):
    """An id argument that is not a positive whole number a 64-bit id column holds; its
    message is complete (it names the argument)."""

    def format_message(self) -> str:
        return self.message


def parse_id(text: str, name: str = "RUN", what: str = "run") -> int:
    """A positive whole number (ASCII digits only) that fits a 64-bit signed id column."""
    digits = text.isascii() and text.isdigit()
    # no int() of a huge digit string: Python refuses more than 4300 digits
    too_big = digits and (len(text.lstrip("0")) > len(str(MAX_ID)) or int(text) > MAX_ID)
    if not digits or too_big or int(text) == 0:
        article = "an" if what[:1] in ("a", "e", "i", "o", "u") else "a"
        limit = f" (at most {MAX_ID})" if too_big else ""
        shown_text = text if len(text) <= 40 else f"{text[:40]}…"
        raise BadId(f"{name} must be {article} {what} number such as 12, not {shown_text!r}{limit}")
    return int(text)


def id_argument(name: str, what: str, help: str) -> Any:
    """The one typer argument every id takes (`parity show RUN`, `compare A B`, `triage ID`):
    refused with one line naming it unless `parse_id` accepts it."""

    def parse(text: Any) -> int:
        return text if isinstance(text, int) else parse_id(str(text), name, what)

    return typer.Argument(help=help, parser=parse, metavar=name, show_default=False)


RunId = Annotated[int, id_argument("RUN", "run", "run number (see `parity runs`)")]


def _no_nul(path: Path, flag: str) -> None:
    if "\x00" in str(path):
        fail(f"{flag}: {str(path)!r} is not a usable path (it holds a NUL byte)")


def check_output(path: Path, flag: str) -> None:
    """A file the command is about to write: not a directory, its folder not a file (nothing
    is created yet; what cannot be written is still refused with one line when written)."""
    _no_nul(path, flag)
    if path.name in ("", ".", "..") or path.is_dir():
        fail(f"{flag}: {shown(path)} is a directory; name a file to write")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        fail(f"{flag}: cannot write {shown(path)}: {shown(parent)} is not a directory")


def load_result_file(path: Path) -> SuiteResult:
    """A result file, or the command ends with one line naming it and the problem: not a
    readable regular file (a directory, a device), not UTF-8, not a valid result."""
    _no_nul(path, "RESULT_FILE")
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        fail(f"cannot read result {shown(path)}: {exc.strerror}")
    if stat.S_ISDIR(mode):
        fail(f"cannot read result {shown(path)}: it is a directory")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        fail(f"cannot read result {shown(path)}: not a regular file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        fail(f"cannot read result {shown(path)}: {exc.strerror}")
    except UnicodeDecodeError as exc:
        fail(f"{shown(path)}: not UTF-8 text (byte {exc.start})")
    try:
        return parse_result(text, source=str(path))
    except SchemaError as exc:
        fail(str(exc))
    except (ValueError, RecursionError) as exc:
        # JSON the decoder refuses beyond its syntax: too deeply nested, an integer too long
        fail(f"{shown(path)}: not a valid result ({one_line(exc)})")


def usage_line(exc: typer.TyperException) -> str:
    """A usage error (unknown command or option, a value typer could not parse) as one line,
    with where to find help."""
    message = exc.format_message().replace("Value error, ", "")
    where = getattr(getattr(exc, "ctx", None), "command_path", None)
    if exc.exit_code == BAD_INPUT and where:
        message += f" (see `{where} --help`)"
    return message


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside it, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so that a stopped command
    unwinds (a suite it started is killed with its engines) instead of orphaning them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class OneLineErrors(TyperGroup):
    """The `parity` app's group: whatever goes wrong, the command ends with one `error:` line
    and a non-zero exit, never a traceback or a usage panel. Usage errors exit 2, like the
    commands' own refusals; an error nothing expected exits 1 with its type and message, its
    traceback kept in a file that the line names."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        given = sys.argv[1:] if args is None else list(args)
        for index, arg in enumerate(given, start=1):
            # bytes that are not UTF-8 (surrogate-escaped): no database or terminal takes them
            if _SURROGATE.search(arg):
                _print_error(f"argument {index} is not UTF-8 text: {arg!r}")
                sys.exit(BAD_INPUT)
        try:
            with sigterm_interrupts():
                code = super().main(
                    args, prog_name, complete_var, False, windows_expand_args, **extra
                )
        except typer.TyperException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # its help is printed already
                _print_error(usage_line(exc))
            sys.exit(exc.exit_code)
        except typer.Abort:
            _print_error("aborted")
            sys.exit(1)
        except Exception as exc:  # the last resort: still one line, the traceback in a file
            _print_error(_unexpected(exc))
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _print_error(message: str) -> None:
    with suppress(typer.Exit):
        fail(message)


def _unexpected(exc: Exception) -> str:
    line = f"unexpected {type(exc).__name__}: {one_line(exc)} (a bug in parity"
    try:
        handle, name = tempfile.mkstemp(prefix="parity-traceback-", suffix=".txt")
        with os.fdopen(handle, "w", errors="backslashreplace") as stream:
            traceback.print_exception(exc, file=stream)
    except OSError:
        return line + ")"
    return line + f"; traceback in {name})"
