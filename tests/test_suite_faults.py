"""An engine that crashes mid-run (the engine core runs in the suite's process, so its native
crash is the suite's: SIGSEGV): the CLI exits non-zero with one line naming the crash, and the
result file is a complete failed result carrying the log tail, never a half-written one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monitor.schema import load_result
from tests.conftest import ROOT, TEST_ENGINE

pytestmark = pytest.mark.vllm


def _suite_pids(root: int) -> list[int]:
    """Suite processes below `root` only: other suites on this machine are left alone."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                commands[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return [pid for pid in below if b"monitor.suite" in commands.get(pid, b"")]


def test_engine_killed_mid_run(data_dir: Path, release_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {**os.environ, "PARITY_DATA_DIR": str(data_dir)}
    before = set((data_dir / "runs").glob("*")) if (data_dir / "runs").exists() else set()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "monitor.cli",
            "run",
            "--engine",
            TEST_ENGINE,
            "--model",
            "tiny",
            "--probes",
            "dtype_floor",
            "--max-tokens",
            "512",
            "--out",
            str(out),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 600
    killed = False
    while time.monotonic() < deadline and process.poll() is None and not killed:
        runs = (
            set((data_dir / "runs").glob("*")) - before if (data_dir / "runs").exists() else set()
        )
        logs = [run / "suite.log" for run in runs if (run / "suite.log").exists()]
        started = any("init engine" in log.read_text(errors="replace") for log in logs)
        if started:
            for pid in _suite_pids(process.pid):
                os.kill(pid, signal.SIGSEGV)
                killed = True
        time.sleep(0.5)
    _, stderr = process.communicate(timeout=600)
    assert killed, "never saw a running engine to kill"
    assert process.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "suite crashed (SIGSEGV)" in errors[0], stderr
    result = load_result(out)
    assert result.status == "failed"
    assert result.error and "\n" not in result.error
    assert result.error_tail and result.error_tail.strip()
    assert not list(tmp_path.glob(".*.partial"))
