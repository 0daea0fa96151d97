"""The readable summary of one result: a line per arm, under its probe, with its numbers and
its verdict under the configured tolerances, then each probe's finding. The tables here are
laid out for the width they are printed at (`fit`): one line per row, never wrapped."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderResult
from rich.table import Table
from rich.text import Text

from monitor.cli.common import layout_width, plain, shown
from monitor.gates import Tolerances
from monitor.schema import SuiteResult
from monitor.verdicts import judge_arm

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "n/a": "dim"}
COLUMNS = (
    ("k3", "k3"),
    ("mean_abs_delta", "mean|δ|"),
    ("token_mult_prob_error", "tok mult err"),
    ("clip_fraction", "clip frac"),
)
KEEP_ORDER = ("tok mult err", "mean|δ|", "k3", "clip frac")
"""The numbers, most needed first: kept in this order while the terminal has room."""
VERDICT_MIN = 20
"""The verdict column's share before a number is added: 'fail' and most of its reason."""
PIPED_WIDTH = 130
"""The width of a summary printed to a pipe or file when COLUMNS does not say."""
GAP = 2


def number(value: float | None) -> str:
    """A metric value for a table: 4 significant digits, small values in scientific notation."""
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def verdict_text(verdict: str | None) -> Text:
    return Text(verdict or "-", style=VERDICT_STYLE.get(verdict or "", "dim"))


def _short(reason: str) -> str:
    """'token_mult_prob_error = 1.387 > 1.05 (NeMo-RL gate)' -> 'token_mult_prob_error>1.05'."""
    metric, _, rest = reason.partition(" = ")
    limit = rest.split(" > ", 1)[-1].split(" ", 1)[0]
    return f"{metric}>{limit}" if rest else reason


@dataclass(frozen=True)
class Column:
    """One column of a table laid out to a width: its header, its cells, how they align."""

    header: str
    cells: list[Text]
    justify: JustifyMethod = "left"

    @property
    def width(self) -> int:
        return max([cell_len(self.header), *(cell.cell_len for cell in self.cells)])


@dataclass(frozen=True)
class Layout:
    """The columns that fit, their widths, and the headers left out for want of room."""

    columns: list[Column]
    widths: list[int]
    left_out: list[str]

    def table(self, rows: Sequence[int], *, header: bool = True) -> Table:
        """`rows` at the fixed widths, so that tables printed one after another align."""
        table = Table(box=None, padding=(0, 1), pad_edge=False, show_header=header)
        for column, width in zip(self.columns, self.widths, strict=True):
            table.add_column(
                column.header,
                justify=column.justify,
                width=width,
                no_wrap=True,
                overflow="ellipsis",
            )
        for row in rows:
            table.add_row(*(column.cells[row] for column in self.columns))
        return table

    def note(self, width: int) -> Text | None:
        if not self.left_out:
            return None
        text = f"left out at {width} columns: {', '.join(self.left_out)}"
        return Text(text, style="dim", no_wrap=True, overflow="ellipsis")


def total_width(columns: Sequence[Column]) -> int:
    return sum(column.width for column in columns) + GAP * (len(columns) - 1)


def fit(
    columns: Sequence[Column],
    width: int,
    *,
    optional: Sequence[str],
    flexible: str,
    flexible_min: int | None = None,
) -> Layout:
    """The columns (in their order) that fit in `width`: every one not `optional`, then the
    optional ones in the order given until one does not fit with `flexible` at `flexible_min`
    (default: its full width); `flexible` takes the rest, cut with an ellipsis only if it must."""
    flex = next(column for column in columns if column.header == flexible)
    share = flex.width if flexible_min is None else min(flex.width, flexible_min)

    def need(kept: set[str]) -> int:
        chosen = [c for c in columns if c.header in kept]
        return total_width(chosen) - flex.width + share

    kept = {c.header for c in columns if c.header not in optional}
    for header in optional:
        if need(kept | {header}) > width:
            break
        kept.add(header)
    chosen = [c for c in columns if c.header in kept]
    room = width - (total_width(chosen) - flex.width)
    widths = [max(1, min(c.width, room)) if c is flex else c.width for c in chosen]
    return Layout(chosen, widths, [c.header for c in columns if c.header not in kept])


def _verdict(result: SuiteResult, tolerances: Tolerances) -> list[tuple[str, str, Text]]:
    """(probe, arm, verdict with its first reason) of every arm, in the result's order."""
    rows = []
    for probe in result.probes:
        for arm in probe.arms:
            if not arm.applicable:
                verdict = plain(f"n/a: {arm.reason}", "dim")
            elif not arm.gated:
                verdict = Text("contrast", style="dim")
            else:
                judged = judge_arm(arm, tolerances)
                verdict = verdict_text(judged.verdict)
                if judged.reasons:
                    verdict.append(shown(f" {_short(judged.reasons[0])}"), style="dim")
            rows.append((probe.name, arm.arm, verdict))
    return rows


class SummaryTable:
    """The arms of a result under their probes, one line each at the width printed at."""

    def __init__(self, result: SuiteResult, tolerances: Tolerances) -> None:
        self.result = result
        self.rows = _verdict(result, tolerances)
        arms = [arm for probe in result.probes for arm in probe.arms]
        numbers = [
            Column(header, [Text(number(arm.metrics.get(key))) for arm in arms], "right")
            for key, header in COLUMNS
        ]
        self.columns = [
            Column("arm", [plain(f"  {arm}") for _, arm, _ in self.rows]),
            *numbers,
            Column("verdict", [verdict for _, _, verdict in self.rows]),
        ]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        layout = fit(
            self.columns, width, optional=KEEP_ORDER, flexible="verdict", flexible_min=VERDICT_MIN
        )
        yield layout.table([])
        probes: dict[str, list[int]] = {}
        for index, (probe, _, _) in enumerate(self.rows):
            probes.setdefault(probe, []).append(index)
        for probe, rows in probes.items():
            yield Text(shown(probe), style="bold", no_wrap=True, overflow="ellipsis")
            yield layout.table(rows, header=False)
        note = layout.note(width)
        if note is not None:
            yield note


def summary(result: SuiteResult, tolerances: Tolerances) -> Group:
    title = f"{result.config.engine} · {result.config.model} · {result.status}"
    if result.versions:
        title += f" · vLLM {result.versions.vllm} on {result.versions.device}"
    findings = Text()
    for probe in result.probes:
        findings.append(shown(f"{probe.name}: "), style="bold")
        findings.append(shown(probe.finding, lines=True) + "\n")
    parts: list[Text | SummaryTable] = [
        Text(shown(title), style="italic", no_wrap=True, overflow="ellipsis"),
        SummaryTable(result, tolerances),
        findings,
    ]
    if result.status == "failed":
        parts.append(plain(f"suite failed: {result.error}", "bold red"))
    return Group(*parts)


def print_summary(result: SuiteResult, tolerances: Tolerances, console: Console) -> None:
    """Print the summary at the terminal's width (COLUMNS when set; a pipe gets 130)."""
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = max(console.width, PIPED_WIDTH)
    console.print(summary(result, tolerances), width=layout_width(console))
