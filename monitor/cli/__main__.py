"""`python -m monitor.cli`: the `parity` command line."""

from monitor.cli import app

app()
