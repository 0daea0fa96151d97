"""The readable summary of one result: a table per arm and each probe's finding."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from monitor.schema import SuiteResult

VERDICT_STYLE = {"pass": "green", "fail": "bold red", "n/a": "dim"}
COLUMNS = (
    ("k3", "k3"),
    ("mean_abs_delta", "mean|δ|"),
    ("token_mult_prob_error", "tok mult err"),
    ("clip_fraction", "clip frac"),
)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"


def _short(reason: str) -> str:
    """'token_mult_prob_error = 1.387 > 1.05 (NeMo-RL gate)' -> 'token_mult_prob_error>1.05'."""
    metric, _, rest = reason.partition(" = ")
    limit = rest.split(" > ", 1)[-1].split(" ", 1)[0]
    return f"{metric}>{limit}" if rest else reason


def summary(result: SuiteResult) -> Group:
    title = f"{result.config.engine} · {result.config.model} · {result.status}"
    if result.versions:
        title += f" · vLLM {result.versions.vllm} on {result.versions.device}"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("probe", no_wrap=True)
    table.add_column("arm", no_wrap=True)
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("verdict")
    for probe in result.probes:
        for index, arm in enumerate(probe.arms):
            name = probe.name if index == 0 else ""
            if not arm.applicable:
                cells = ["-"] * len(COLUMNS)
                verdict = Text(f"n/a: {arm.reason}", style="dim")
            elif not arm.gated:
                cells = [_number(arm.metrics.get(key)) for key, _ in COLUMNS]
                verdict = Text("contrast", style="dim")
            else:
                cells = [_number(arm.metrics.get(key)) for key, _ in COLUMNS]
                verdict = Text(arm.verdict, style=VERDICT_STYLE[arm.verdict])
                if arm.verdict_reasons:
                    verdict.append(f" {_short(arm.verdict_reasons[0])}", style="dim")
            table.add_row(name, arm.arm, *cells, verdict)
        table.add_section()
    findings = Text()
    for probe in result.probes:
        findings.append(f"{probe.name}: ", style="bold")
        findings.append(f"{probe.finding}\n")
    parts: list[Table | Text] = [table, findings]
    if result.status == "failed":
        parts.append(Text(f"suite failed: {result.error}", style="bold red"))
    return Group(*parts)


def print_summary(result: SuiteResult, console: Console | None = None) -> None:
    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 130)
    console.print(summary(result))
