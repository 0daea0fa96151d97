"""Backfill: run the suite on every release of a package in a version range and store each,
so the dashboard has a real history. Releases that do not install here are recorded with the
reason and skipped; releases already stored with the same suite config are not run again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.version import Version

from monitor.config import Settings
from monitor.engines import EngineSpec, parse_package
from monitor.envs import EnvBuildError, IndexConfig, ensure_env
from monitor.orchestrate import run_release, suite_config
from monitor.releases import Release, fetch_releases, in_range
from monitor.runners.local import OnEvent
from monitor.schema import write_result
from monitor.series import config_hash
from monitor.store import Store, ingest_result
from monitor.store.ingest import record_release
from monitor.store.queries import list_runs

Outcome = Literal["stored", "already stored", "not installable", "failed"]


@dataclass(frozen=True)
class BackfillItem:
    """What backfill did with one release."""

    release: str
    outcome: Outcome
    run_id: int | None
    detail: str


@dataclass(frozen=True)
class BackfillPlan:
    package: str
    since: Version | None
    until: Version | None
    model: str
    prompts: Path | None
    probes: list[str]
    options: dict[str, Any]
    force: bool = False


def select_releases(plan: BackfillPlan, settings: Settings) -> tuple[list[Release], list[Release]]:
    """(every release published in range, yanked and pre-releases included; the ones to run),
    both oldest first."""
    published = fetch_releases(
        parse_package(plan.package), settings.pypi_url, settings.http_timeout_s
    )
    listed = in_range(published, plan.since, plan.until, prereleases=True, yanked=True)
    return listed, in_range(published, plan.since, plan.until)


def record_published(store: Store, releases: list[Release]) -> None:
    """Store what PyPI says of every release (publication time, yanked), in one transaction."""
    with store.writing() as session:
        for release in releases:
            record_release(
                session,
                release.package,
                str(release.version),
                published_at=release.published,
                yanked=release.yanked,
            )


def _stored_run(store: Store, spec: EngineSpec, digest: str) -> int | None:
    with store.reading() as session:
        runs = list_runs(
            session, package=spec.package, version=str(spec.version), status="succeeded"
        )
    return next((run.id for run in runs if run.config_hash == digest), None)


def backfill_release(
    release: Release,
    plan: BackfillPlan,
    settings: Settings,
    store: Store,
    index: IndexConfig,
    log: Callable[[str], None],
    on_event: OnEvent,
) -> BackfillItem:
    """Run and store one release, unless it is stored already or does not install here."""
    spec = EngineSpec(release.package, release.version)
    config = suite_config(spec, plan.model, plan.prompts, plan.probes, **plan.options)
    stored = None if plan.force else _stored_run(store, spec, config_hash(config))
    if stored is not None:
        return BackfillItem(str(spec), "already stored", stored, "same suite config")
    try:
        env = ensure_env(spec, settings.envs_dir, index, settings.env_python, log)
    except EnvBuildError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "environment build failed"
        with store.writing() as session:
            record_release(
                session, spec.package, str(spec.version), installable=False, install_error=reason
            )
        return BackfillItem(str(spec), "not installable", None, reason)
    with store.writing() as session:
        record_release(session, spec.package, str(spec.version), installable=True)
    result, run_dir = run_release(env, config, settings, on_event)
    write_result(result, run_dir / "result.json")
    outcome = ingest_result(store, result, runner="local")
    if result.status != "succeeded":
        return BackfillItem(str(spec), "failed", outcome.run_id, result.error or "suite failed")
    return BackfillItem(str(spec), "stored", outcome.run_id, str(run_dir / "result.json"))
