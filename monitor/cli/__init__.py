"""The `parity` command line: one module per command group (`run`: suite runs, `results`: result
files, `store`: the results store, `incidents`: detection and triage, `recipe`: a release's recipe
and the upgrade verdict), `common` for what they share. Packages that build on the monitor add
command groups through the `parity.commands` entry point (the scheduler's `parity scheduler` and
`parity serve` come from `jobs`), so the monitor never imports them. Whatever goes wrong in any
of them ends with one `error:` line and a non-zero exit (`common.OneLineErrors`)."""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from monitor.cli import incidents, recipe, results, run, store
from monitor.cli.common import OneLineErrors

PLUGINS = "parity.commands"

app = typer.Typer(
    cls=OneLineErrors, add_completion=False, no_args_is_help=True, help="vLLM parity monitor."
)
for command in (run.run, run.backfill):
    app.command(context_settings={"max_content_width": 100})(command)
app.command(name="env")(run.env)
app.command()(results.schema)
app.command()(results.report)
store.register(app)
incidents.register(app)
recipe.register(app)
for plugin in entry_points(group=PLUGINS):
    plugin.load()(app)
