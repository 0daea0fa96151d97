"""The `parity scheduler` and `parity serve` commands. The scheduler lives in `jobs/`, which uses
`monitor`; it is imported inside the commands only, so `monitor` never depends on it."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from monitor.cli_store import fail, reading
from monitor.config import Settings, get_settings
from monitor.store import StoreError
from monitor.store.queries import list_runs


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "PARITY_" + "_".join(str(part) for part in first["loc"]).upper()
        fail(f"{where}: {first['msg'].removeprefix('Value error, ')}")


def scheduler() -> None:
    """Run the scheduler until Ctrl-C: discovery, queued and requested runs, nightly runs."""
    from jobs.logs import configure
    from jobs.scheduler import SchedulerConfigError, run_forever

    settings = _settings()
    configure()
    try:
        run_forever(settings)
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
    from jobs.logs import configure
    from jobs.scheduler import SchedulerConfigError
    from jobs.serve import serve as serve_both

    settings = _settings()
    if first_run:
        with reading(settings) as session:
            has_data = bool(list_runs(session, status="succeeded", limit=1))
        if not has_data:
            from monitor.cli import run

            run()
    configure()
    try:
        code = serve_both(settings, port=port)
    except (SchedulerConfigError, StoreError) as exc:
        fail(str(exc))
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Add the scheduler's commands to the `parity` app."""
    app.command()(scheduler)
    app.command()(serve)
