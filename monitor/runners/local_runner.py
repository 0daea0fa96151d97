"""The local backend of the runner interface: the suite as a subprocess in the release's own
environment on this machine, exactly as `parity run` runs it (monitor.runners.local)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

from monitor.config import Settings
from monitor.runners.base import OnJob, Runner, RunnerLost, RunRequest
from monitor.runners.local import SuiteKilled, run_local
from monitor.schema import SuiteResult

PREFIX = "local"


def local_job_id(pid: int) -> str:
    return f"{PREFIX}:{socket.gethostname()}:{pid}"


def _pid_here(job_id: str) -> int | None:
    """The process id a local job id names, if it names this machine."""
    prefix, _, rest = job_id.partition(":")
    host, _, pid = rest.rpartition(":")
    if prefix != PREFIX or host != socket.gethostname() or not pid.isdigit():
        return None
    return int(pid)


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


class LocalRunner(Runner):
    kind = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self, request: RunRequest, on_job: OnJob) -> SuiteResult:
        try:
            return run_local(
                request.env,
                request.config,
                request.run_dir,
                self.settings.models_dir,
                self.settings.kv_cache_gib,
                request.timeout_s,
                stall_s=self.settings.suite_stall_s,
                on_start=lambda pid: on_job(local_job_id(pid)),
                raise_when_killed=True,
            )
        except SuiteKilled as exc:
            raise RunnerLost(str(exc)) from None

    def stop(self, job_id: str, run_dir: Path) -> bool:
        """Kill the suite's process group, if it still runs here and is this run's suite (its
        command line names the run's request file: a recycled pid is left alone)."""
        pid = _pid_here(job_id)
        if pid is None or str(run_dir / "request.json") not in _cmdline(pid):
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
            return True
        return False
