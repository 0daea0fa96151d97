"""One suite run of one release, end to end: pick the release, build or reuse its environment,
run the suite there. Shared by `parity run`, backfills and the scheduler."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.config import Settings
from monitor.engines import EngineSpec, parse_engine, parse_package
from monitor.envs import EnvBuildError, IndexConfig, ReleaseEnv, ensure_env, pip_index_config
from monitor.releases import DiscoveryError, fetch_releases, installable_candidates
from monitor.runners.local import OnEvent, run_local
from monitor.schema import SuiteConfig, SuiteResult
from monitor.suite.prompts import bundled_prompts_text, load_prompts

NEWEST_TRIES = 3
Log = Callable[[str], None]


def index_config(settings: Settings, index_url: str | None, find_links: list[str]) -> IndexConfig:
    """pip's configuration, then settings, then command-line options; later ones win."""
    configured = pip_index_config() if settings.use_pip_config else IndexConfig()
    from_settings = IndexConfig(
        settings.index_url, tuple(settings.extra_index_urls), tuple(settings.find_links)
    )
    return configured.merged(from_settings).merged(IndexConfig(index_url, (), tuple(find_links)))


def candidate_specs(engine: str | None, settings: Settings, log: Log) -> list[EngineSpec]:
    """The release asked for, or the newest few published releases (newest first)."""
    if engine:
        package, version = parse_engine(engine)
        if version is not None:
            return [EngineSpec(package, version)]
    else:
        package = parse_package(settings.engine_package)
    log(f"asking {settings.pypi_url} for the newest {package} release")
    releases = installable_candidates(
        fetch_releases(package, settings.pypi_url, settings.http_timeout_s)
    )
    if not releases:
        raise DiscoveryError(f"no installable {package} release found on {settings.pypi_url}")
    return [EngineSpec(package, r.version) for r in releases[:NEWEST_TRIES]]


def prepare_env(
    candidates: list[EngineSpec], settings: Settings, index: IndexConfig, log: Log
) -> ReleaseEnv:
    """The first candidate whose environment builds (or is cached)."""
    errors = []
    for spec in candidates:
        try:
            return ensure_env(spec, settings.envs_dir, index, settings.env_python, log)
        except EnvBuildError as exc:
            errors.append(str(exc))
            log(f"{spec} does not install here")
    raise EnvBuildError(errors[0] if len(errors) == 1 else "; ".join(errors))


def suite_config(
    spec: EngineSpec, model: str, prompts: Path | None, probes: list[str], **options: Any
) -> SuiteConfig:
    loaded = load_prompts(prompts)
    text = prompts.read_bytes() if prompts else bundled_prompts_text().encode()
    return SuiteConfig(
        engine=str(spec),
        model=model,
        prompts=str(prompts.resolve()) if prompts else "bundled",
        prompts_sha256=hashlib.sha256(text).hexdigest(),
        n_prompts=len(loaded),
        probes=probes,
        **options,
    )


def run_release(
    env: ReleaseEnv, config: SuiteConfig, settings: Settings, on_event: OnEvent
) -> tuple[SuiteResult, Path]:
    """Run the suite for one release locally; returns the result and its run directory."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    run_dir = settings.runs_dir / f"{stamp}-{env.spec.slug}"
    result = run_local(
        env,
        config,
        run_dir,
        settings.models_dir,
        settings.kv_cache_gib,
        settings.suite_timeout_s,
        on_event,
        settings.suite_stall_s,
    )
    return result, run_dir
