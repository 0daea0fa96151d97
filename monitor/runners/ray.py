"""The Ray backend of the runner interface: one Ray Jobs submission per run, to the cluster at
`PARITY_RAY_ADDRESS`. The job's entrypoint runs the suite with the release environment's own
python (Ray's runtime_env pip layers would mix the node's packages in), reserving
`PARITY_RAY_GPUS_PER_JOB` GPUs. The result file is read back from the run directory, which must
be on a filesystem the scheduler and the GPU nodes share (see docs/deploy.md)."""

from __future__ import annotations

import contextlib
import shlex
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from monitor.config import Settings
from monitor.runners.base import OnJob, Runner, RunnerLost, RunnerUnavailable, RunRequest
from monitor.runners.local import TIMED_OUT, log_tail
from monitor.schema import SchemaError, SuiteResult, load_result

POLL_INTERVAL_S = 2.0
LOG_LINES = 40
SUITE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
SCRUBBED = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX")


def entrypoint(request: RunRequest, models_dir: Path) -> str:
    """The job's shell command: the release env's python running the suite, from the run
    directory, without the Ray worker's python path leaking into it."""
    unset = [part for name in SCRUBBED for part in ("-u", name)]
    suite = [
        "env",
        *unset,
        str(request.env.python),
        "-m",
        "monitor.suite",
        "--config",
        str(request.request_file),
        "--out",
        str(request.result_file),
        "--work-dir",
        str(request.run_dir / "work"),
        "--model-cache",
        str(models_dir),
    ]
    return f"cd {shlex.quote(str(request.run_dir))} && exec {shlex.join(suite)}"


def submission_id(request: RunRequest) -> str:
    return f"parity-run-{request.run_id}-attempt-{request.attempt}-{uuid.uuid4().hex[:8]}"


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
                    f"Ray at {self.address} does not answer: {_one_line(exc)}"
                ) from None
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunnerUnavailable(f"Ray at {self.address}: {_one_line(exc)}") from None

    def run(self, request: RunRequest, on_job: OnJob) -> SuiteResult:
        client = self._client()
        request.run_dir.mkdir(parents=True, exist_ok=True)
        request.request_file.write_text(request.config.model_dump_json(indent=1))
        request.result_file.unlink(missing_ok=True)
        started = datetime.now(UTC)
        job_id = submission_id(request)
        on_job(job_id)
        env_vars = {
            **SUITE_ENV,
            "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(request.config.kv_cache_gib))),
        }
        try:
            client.submit_job(
                entrypoint=entrypoint(request, self.settings.models_dir),
                submission_id=job_id,
                runtime_env={"env_vars": env_vars},
                entrypoint_num_gpus=self.settings.ray_gpus_per_job or None,
                metadata={"parity_run": str(request.run_id), "attempt": str(request.attempt)},
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RunnerUnavailable(
                f"Ray at {self.address} refused the job: {_one_line(exc)}"
            ) from None
        try:
            return self._wait(client, job_id, request, started)
        except KeyboardInterrupt:
            self._stop(client, job_id)
            raise

    def _wait(
        self, client: Any, job_id: str, request: RunRequest, started: datetime
    ) -> SuiteResult:
        deadline = time.monotonic() + request.timeout_s
        while True:
            try:
                status = str(_status(client, job_id))
            except (OSError, RuntimeError) as exc:
                raise RunnerLost(
                    f"lost Ray job {job_id} at {self.address}: {_one_line(exc)}"
                ) from None
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            if time.monotonic() > deadline:
                self._stop(client, job_id)
                self._keep_logs(client, job_id, request)
                return _failed(request, started, f"{TIMED_OUT} {request.timeout_s:.0f} s")
            time.sleep(POLL_INTERVAL_S)
        self._keep_logs(client, job_id, request)
        if request.result_file.is_file():
            try:
                return load_result(request.result_file)
            except SchemaError as exc:
                return _failed(request, started, f"suite wrote an unreadable result: {exc}")
        if status == "STOPPED":
            raise RunnerLost(f"Ray job {job_id} was stopped before it wrote a result")
        message = _one_line(_job_message(client, job_id)) or status.lower()
        return _failed(
            request,
            started,
            f"Ray job {job_id} ended {status} without a result ({message}); "
            f"is {request.run_dir} shared with the node that ran it?",
        )

    def _keep_logs(self, client: Any, job_id: str, request: RunRequest) -> None:
        """Ray keeps the job's output; a copy goes to the run directory's suite.log."""
        with contextlib.suppress(Exception):
            request.log_file.write_text(client.get_job_logs(job_id))

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


def _one_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _failed(request: RunRequest, started: datetime, error: str) -> SuiteResult:
    return SuiteResult(
        status="failed",
        error=error,
        error_tail=log_tail(request.log_file, LOG_LINES),
        started_at=started,
        finished_at=datetime.now(UTC),
        config=request.config,
    )
