"""The dashboard as a real `streamlit run` process on loopback, and Debian's Chromium driven by
Playwright: what the browser test and the browser benchmark (bench/dashboard_browser.py) share.
Playwright's own browser downloads are never used: the Chromium is Debian's package."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Playwright, ViewportSize

from tests.loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
START_TIMEOUT_S = 90
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
"""The app's root once its script run has finished (before the first run it is "initial")."""
CHART = '[data-testid="stVegaLiteChart"]'
"""A chart on a dashboard page (Vega-Lite, drawn as SVG)."""
AXIS_LABELS = "svg.marks .role-axis-label text"
LEGEND_LABELS = "svg.marks .role-legend-label text"
DRAWN_CHART = f"{CHART}:has({AXIS_LABELS}), {CHART}:has(canvas.marks)"
"""A chart drawn: as SVG, once its axis labels are; as a canvas (Streamlit draws charts of many
points on one), once the canvas is there."""


class ServeError(RuntimeError):
    """The dashboard's server exited or did not answer in time (the message holds its log)."""


def _chromium() -> str:
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"no Debian Chromium at {CHROMIUM} (apt-get install chromium)")
    return str(CHROMIUM)


def launch_chromium(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless, with the flags it needs in a container without a GPU."""
    return playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)


def launch_chromium_profile(
    playwright: Playwright, profile: Path, viewport: ViewportSize
) -> BrowserContext:
    """The same Chromium with a profile kept on disk in `profile` (its HTTP and compiled-code
    caches survive between tabs, as in a user's own browser)."""
    return playwright.chromium.launch_persistent_context(
        profile, executable_path=_chromium(), args=CHROMIUM_ARGS, viewport=viewport
    )


def wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once Streamlit's health endpoint answers 200; raise ServeError if it exits or
    takes longer than START_TIMEOUT_S."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServeError(f"streamlit exited with {process.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise ServeError(f"streamlit did not answer in {START_TIMEOUT_S} s: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


@contextmanager
def dashboard_served(url: str, work: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A real `streamlit run` of the dashboard on the store at `url`, on a free loopback port,
    with the checkout's .streamlit/config.toml; yields its base URL. `env` adds or overrides
    variables (PARITY_DASHBOARD_TOKEN …); its log is `work`/streamlit.log. Stopped (its whole
    process group) on exit."""
    port = free_port()
    environment = {
        **os.environ,
        "PARITY_DATABASE_URL": url,
        "PARITY_DATA_DIR": str(work / "data"),
        **(env or {}),
    }
    log = work / "streamlit.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(APP),
                "--server.address=127.0.0.1",
                f"--server.port={port}",
                "--server.headless=true",
                "--server.fileWatcherType=none",
                "--browser.gatherUsageStats=false",
            ],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
