"""How the CLI shows what the pipeline did with a run: stored or not, and what judging it
found (the findings table, one outcome line)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from monitor.cli.common import fail, plain, shown, store_failure
from monitor.config import Settings
from monitor.detection.findings import Finding
from monitor.pipeline import Finished, finish
from monitor.schema import SuiteResult
from monitor.store import Store, StoreError

if TYPE_CHECKING:
    from monitor.judge import DetectionOutcome

SEVERITY_STYLE = {"info": "dim", "minor": "yellow", "major": "bold red", "critical": "bold red"}


def severity_text(severity: str) -> Text:
    return plain(severity, SEVERITY_STYLE.get(severity, ""))


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def findings_table(findings: list[Finding]) -> Table:
    """One row per finding: the series, what happened and the numbers against the baseline."""
    table = Table("severity", "kind")
    table.add_column("series", overflow="fold", ratio=1)
    for number in ("baseline", "candidate", "limit", "effect", "floors", "q"):
        table.add_column(number, justify="right")
    for f in findings:
        table.add_row(
            severity_text(f.severity),
            plain(f.kind),
            plain(f.series),
            _num(f.baseline_value),
            _num(f.candidate_value),
            _num(f.limit),
            _num(f.effect),
            "" if f.effect_in_floors is None else f"{f.effect_in_floors:.1f}",
            "" if f.q_value is None else f"{f.q_value:.2g}",
        )
    return table


def print_outcome(console: Console, outcome: DetectionOutcome, prefix: str = "") -> None:
    base = f"baseline run {outcome.baseline_run_id}" if outcome.baseline_run_id else "no baseline"
    head = f"{prefix}run {outcome.run_id} ({outcome.release}, {base}): {outcome.action}"
    if outcome.incident_id is not None:
        head += f", incident {outcome.incident_id}"
    if outcome.confirmation_run_id is not None and outcome.action in ("opened", "updated"):
        head += f", confirmation run {outcome.confirmation_run_id} queued"
    console.print(plain(head), highlight=False)
    if outcome.draft is not None:
        console.print(findings_table(list(outcome.draft.findings)))


def print_finished(finished: Finished, console: Console) -> None:
    """ "stored as run N" (or already stored), then what judging it did, or why it could not."""
    verb = "stored as" if finished.created else "already stored as"
    console.print(f"{verb} run {finished.run_id}", highlight=False)
    if finished.problem is not None:
        console.print(
            plain(f"detection: run {finished.run_id} not judged: {finished.problem}"),
            highlight=False,
        )
    elif finished.judged is not None and finished.judged.action != "skipped":
        print_outcome(console, finished.judged, prefix="detection: ")


def store_and_judge(
    opened: Store, chosen: Settings, result: SuiteResult, runner: str, where: str
) -> None:
    """Take a result through the pipeline's finish step (the store is closed after) and show
    what it did; a result that cannot be stored ends the command with one line naming `where`
    it is kept."""
    try:
        finished = finish(opened, chosen, result, runner=runner)
    except StoreError as exc:
        fail(f"{shown(where)}: {exc} (nothing stored; `parity ingest` stores it later)")
    except SQLAlchemyError as exc:
        store_failure(exc)
    finally:
        opened.close()
    print_finished(finished, Console())
