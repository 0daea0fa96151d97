"""A stand-in release environment for the scheduler's tests: its `bin/python` runs this file
instead of the real suite (no vLLM start), following a plan per call: succeed (a realistic
result from tests.store_factory for the requested config), hang, print garbage, or exit without
a result. Every call is logged, so tests can count how often the suite really ran. The real
suite runs through the scheduler's Ray test and the `vllm` tests."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLAN = "standin.json"
CALLS = "calls.log"


def make_env(path: Path, plan: list[str], sleep_s: float = 0.0) -> Path:
    """Create the stand-in environment at `path` (for `prebuilt_envs`); returns `path`."""
    python = path / "bin" / "python"
    python.parent.mkdir(parents=True, exist_ok=True)
    script = Path(__file__).resolve()
    python.write_text(f'#!/bin/sh\nSTANDIN_HOME={path} exec {sys.executable} {script} "$@"\n')
    python.chmod(0o755)
    (path / PLAN).write_text(json.dumps({"plan": plan, "sleep_s": sleep_s}))
    return path


def calls(path: Path) -> list[dict[str, Any]]:
    log = path / CALLS
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def alive(pid: int) -> bool:
    """Whether a process (a stand-in suite, a worker) still runs: it exists and is no zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _succeeded(config_file: Path) -> str:
    sys.path.insert(0, str(ROOT))
    from monitor.schema import SuiteConfig
    from tests.store_factory import succeeded

    config = SuiteConfig.model_validate_json(config_file.read_text())
    now = datetime.now(UTC)
    release = config.engine
    result = succeeded(str(release.version), package=release.package).model_copy(
        update={"config": config, "started_at": now, "finished_at": now}
    )
    return result.model_dump_json()


PROGRESS: list[dict[str, Any]] = [
    {"event": "stage", "message": "vLLM stand-in on cpu"},
    {"event": "engine", "message": "engine 1/2: base", "done": 0, "total": 2},
    {"event": "step", "message": "generate rollout", "prompts": 65},
    {"event": "step", "message": "dtype_floor on base"},
    {"event": "step", "message": "replay corpus", "scored": 16},
    {"event": "engine", "message": "engine 2/2: raw_logprobs", "done": 1, "total": 2},
    {"event": "step", "message": "generate raw", "prompts": 65},
]
"""The progress events the stand-in sends on `--progress-fd`, as the suite does, at its start."""


def _progress(fd: int | None) -> None:
    if fd is None:
        return
    with os.fdopen(fd, "w") as stream:
        for event in PROGRESS:
            stream.write(json.dumps(event) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-m")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--model-cache", type=Path)
    parser.add_argument("--progress-fd", type=int)
    args = parser.parse_args()
    env_dir = Path(os.environ["STANDIN_HOME"])
    spec = json.loads((env_dir / PLAN).read_text())
    done = calls(env_dir)
    mode = spec["plan"][min(len(done), len(spec["plan"]) - 1)]
    with (env_dir / CALLS).open("a") as log:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        call = {"pid": os.getpid(), "mode": mode, "out": str(args.out), "gpus": gpus}
        log.write(json.dumps(call) + "\n")
    _progress(args.progress_fd)
    deadline = time.monotonic() + float(spec["sleep_s"])
    while time.monotonic() < deadline or mode == "hang":
        print("stand-in suite working", flush=True)
        time.sleep(0.2)
    if mode == "garbage":
        sys.stdout.buffer.write(b"Segmentation fault? \x00\xff\x1b[31m <<<not json>>>\n")
        sys.stdout.flush()
        args.out.write_text("<<<this is not a result>>>")
        return 0
    if mode == "no_result":
        return 3
    partial = args.out.with_name(f".{args.out.name}.partial")
    partial.write_text(_succeeded(args.config))
    partial.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def record_hook(store: object, run_id: int) -> None:
    """An after-run hook for tests: appends "run_id status" to $STANDIN_HOOK_LOG."""
    from monitor.store import Store
    from monitor.store.queue import run_status

    assert isinstance(store, Store)
    with store.reading() as session:
        status = run_status(session, run_id)
    with Path(os.environ["STANDIN_HOOK_LOG"]).open("a") as log:
        log.write(f"{run_id} {status}\n")
