"""`parity serve`: the scheduler and the dashboard together on one machine. The dashboard is
`streamlit run dashboard/app.py` on 127.0.0.1 in a subprocess; SIGINT or SIGTERM stops the
dashboard, then the scheduler (whose workers put their runs back in the queue)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from jobs.scheduler import Scheduler, stop_on_signals
from monitor.config import Settings

logger = logging.getLogger("jobs.serve")
DASHBOARD_APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
DASHBOARD_STOP_S = 15.0
ADDRESS = "127.0.0.1"


def dashboard_command(app: Path, address: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def start_dashboard(app: Path, address: str, port: int) -> subprocess.Popen[bytes] | None:
    if not app.is_file():
        logger.warning("no dashboard at %s; serving the scheduler only", app)
        return None
    process = subprocess.Popen(
        dashboard_command(app, address, port), stdin=subprocess.DEVNULL, start_new_session=True
    )
    logger.info("dashboard on http://%s:%d (pid %d)", address, port, process.pid)
    return process


def stop_dashboard(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=DASHBOARD_STOP_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    logger.info("dashboard stopped")


def serve(
    settings: Settings,
    *,
    address: str = ADDRESS,
    port: int = 8501,
    app: Path = DASHBOARD_APP,
    stopped: threading.Event | None = None,
    dashboard: subprocess.Popen[bytes] | None = None,
) -> int:
    """Run the scheduler and the dashboard until a signal (0) or until the dashboard dies (1);
    `stopped`, when given, is the event the caller's signal handlers set; `dashboard`, one
    the caller started already (during the first run)."""
    if stopped is None:
        stopped = threading.Event()
        stop_on_signals(stopped)
    try:
        scheduler = Scheduler(settings)
    except BaseException:
        stop_dashboard(dashboard)
        raise
    if stopped.is_set():
        stop_dashboard(dashboard)
        scheduler.store.close()
        return 0
    dashboard = dashboard or start_dashboard(app, address, port)
    code = 0
    try:
        scheduler.start()
        while not stopped.wait(1.0):
            if dashboard is not None and dashboard.poll() is not None:
                logger.error("the dashboard exited with code %d; stopping", dashboard.returncode)
                code = 1
                break
    finally:
        stop_dashboard(dashboard)
        scheduler.stop()
    return code
