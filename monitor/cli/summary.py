"""The readable summary of one result: a row per arm with its numbers and its verdict under
the configured tolerances, and each probe's finding."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from monitor.cli.common import plain, shown
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


def summary(result: SuiteResult, tolerances: Tolerances) -> Group:
    title = f"{result.config.engine} · {result.config.model} · {result.status}"
    if result.versions:
        title += f" · vLLM {result.versions.vllm} on {result.versions.device}"
    table = Table(title=plain(title), title_justify="left", show_lines=False)
    table.add_column("probe", no_wrap=True)
    table.add_column("arm", no_wrap=True)
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("verdict")
    for probe in result.probes:
        for index, arm in enumerate(probe.arms):
            name = probe.name if index == 0 else ""
            cells = [number(arm.metrics.get(key)) for key, _ in COLUMNS]
            judged = judge_arm(arm, tolerances)
            if not arm.applicable:
                verdict = plain(f"n/a: {arm.reason}", "dim")
            elif not arm.gated:
                verdict = Text("contrast", style="dim")
            else:
                verdict = verdict_text(judged.verdict)
                if judged.reasons:
                    verdict.append(shown(f" {_short(judged.reasons[0])}"), style="dim")
            table.add_row(plain(name), plain(arm.arm), *cells, verdict)
        table.add_section()
    findings = Text()
    for probe in result.probes:
        findings.append(shown(f"{probe.name}: "), style="bold")
        findings.append(shown(probe.finding, lines=True) + "\n")
    parts: list[Table | Text] = [table, findings]
    if result.status == "failed":
        parts.append(plain(f"suite failed: {result.error}", "bold red"))
    return Group(*parts)


def print_summary(result: SuiteResult, tolerances: Tolerances, console: Console) -> None:
    if not console.is_terminal:
        console.width = max(console.width, 130)
    console.print(summary(result, tolerances))
