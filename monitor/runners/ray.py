"""The Ray backend of the runner interface: one Ray Jobs submission per run, to the cluster at
`PARITY_RAY_ADDRESS`. The job's entrypoint runs the suite with the release environment's own
python (Ray's runtime_env pip layers would mix the node's packages in), reserving
`PARITY_RAY_GPUS_PER_JOB` GPUs. The result file is read back from the run directory, which must
be on a filesystem the scheduler and the GPU nodes share (see docs/deploy.md)."""

from __future__ import annotations

import contextlib
import re
import shlex
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from monitor.config import Settings
from monitor.errors import one_line
from monitor.runners.base import (
    TIMED_OUT,
    OnEvent,
    OnJob,
    Runner,
    RunnerLost,
    RunnerUnavailable,
    SuiteJob,
)
from monitor.runners.local import (
    SCRUBBED_ENV,
    SUITE_ENV,
    failed_result,
    kv_cache_env,
    suite_command,
)
from monitor.schema import SchemaError, SuiteResult, load_result, storable_text

POLL_INTERVAL_S = 2.0
LOG_LINES = 40


def entrypoint(job: SuiteJob, models_dir: Path) -> str:
    """The job's shell command: the release env's python running the suite, from the run
    directory, without the Ray worker's python path leaking into it."""
    unset = [part for name in SCRUBBED_ENV for part in ("-u", name)]
    suite = ["env", *unset, *suite_command(job, models_dir)]
    return f"cd {shlex.quote(str(job.run_dir))} && exec {shlex.join(suite)}"


def submission_id(job: SuiteJob) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", job.name).strip("-") or "run"
    return f"parity-{name}-{uuid.uuid4().hex[:8]}"


class RayRunner(Runner):
    kind = "ray"

    def __init__(self, settings: Settings) -> None:
        if not settings.ray_address:
            raise RunnerUnavailable(
                "the Ray runner needs PARITY_RAY_ADDRESS (e.g. http://head:8265)"
            )
        self.settings = settings
        self.address = settings.ray_address.rstrip("/")

    def _client(self) -> Any:
        """A Jobs API client, after checking the address answers at all (the client itself
        would wait forever on an address that accepts but never answers)."""
        if self.address.startswith(("http://", "https://")):
            try:
                httpx.get(f"{self.address}/api/version", timeout=self.settings.http_timeout_s)
            except httpx.HTTPError as exc:
                raise RunnerUnavailable(
                    f"Ray at {self.address} does not answer: {one_line(exc)}"
                ) from None
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunnerUnavailable(f"Ray at {self.address}: {one_line(exc)}") from None

    def run(self, job: SuiteJob, on_job: OnJob, on_event: OnEvent) -> SuiteResult:
        client = self._client()
        job.run_dir.mkdir(parents=True, exist_ok=True)
        job.request_file.write_text(job.config.model_dump_json(indent=1))
        job.result_file.unlink(missing_ok=True)
        started = datetime.now(UTC)
        job_id = submission_id(job)
        on_job(job_id)
        on_event({"event": "stage", "message": f"submitted to Ray at {self.address} as {job_id}"})
        try:
            client.submit_job(
                entrypoint=entrypoint(job, self.settings.models_dir),
                submission_id=job_id,
                runtime_env={"env_vars": {**SUITE_ENV, **kv_cache_env(job.config)}},
                entrypoint_num_gpus=self.settings.ray_gpus_per_job or None,
                metadata={"parity_job": job.name},
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunnerUnavailable(
                f"Ray at {self.address} refused the job: {one_line(exc)}"
            ) from None
        try:
            return self._wait(client, job_id, job, started)
        except KeyboardInterrupt:
            self._stop(client, job_id)
            raise

    def _wait(self, client: Any, job_id: str, job: SuiteJob, started: datetime) -> SuiteResult:
        deadline = time.monotonic() + job.timeout_s
        while True:
            try:
                status = str(_status(client, job_id))
            except (OSError, RuntimeError) as exc:
                raise RunnerLost(
                    f"lost Ray job {job_id} at {self.address}: {one_line(exc)}"
                ) from None
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            if time.monotonic() > deadline:
                self._stop(client, job_id)
                self._keep_logs(client, job_id, job)
                return _failed(job, started, f"{TIMED_OUT} {job.timeout_s:.0f} s")
            time.sleep(POLL_INTERVAL_S)
        self._keep_logs(client, job_id, job)
        if job.result_file.is_file():
            try:
                return load_result(job.result_file)
            except SchemaError as exc:
                return _failed(job, started, f"suite wrote an unreadable result: {exc}")
        if status == "STOPPED":
            raise RunnerLost(f"Ray job {job_id} was stopped before it wrote a result")
        message = one_line(_job_message(client, job_id)) or status.lower()
        return _failed(
            job,
            started,
            f"Ray job {job_id} ended {status} without a result ({message}); "
            f"is {job.run_dir} shared with the node that ran it?",
        )

    def _keep_logs(self, client: Any, job_id: str, job: SuiteJob) -> None:
        """Ray keeps the job's output; a copy goes to the run directory's suite.log, or why
        Ray would not return it (it refuses output that is not UTF-8, e.g. a crash's bytes)."""
        try:
            logs = client.get_job_logs(job_id)
        except Exception as exc:
            logs = f"Ray could not return job {job_id}'s logs: {one_line(exc)}"
        with contextlib.suppress(OSError):
            job.log_file.write_text(storable_text(logs))

    def _stop(self, client: Any, job_id: str) -> bool:
        try:
            return bool(client.stop_job(job_id))
        except Exception:
            return False

    def stop(self, job_id: str, run_dir: Path) -> bool:
        try:
            return self._stop(self._client(), job_id)
        except RunnerUnavailable:
            return False


@retry(
    retry=retry_if_exception_type((ConnectionError, OSError)),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=1, max=10),
    reraise=True,
)
def _status(client: Any, job_id: str) -> object:
    return client.get_job_status(job_id)


def _job_message(client: Any, job_id: str) -> str:
    try:
        return str(client.get_job_info(job_id).message or "")
    except Exception:
        return ""


def _failed(job: SuiteJob, started: datetime, error: str) -> SuiteResult:
    return failed_result(job.config, started, error, job.log_file, LOG_LINES)
