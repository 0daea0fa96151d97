"""Release discovery for the scheduler: ask PyPI's JSON API for every configured package, store
what it says of each release, and queue a run of each new release that may run (pre-release and
yanked policies from the settings). Only releases that are new to the world are queued. On a
package's first discovery (the store never had the index's answer for it) that is its newest
release when the store knew none, else only releases newer than every one it knew, whatever
their upload dates: the history is `parity backfill`'s. Later, releases newer than every known
one or uploaded after the newest known upload. A failed or garbled answer is logged and changes
nothing; the next discovery asks again."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from packaging.version import Version
from sqlalchemy.exc import SQLAlchemyError

from monitor.config import Settings
from monitor.engines import EngineSpec
from monitor.releases import DiscoveryError, PublishedRelease, fetch_releases, in_range
from monitor.requests import RunRequest, check_options, request_config
from monitor.schema import SuiteOptions
from monitor.store import Store, StoreError
from monitor.store.ingest import record_published
from monitor.store.models import DISCOVERY
from monitor.store.queries import list_releases
from monitor.store.queue import insert_run, run_with_config

logger = logging.getLogger(__name__)


@dataclass
class Discovered:
    """What one discovery pass did for one package."""

    package: str
    new_versions: list[str] = field(default_factory=list)
    queued: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def scheduled_options(settings: Settings) -> SuiteOptions:
    """Suite options of scheduled (discovery and nightly) runs; RequestError when the settings
    name a model or probe that cannot run."""
    options: dict[str, Any] = {"model": settings.scheduled_model}
    if settings.scheduled_probes:
        options["probes"] = list(settings.scheduled_probes)
    return check_options(options)


def newly_published(
    candidates: list[PublishedRelease],
    known: set[str],
    published: list[PublishedRelease],
    *,
    first_look: bool,
) -> list[PublishedRelease]:
    """Of releases not stored before (in version order), those published since the store last
    knew the package: with nothing known, the newest; on the `first_look` at the index, those
    newer than every known version; later, those too and those uploaded after the newest known
    upload (a patch of an older line)."""
    if not known:
        return candidates[-1:]
    newest = max(Version(v) for v in known)
    stamps = [r.published for r in published if str(r.version) in known and r.published]
    since = None if first_look else max(stamps, default=None)
    return [
        r
        for r in candidates
        if r.version > newest or (since is not None and r.published and r.published > since)
    ]


def discover_package(store: Store, settings: Settings, package: str) -> Discovered:
    outcome = Discovered(package)
    try:
        published = fetch_releases(package, settings.pypi_url, settings.http_timeout_s)
    except DiscoveryError as exc:
        outcome.error = str(exc).splitlines()[0]
        logger.warning("discovery of %s failed, asking again next time: %s", package, outcome.error)
        return outcome
    runnable = in_range(
        published,
        prereleases=settings.discovery_prereleases,
        yanked=settings.discovery_yanked,
    )
    options = scheduled_options(settings)
    with store.writing() as session:
        stored = list_releases(session, package=package)
        known = {release.version for release in stored}
        first_look = all(release.published_at is None for release in stored)
        outcome.new_versions = record_published(session, published)
        to_queue = [r for r in runnable if str(r.version) in outcome.new_versions]
        to_queue = newly_published(to_queue, known, published, first_look=first_look)
        for release in to_queue:
            request = RunRequest(
                EngineSpec(package, release.version), options, settings.runner, None, DISCOVERY
            )
            config = request_config(request, settings)
            if run_with_config(session, config) is not None:
                continue
            outcome.queued[str(release.version)] = insert_run(
                session, config, request.runner, request.requested_by
            )
    if outcome.new_versions:
        logger.info(
            "discovered %d new %s release(s): %s; queued %s",
            len(outcome.new_versions),
            package,
            ", ".join(outcome.new_versions),
            ", ".join(f"{v} (run {r})" for v, r in outcome.queued.items()) or "none",
        )
    return outcome


def discover(store: Store, settings: Settings) -> list[Discovered]:
    """One discovery pass over every configured package; never raises for a bad answer."""
    outcomes = []
    for package in settings.discovery_packages:
        try:
            outcomes.append(discover_package(store, settings, package))
        except (StoreError, SQLAlchemyError) as exc:
            reason = str(exc).strip().splitlines()[0]
            logger.warning(
                "discovery of %s not stored, trying again next time: %s", package, reason
            )
            outcomes.append(Discovered(package, error=reason))
    return outcomes
