"""What every runner shares: the options of a requested run, the request a runner executes (one
release environment, one suite config, one run directory) and the interface the scheduler's
workers drive. The local and Ray backends both hand back a `SuiteResult`."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from monitor.config import Settings
from monitor.engines import EngineSpec
from monitor.envs import ReleaseEnv
from monitor.orchestrate import suite_config
from monitor.runners.local import TIMED_OUT
from monitor.schema import SuiteConfig, SuiteResult
from monitor.suite.models import check_model_spec
from monitor.suite.probes import PROBE_NAMES

RUNNER_KINDS = ("local", "ray")
OnJob = Callable[[str], None]


class RunnerUnavailable(RuntimeError):
    """The runner cannot take the job now (e.g. the Ray address does not answer); retried."""


class RunnerLost(RuntimeError):
    """The job ended without a result (its process was killed, its job stopped); retried."""


class RunOptions(BaseModel):
    """What a run request may set besides the release: the `parity run` options, same defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2"
    prompts: str | None = None
    probes: list[str] = Field(default_factory=lambda: list(PROBE_NAMES))
    engine_dtype: Literal["float32", "bfloat16"] = "float32"
    trainer_dtype: Literal["float32", "bfloat16"] = "float32"
    temperature: float = Field(default=0.7, ge=0.01, le=10.0)
    top_p: float = Field(default=0.9, ge=0.01, le=1.0)
    top_k: int = Field(default=50, ge=-1)
    max_tokens: int = Field(default=32, ge=1, le=2048)
    seed: int = 0
    weight_step: float = Field(default=0.1, ge=0.0)
    kv_cache_gib: float = Field(default=1.0, gt=0)

    @field_validator("probes")
    @classmethod
    def _known_probes(cls, probes: list[str]) -> list[str]:
        unknown = [probe for probe in probes if probe not in PROBE_NAMES]
        if unknown or not probes:
            named = ", ".join(unknown) or "(none given)"
            raise ValueError(f"unknown probe(s) {named}; known: {', '.join(PROBE_NAMES)}")
        return probes

    @field_validator("model")
    @classmethod
    def _usable_model(cls, model: str) -> str:
        check_model_spec(model)
        return model


def run_config(spec: EngineSpec, options: RunOptions) -> SuiteConfig:
    """The full suite config of one release run with `options` (reads the prompt file)."""
    fields: dict[str, Any] = options.model_dump(exclude={"model", "prompts", "probes"})
    prompts = Path(options.prompts) if options.prompts else None
    return suite_config(spec, options.model, prompts, list(options.probes), **fields)


@dataclass(frozen=True)
class RunRequest:
    """One attempt of one queued run, ready to execute."""

    run_id: int
    attempt: int
    env: ReleaseEnv
    config: SuiteConfig
    run_dir: Path
    timeout_s: float

    @property
    def request_file(self) -> Path:
        return self.run_dir / "request.json"

    @property
    def result_file(self) -> Path:
        return self.run_dir / "result.json"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "suite.log"


def attempt_dir(runs_dir: Path, run_id: int, attempt: int) -> Path:
    """Where one attempt of a scheduled run keeps its request, result and log."""
    return runs_dir / f"run-{run_id}" / f"attempt-{attempt}"


def timed_out(result: SuiteResult) -> bool:
    return result.status == "failed" and (result.error or "").startswith(TIMED_OUT)


class Runner(abc.ABC):
    """Runs the suite of one request to the end and returns its result; `on_job` receives the
    runner's handle on the job as soon as it exists, so that a job whose worker died can be
    stopped. A job killed from outside raises RunnerLost; a runner that cannot start the job
    raises RunnerUnavailable; everything else (time-out, garbage output) is a failed result."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def run(self, request: RunRequest, on_job: OnJob) -> SuiteResult: ...

    @abc.abstractmethod
    def stop(self, job_id: str, run_dir: Path) -> bool:
        """Stop a job another (dead) worker left behind; True when something was stopped."""


def make_runner(kind: str, settings: Settings) -> Runner:
    """The backend of one kind; RunnerUnavailable when it cannot be used with these settings."""
    if kind == "local":
        from monitor.runners.local_runner import LocalRunner

        return LocalRunner(settings)
    if kind == "ray":
        from monitor.runners.ray import RayRunner

        return RayRunner(settings)
    raise RunnerUnavailable(f"unknown runner {kind!r}; known: {', '.join(RUNNER_KINDS)}")
