"""The `parity detect`, `parity incidents` and `parity triage` commands: regression detection
on demand, the stored incidents, and their triage."""

from __future__ import annotations

import getpass
from functools import partial
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from monitor.cli import common
from monitor.cli.common import (
    fail,
    id_argument,
    plain,
    settings,
    spec,
    store,
    store_errors,
    transaction,
)
from monitor.cli.findings import print_outcome, severity_text
from monitor.detection.errors import DetectionError
from monitor.engines import EngineSpecError, parse_package, parse_version
from monitor.incidents.triage import parse_status, triage
from monitor.pipeline import patiently
from monitor.store import StoreError
from monitor.store.incident_reads import list_incidents, release_runs

out = Console(width=200)


def detect(
    release: Annotated[
        str | None, typer.Option(help="version to judge; default: the newest with a run")
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="engine package (default PARITY_ENGINE_PACKAGE)")
    ] = None,
) -> None:
    """Judge a release's newest run of each configuration against its baseline now; a new
    regression opens an incident and queues its confirmation run."""
    from monitor.judge import judge_run  # its statistics take seconds to import: only here

    chosen = settings()
    try:
        package = parse_package(engine or chosen.engine_package)
        version = str(spec(parse_version, release)) if release is not None else None
    except EngineSpecError as exc:
        fail(str(exc))
    runs = transaction(chosen, lambda session: release_runs(session, package, version))
    if not runs:
        what = f"{package}=={version}" if version else package
        fail(f"no succeeded run of {what} in the store to judge")
    opened = store(chosen)
    try:
        with store_errors():
            for run in runs:
                judging = partial(judge_run, opened, run.run_id, chosen)
                print_outcome(out, patiently(common.PATIENCE_S, judging))
    except DetectionError as exc:
        fail(str(exc))
    finally:
        opened.close()


def incidents(
    status: Annotated[
        list[str] | None, typer.Option(help="only these statuses (repeatable)")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="only this engine package")] = None,
    open_only: Annotated[
        bool, typer.Option("--open", help="only new or investigating, not refuted")
    ] = False,
) -> None:
    """The stored incidents, newest release first."""
    chosen = settings()
    try:
        statuses = [str(parse_status(s)) for s in status or []]
        package = parse_package(engine) if engine else None
    except (StoreError, EngineSpecError) as exc:
        fail(str(exc))
    rows = transaction(
        chosen,
        lambda session: list_incidents(
            session, status=statuses, package=package, open_only=open_only
        ),
    )
    if not rows:
        out.print("no incidents")
        return
    table = Table(
        "id", "release", "severity", "status", "confirmation", "owner", "probes", "metrics"
    )
    for row in rows:
        table.add_row(
            str(row.id),
            plain(row.release),
            severity_text(row.severity),
            plain(row.status),
            plain(row.confirmation),
            plain(row.owner or ""),
            plain(", ".join(row.probes)),
            plain(", ".join(row.metrics)),
        )
    out.print(table)


def triage_command(
    incident_id: Annotated[
        int, id_argument("INCIDENT_ID", "incident", "incident id (see `parity incidents`)")
    ],
    status: Annotated[
        str, typer.Option(help="new, investigating, intended, false_positive or fixed")
    ],
    owner: Annotated[str | None, typer.Option(help="who owns it from now on")] = None,
    note: Annotated[str, typer.Option(help="why")] = "",
    by: Annotated[str | None, typer.Option(help="who triages (default: your login)")] = None,
) -> None:
    """Set an incident's status, owner and note (recorded with who and when); "intended"
    makes the release the baseline of later detection."""
    who = by or _login()
    view = transaction(
        settings(),
        lambda session: triage(session, incident_id, status, owner, note, who),
        write=True,
        missing=f"no incident {incident_id} in the store",
    )
    out.print(
        plain(
            f"incident {view.id} ({view.release}) is now {view.status}"
            + (f", owner {view.owner}" if view.owner else "")
        ),
        highlight=False,
    )


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment nor a passwd entry
        fail("cannot tell who you are: name yourself with --by")


def register(app: typer.Typer) -> None:
    """Add detection's commands to the `parity` app."""
    app.command()(detect)
    app.command()(incidents)
    app.command("triage")(triage_command)
