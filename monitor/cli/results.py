"""`parity report` and `parity schema`: a result file read as it is, and the file's contract."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from monitor.cli.common import load_result_file, settings
from monitor.cli.summary import print_summary
from monitor.schema import json_schema


def schema() -> None:
    """Print the JSON Schema of the suite's result file."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def report(result_file: Path) -> None:
    """Print the summary table of a result file, judged with the configured tolerances."""
    chosen = settings()
    result = load_result_file(result_file)
    print_summary(result, chosen.tolerances, Console())
