"""The local runner: the suite as a subprocess in the release's own environment on this machine.

Progress arrives as JSON lines on a dedicated pipe (vLLM's own logs go to a file); whatever the
subprocess does, the caller gets a valid result: the suite's, or a failed one with the log tail."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.config import Settings
from monitor.runners.base import (
    TIMED_OUT,
    OnEvent,
    OnJob,
    Runner,
    RunnerLost,
    SuiteJob,
)
from monitor.schema import SchemaError, SuiteConfig, SuiteResult, load_result, storable_text

WATCH_INTERVAL_S = 2.0
SCRUBBED_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")
SUITE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""What the suite's process needs wherever it runs (the Ray runner sets the same)."""
JOB_PREFIX = "local"


def kv_cache_env(config: SuiteConfig) -> dict[str, str]:
    return {"VLLM_CPU_KVCACHE_SPACE": str(max(1, round(config.kv_cache_gib)))}


def suite_environment(config: SuiteConfig) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(SUITE_ENV)
    env.update(kv_cache_env(config))
    return env


def suite_command(job: SuiteJob, models_dir: Path) -> list[str]:
    """The release environment's python running the suite for `job`."""
    return [
        str(job.env.python),
        "-m",
        "monitor.suite",
        "--config",
        str(job.request_file),
        "--out",
        str(job.result_file),
        "--work-dir",
        str(job.run_dir / "work"),
        "--model-cache",
        str(models_dir),
    ]


class SuiteKilled(RuntimeError):
    """The suite was killed by a signal from outside and wrote no result."""


CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}
)
"""Signals a process raises on itself when its native code fails (the engine core runs in the
suite's process): a crash of the release, a failed run, not a runner lost from outside."""


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return storable_text("\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    except OSError:
        return ""


def run_local(
    job: SuiteJob,
    models_dir: Path,
    on_event: OnEvent = lambda _: None,
    stall_s: float = 1200.0,
    on_start: Callable[[int], None] | None = None,
    raise_when_killed: bool = False,
) -> SuiteResult:
    """Run the suite; a run that exceeds the job's time-out, or that shows neither progress
    nor log output for `stall_s` (an engine that died where vLLM waits forever), is killed and
    failed. `on_start` gets the suite's process (group) id; with `raise_when_killed`, a suite
    killed by a signal from outside raises SuiteKilled instead of returning a failed result."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    job.request_file.write_text(job.config.model_dump_json(indent=1))
    out, log = job.result_file, job.log_file
    out.unlink(missing_ok=True)
    started = datetime.now(UTC)
    read_fd, write_fd = os.pipe()
    command = [*suite_command(job, models_dir), "--progress-fd", str(write_fd)]
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=suite_environment(job.config),
            pass_fds=(write_fd,),
            start_new_session=True,
            cwd=job.run_dir,
        )
    os.close(write_fd)
    if on_start is not None:
        on_start(process.pid)
    last_event = [time.monotonic()]

    def note(event: dict[str, Any]) -> None:
        last_event[0] = time.monotonic()
        on_event(event)

    reader = threading.Thread(target=_read_events, args=(read_fd, note), daemon=True)
    reader.start()
    try:
        problem = _wait(process, log, last_event, job.timeout_s, stall_s)
        if problem:
            _kill_group(process)
            return failed_result(job.config, started, problem, log)
        code = process.returncode
    except KeyboardInterrupt:
        _kill_group(process)
        raise
    finally:
        reader.join(timeout=5)
    _kill_group(process)
    if out.is_file():
        try:
            return load_result(out)
        except SchemaError as exc:
            return failed_result(
                job.config, started, f"suite wrote an unreadable result: {exc}", log
            )
    if code < 0 and -code in CRASH_SIGNALS:
        name = signal.Signals(-code).name
        return failed_result(job.config, started, f"suite crashed ({name}), no result", log)
    if raise_when_killed and code < 0:
        raise SuiteKilled(f"suite was killed by signal {signal.Signals(-code).name}")
    return failed_result(
        job.config, started, f"suite exited with code {code} and wrote no result", log
    )


def _wait(
    process: subprocess.Popen[bytes],
    log: Path,
    last_event: list[float],
    timeout_s: float,
    stall_s: float,
) -> str | None:
    """Wait for the suite to exit; say why it must be stopped instead, if it must."""
    started = time.monotonic()
    log_size, log_changed = -1, started
    while True:
        try:
            process.wait(timeout=WATCH_INTERVAL_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        size = log.stat().st_size if log.exists() else 0
        if size != log_size:
            log_size, log_changed = size, now
        if now - started > timeout_s:
            return f"{TIMED_OUT} {timeout_s:.0f} s"
        if now - max(log_changed, last_event[0]) > stall_s:
            return f"suite stalled: no progress and no log output for {stall_s:.0f} s"


def _read_events(fd: int, on_event: OnEvent) -> None:
    with os.fdopen(fd, "r", errors="replace") as stream:
        for line in stream:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                on_event(event)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """vLLM leaves engine-core children behind; end the whole process group."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def failed_result(
    config: SuiteConfig, started: datetime, error: str, log: Path, lines: int = 40
) -> SuiteResult:
    """A failed result that carries the error and the tail of the suite's log."""
    return SuiteResult(
        status="failed",
        error=error,
        error_tail=log_tail(log, lines),
        started_at=started,
        finished_at=datetime.now(UTC),
        config=config,
    )


def local_job_id(pid: int) -> str:
    return f"{JOB_PREFIX}:{socket.gethostname()}:{pid}"


def _pid_here(job_id: str) -> int | None:
    """The process id a local job id names, if it names this machine."""
    prefix, _, rest = job_id.partition(":")
    host, _, pid = rest.rpartition(":")
    if prefix != JOB_PREFIX or host != socket.gethostname() or not pid.isdigit():
        return None
    return int(pid)


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


class LocalRunner(Runner):
    kind = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def run(self, job: SuiteJob, on_job: OnJob, on_event: OnEvent) -> SuiteResult:
        try:
            return run_local(
                job,
                self.settings.models_dir,
                on_event,
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
