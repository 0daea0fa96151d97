"""Backfill: run the suite on every release of a package in a version range and store each,
so the dashboard has a real history. Releases that do not install here are recorded with the
reason and skipped; releases already stored with the same suite config are not run again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from packaging.version import Version

from monitor.config import Settings
from monitor.engines import EngineSpec
from monitor.envs import EnvBuildError, IndexConfig
from monitor.errors import one_line
from monitor.pipeline import Finished, execute, finish
from monitor.releases import PublishedRelease, fetch_releases, in_range
from monitor.requests import PromptSet, suite_config
from monitor.runners.base import OnEvent, RunnerLost, RunnerUnavailable
from monitor.schema import SuiteOptions
from monitor.store import Store, record_release
from monitor.store.models import RunStatus
from monitor.store.queue import run_with_config

Outcome = Literal["stored", "already stored", "not installable", "failed"]


@dataclass(frozen=True)
class BackfillItem:
    """What backfill did with one release."""

    release: str
    outcome: Outcome
    run_id: int | None
    detail: str
    finished: Finished | None = None


@dataclass(frozen=True)
class BackfillPlan:
    package: str
    since: Version | None
    until: Version | None
    options: SuiteOptions
    prompts: PromptSet
    runner: str
    force: bool = False


def select_releases(
    plan: BackfillPlan, settings: Settings
) -> tuple[list[PublishedRelease], list[PublishedRelease]]:
    """(every release published in range, yanked and pre-releases included; the ones to run),
    both oldest first."""
    published = fetch_releases(plan.package, settings.pypi_url, settings.http_timeout_s)
    listed = in_range(published, plan.since, plan.until, prereleases=True, yanked=True)
    return listed, in_range(published, plan.since, plan.until)


def backfill_release(
    release: PublishedRelease,
    plan: BackfillPlan,
    settings: Settings,
    store: Store,
    index: IndexConfig,
    log: Callable[[str], None],
    on_event: OnEvent,
) -> BackfillItem:
    """Run, store and judge one release, unless it is stored already or does not install."""
    spec = EngineSpec(release.package, release.version)
    config = suite_config(spec, plan.options, plan.prompts, settings)
    if not plan.force:
        with store.reading() as session:
            stored = run_with_config(session, config, status=RunStatus.SUCCEEDED)
        if stored is not None:
            return BackfillItem(str(spec), "already stored", stored, "same suite config")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    run_dir = settings.runs_dir / f"{stamp}-{spec.slug}"
    try:
        result = execute(
            config,
            settings,
            runner=plan.runner,
            run_dir=run_dir,
            name=f"backfill-{spec.slug}",
            index=index,
            on_event=on_event,
            log=log,
        )
    except EnvBuildError as exc:
        reason = one_line(exc) or "environment build failed"
        with store.writing() as session:
            record_release(
                session, spec.package, str(spec.version), installable=False, install_error=reason
            )
        return BackfillItem(str(spec), "not installable", None, reason)
    except (RunnerUnavailable, RunnerLost) as exc:
        return BackfillItem(str(spec), "failed", None, one_line(exc))
    finished = finish(store, settings, result, runner=plan.runner)
    if result.status != "succeeded":
        detail = result.error or "suite failed"
        return BackfillItem(str(spec), "failed", finished.run_id, detail, finished)
    return BackfillItem(
        str(spec), "stored", finished.run_id, str(run_dir / "result.json"), finished
    )
