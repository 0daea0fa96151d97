"""Local runner: the suite as a subprocess in the release's own environment.

Progress arrives as JSON lines on a dedicated pipe (vLLM's own logs go to a file); whatever the
subprocess does, the caller gets a valid result: the suite's, or a failed one with the log tail."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.envs import ReleaseEnv
from monitor.schema import SchemaError, SuiteConfig, SuiteResult, load_result

OnEvent = Callable[[dict[str, Any]], None]
WATCH_INTERVAL_S = 2.0
TIMED_OUT = "suite timed out after"
"""How every runner's time-out error begins; the scheduler ends such a run `timed_out`."""
SCRUBBED_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")


def suite_environment(kv_cache_gib: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(kv_cache_gib))),
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    return env


class SuiteKilled(RuntimeError):
    """The suite was killed by a signal from outside and wrote no result."""


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_local(
    env: ReleaseEnv,
    config: SuiteConfig,
    run_dir: Path,
    models_dir: Path,
    kv_cache_gib: float,
    timeout_s: float,
    on_event: OnEvent = lambda _: None,
    stall_s: float = 1200.0,
    on_start: Callable[[int], None] | None = None,
    raise_when_killed: bool = False,
) -> SuiteResult:
    """Run the suite; a run that exceeds `timeout_s`, or that shows neither progress nor log
    output for `stall_s` (an engine that died where vLLM waits forever), is killed and failed.
    `on_start` gets the suite's process (group) id; with `raise_when_killed`, a suite killed by
    a signal from outside raises SuiteKilled instead of returning a failed result."""
    run_dir.mkdir(parents=True, exist_ok=True)
    request = run_dir / "request.json"
    request.write_text(config.model_dump_json(indent=1))
    out, log = run_dir / "result.json", run_dir / "suite.log"
    out.unlink(missing_ok=True)
    started = datetime.now(UTC)
    read_fd, write_fd = os.pipe()
    command = [
        str(env.python),
        "-m",
        "monitor.suite",
        "--config",
        str(request),
        "--out",
        str(out),
        "--work-dir",
        str(run_dir / "work"),
        "--model-cache",
        str(models_dir),
        "--progress-fd",
        str(write_fd),
    ]
    with log.open("w") as log_file:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=suite_environment(kv_cache_gib),
            pass_fds=(write_fd,),
            start_new_session=True,
            cwd=run_dir,
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
        problem = _wait(process, log, last_event, timeout_s, stall_s)
        if problem:
            _kill_group(process)
            return _failed(config, started, problem, log)
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
            return _failed(config, started, f"suite wrote an unreadable result: {exc}", log)
    if raise_when_killed and code < 0:
        raise SuiteKilled(f"suite was killed by signal {signal.Signals(-code).name}")
    return _failed(config, started, f"suite exited with code {code} and wrote no result", log)


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


def _failed(config: SuiteConfig, started: datetime, error: str, log: Path) -> SuiteResult:
    return SuiteResult(
        status="failed",
        error=error,
        error_tail=log_tail(log),
        started_at=started,
        finished_at=datetime.now(UTC),
        config=config,
    )
