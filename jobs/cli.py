"""The `parity scheduler` and `parity serve` commands, added to the monitor's CLI through the
`parity.commands` entry point (jobs uses monitor, never the reverse)."""

from __future__ import annotations

from typing import Annotated

import typer

from jobs.logs import configure
from jobs.scheduler import SchedulerConfigError, run_forever
from jobs.serve import serve as serve_both
from monitor.cli.common import fail, reading, settings
from monitor.store import StoreError
from monitor.store.queries import list_runs


def scheduler() -> None:
    """Run the scheduler until Ctrl-C: discovery, queued and requested runs, nightly runs."""
    chosen = settings()
    configure()
    try:
        run_forever(chosen)
    except (SchedulerConfigError, StoreError) as exc:
        fail(str(exc))


def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="dashboard port")] = 8501,
    first_run: Annotated[
        bool,
        typer.Option(help="first run the suite on the defaults if no run has succeeded yet"),
    ] = False,
) -> None:
    """Run the scheduler and the dashboard (http://127.0.0.1:PORT) until Ctrl-C."""
    chosen = settings()
    if first_run:
        with reading(chosen) as session:
            has_data = bool(list_runs(session, status="succeeded", limit=1))
        if not has_data:
            from monitor.cli.run import run

            run()
    configure()
    try:
        code = serve_both(chosen, port=port)
    except (SchedulerConfigError, StoreError) as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the scheduler's commands to the `parity` app (the `parity.commands` entry point)."""
    app.command()(scheduler)
    app.command()(serve)
