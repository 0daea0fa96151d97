"""How the CLI shows what the pipeline did with a run: stored or not, and what judging it
found (one outcome line, then the findings, one line each at any terminal width)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from monitor.cli.common import fail, layout_width, plain, shown, store_failure
from monitor.cli.summary import Column, Layout, fit, total_width
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


NUMBERS: tuple[tuple[str, Callable[[Finding], str]], ...] = (
    ("baseline", lambda f: _num(f.baseline_value)),
    ("candidate", lambda f: _num(f.candidate_value)),
    ("limit", lambda f: _num(f.limit)),
    ("effect", lambda f: _num(f.effect)),
    ("floors", lambda f: "" if f.effect_in_floors is None else f"{f.effect_in_floors:.1f}"),
    ("q", lambda f: "" if f.q_value is None else f"{f.q_value:.2g}"),
)
KEEP_ORDER = ("kind", "candidate", "limit", "baseline", "floors", "q", "effect")
"""Optional columns, most needed first: kept in this order while the terminal has room."""


class FindingsTable:
    """Findings at the width they are printed at, one line each, never wrapped: full series
    names when they fit, else grouped under probe/arm headings with the least needed numbers
    left out (and said so) before a metric name is shortened."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        self.severity = Column("severity", [severity_text(f.severity) for f in self.findings])
        self.kind = Column("kind", [plain(f.kind) for f in self.findings])
        numbers = [
            Column(header, [Text(get(f)) for f in self.findings], "right")
            for header, get in NUMBERS
        ]
        self.numbers = [column for column in numbers if any(cell.plain for cell in column.cells)]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        series = Column("series", [plain(f.series) for f in self.findings])
        flat = [self.severity, self.kind, series, *self.numbers]
        if total_width(flat) <= width:
            yield Layout(flat, [c.width for c in flat], []).table(range(len(self.findings)))
            return
        metric = Column("metric", [plain(f"  {f.metric}") for f in self.findings])
        columns = [metric, self.severity, self.kind, *self.numbers]
        layout = fit(columns, width, optional=KEEP_ORDER, flexible="metric")
        groups: dict[tuple[str, str], list[int]] = {}
        for index, f in enumerate(self.findings):
            groups.setdefault((f.probe, f.arm), []).append(index)
        yield layout.table([])
        for (probe, arm), rows in groups.items():
            yield Text(shown(f"{probe}/{arm}"), style="bold", no_wrap=True, overflow="ellipsis")
            yield layout.table(rows, header=False)
        note = layout.note(width)
        if note is not None:
            yield note


def findings_table(findings: Sequence[Finding]) -> FindingsTable:
    """One line per finding: the series, what happened and the numbers against the baseline."""
    return FindingsTable(findings)


def print_outcome(console: Console, outcome: DetectionOutcome, prefix: str = "") -> None:
    base = f"baseline run {outcome.baseline_run_id}" if outcome.baseline_run_id else "no baseline"
    head = f"{prefix}run {outcome.run_id} ({outcome.release}, {base}): {outcome.action}"
    if outcome.incident_id is not None:
        head += f", incident {outcome.incident_id}"
    if outcome.confirmation_run_id is not None and outcome.action in ("opened", "updated"):
        head += f", confirmation run {outcome.confirmation_run_id} queued"
    console.print(plain(head), highlight=False)
    if outcome.draft is not None:
        console.print(findings_table(outcome.draft.findings), width=layout_width(console))


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
