"""How the CLI shows detection: the findings table, one outcome line, and detection of a result
the moment a command stores it (`parity run`, `ingest`, `backfill`), so every stored run is
judged against its baseline without waiting for the scheduler."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from monitor.config import Settings
from monitor.detection.errors import DetectionError
from monitor.detection.incidents import Finding
from monitor.store import Store, StoreError
from monitor.store.incidents import DetectionOutcome, detect_and_record

SEVERITY_STYLE = {"info": "dim", "minor": "yellow", "major": "bold red", "critical": "bold red"}


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
            f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]",
            f.kind,
            f.series,
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
    console.print(head, highlight=False)
    if outcome.draft is not None:
        console.print(findings_table(list(outcome.draft.findings)))


def detect_stored(store: Store, run_id: int, settings: Settings, console: Console) -> None:
    """Judge a run a command has just stored. Detection that cannot judge it is one line; the
    stored run is kept either way (`parity detect` judges it again later)."""
    try:
        outcome = detect_and_record(store, run_id, settings)
    except (DetectionError, StoreError) as exc:
        console.print(f"detection: run {run_id} not judged: {exc}", highlight=False)
        return
    if outcome.action != "skipped":
        print_outcome(console, outcome, prefix="detection: ")
