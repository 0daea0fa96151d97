"""The `parity scheduler` and `parity serve` commands, added to the monitor's CLI through the
`parity.commands` entry point (jobs uses monitor, never the reverse)."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from jobs.first_run import first_run as run_first
from jobs.first_run import needs_first_run
from jobs.logs import configure
from jobs.scheduler import SchedulerConfigError, run_forever, stop_on_signals
from jobs.serve import ADDRESS, DASHBOARD_APP, start_dashboard, stop_dashboard
from jobs.serve import serve as serve_both
from monitor.cli.common import errors, fail, settings
from monitor.store import StoreError


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
    """Run the scheduler and the dashboard (http://127.0.0.1:PORT) until Ctrl-C or SIGTERM,
    which stop them (and a first run, which goes back to the queue) at any moment; the
    dashboard answers at once, showing a first run's progress while it runs."""
    chosen = settings()
    stopped = threading.Event()
    dashboard = None
    serving = False
    try:
        if first_run and needs_first_run(chosen):
            dashboard = start_dashboard(DASHBOARD_APP, ADDRESS, port)
            if dashboard is not None:
                errors.print(
                    f"dashboard on http://{ADDRESS}:{port} (pid {dashboard.pid}): the first "
                    "run's progress is on its Jobs page",
                    highlight=False,
                    soft_wrap=True,
                )
            if not run_first(chosen):
                return
        stop_on_signals(stopped)
        serving = True
    except KeyboardInterrupt:
        errors.print("stopped", highlight=False)
        return
    finally:
        if not serving:
            stop_dashboard(dashboard)
    configure()
    try:
        code = serve_both(chosen, port=port, stopped=stopped, dashboard=dashboard)
    except (SchedulerConfigError, StoreError) as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the scheduler's commands to the `parity` app (the `parity.commands` entry point)."""
    app.command()(scheduler)
    app.command()(serve)
