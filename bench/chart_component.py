"""What a chart component costs a dashboard page in a real browser: the same minimal Streamlit
page (bench/chart_page/app.py) with no chart, or 1 and 4 trend-like charts drawn by Plotly or
by Vega-Lite (Altair), each timed to interactive in Debian's Chromium as
bench/dashboard_browser.py times the dashboard's pages (a kept profile; the first visit of each
variant untimed). Prints the median and largest of the timed visits.

    .venv/bin/python bench/chart_component.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import BrowserContext, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.serve import dashboard_command  # noqa: E402
from tests.dashboard_server import (  # noqa: E402
    DRAWN_CHART,
    IDLE,
    launch_chromium_profile,
    wait_healthy,
)
from tests.loopback import free_port  # noqa: E402

DRAWN = {
    "none": '[data-testid="stDataFrame"]',
    "plotly": ".js-plotly-plot:has(.xtick)",
    "vega": DRAWN_CHART,
}
READY = """([idle, selector, count]) => document.querySelector(idle) !== null
    && document.querySelectorAll(selector).length >= count ? performance.now() : null"""
VARIANTS = (("none", 0), ("plotly", 1), ("vega", 1), ("plotly", 4), ("vega", 4))


def visit(context: BrowserContext, url: str, kind: str, count: int) -> float:
    tab = context.new_page()
    try:
        tab.goto(url, wait_until="commit")
        ready = tab.wait_for_function(
            READY, arg=[IDLE, DRAWN[kind], max(count, 1)], polling="raf", timeout=60_000
        )
        return float(ready.json_value()) / 1000
    finally:
        tab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="parity-chart-bench-") as work:
        log = Path(work) / "streamlit.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                dashboard_command(ROOT / "bench" / "chart_page" / "app.py", "127.0.0.1", port),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(base, server, log)
            with sync_playwright() as playwright:
                context = launch_chromium_profile(
                    playwright, Path(work) / "profile", {"width": 1400, "height": 1000}
                )
                try:
                    for kind, count in VARIANTS:
                        url = f"{base}/?kind={kind}&n={count}"
                        visit(context, url, kind, count)
                        times = [visit(context, url, kind, count) for _ in range(args.repeats)]
                        print(
                            f"{count} × {kind:<6} median {statistics.median(times):.2f} s, "
                            f"max {max(times):.2f} s"
                        )
                finally:
                    context.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
