"""What every runner shares: the job a runner executes (one release environment, one suite
config, one run directory) and the interface the pipeline drives. The local and Ray backends
both hand back a `SuiteResult`."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from monitor.envs import ReleaseEnv
from monitor.schema import SuiteConfig, SuiteResult

OnJob = Callable[[str], None]
OnEvent = Callable[[dict[str, Any]], None]
TIMED_OUT = "suite timed out after"
"""How every runner's time-out error begins; the pipeline ends such a run `timed_out`."""


class RunnerUnavailable(RuntimeError):
    """The runner cannot take the job now (e.g. the Ray address does not answer); retried."""


class RunnerLost(RuntimeError):
    """The job ended without a result (its process was killed, its job stopped); retried."""


@dataclass(frozen=True)
class SuiteJob:
    """One suite execution, ready to run: `name` identifies it to the runner's backend (a Ray
    submission id is made from it)."""

    name: str
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
    """Where one attempt of a queued run keeps its request, result and log."""
    return runs_dir / f"run-{run_id}" / f"attempt-{attempt}"


def timed_out(result: SuiteResult) -> bool:
    return result.status == "failed" and (result.error or "").startswith(TIMED_OUT)


class Runner(abc.ABC):
    """Runs the suite of one job to the end and returns its result; `on_job` receives the
    runner's handle on the job as soon as it exists, so that a job whose worker died can be
    stopped; `on_event` receives the suite's progress events where the backend streams them.
    A job killed from outside raises RunnerLost; a runner that cannot start the job raises
    RunnerUnavailable; everything else (time-out, garbage output) is a failed result."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def run(self, job: SuiteJob, on_job: OnJob, on_event: OnEvent) -> SuiteResult: ...

    @abc.abstractmethod
    def stop(self, job_id: str, run_dir: Path) -> bool:
        """Stop a job another (dead) worker left behind; True when something was stopped."""
