"""Release discovery from the PyPI JSON API: every published version of an engine package."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from packaging.version import InvalidVersion, Version
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from monitor.config import Settings
from monitor.engines import EngineSpec, parse_package

logger = logging.getLogger(__name__)
NEWEST_TRIES = 3


class DiscoveryError(RuntimeError):
    """PyPI could not be asked, or answered something that is not a release list."""


@dataclass(frozen=True)
class PublishedRelease:
    package: str
    version: Version
    published: datetime | None
    yanked: bool


@retry(
    retry=retry_if_exception_type((httpx.TransportError, httpx.HTTPStatusError)),
    stop=stop_after_attempt(3),
    wait=wait_exponential(multiplier=0.5, max=4),
    reraise=True,
)
def _get_json(url: str, timeout: float) -> object:
    response = httpx.get(url, timeout=timeout, follow_redirects=True)
    if response.status_code == 404:
        raise DiscoveryError(f"{url}: no such project on the index (HTTP 404)")
    response.raise_for_status()
    return response.json()


def fetch_releases(package: str, pypi_url: str, timeout: float = 20.0) -> list[PublishedRelease]:
    """All releases of `package`, oldest first; versions that are not PEP 440 are skipped."""
    package = parse_package(package)
    url = f"{pypi_url.rstrip('/')}/pypi/{package}/json"
    try:
        document = _get_json(url, timeout)
    except (httpx.HTTPError, ValueError) as exc:
        raise DiscoveryError(f"cannot list releases of {package} from {url}: {exc}") from exc
    releases_field = document.get("releases") if isinstance(document, dict) else None
    if not isinstance(releases_field, dict):
        raise DiscoveryError(f"{url}: answer has no 'releases' mapping")
    found = []
    for raw_version, files in releases_field.items():
        try:
            version = Version(raw_version)
        except InvalidVersion:
            logger.warning("%s: skipping release %r, not a PEP 440 version", url, raw_version)
            continue
        if not isinstance(files, list) or not files:
            continue
        uploads = [
            _upload_time(f.get("upload_time_iso_8601")) for f in files if isinstance(f, dict)
        ]
        stamps = sorted(u for u in uploads if u is not None)
        published = stamps[0] if stamps else None
        yanked = all(isinstance(f, dict) and f.get("yanked") for f in files)
        found.append(PublishedRelease(package, version, published, yanked))
    return sorted(found, key=lambda r: r.version)


def _upload_time(stamp: object) -> datetime | None:
    """An upload time in UTC; None for a missing or unreadable one (a garbled answer)."""
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def installable_candidates(
    releases: list[PublishedRelease], prereleases: bool = False
) -> list[PublishedRelease]:
    """Newest first, without yanked releases and (by default) without pre-releases."""
    kept = [r for r in releases if not r.yanked and (prereleases or not r.version.is_prerelease)]
    return sorted(kept, key=lambda r: r.version, reverse=True)


def in_range(
    releases: list[PublishedRelease],
    since: Version | None = None,
    until: Version | None = None,
    prereleases: bool = False,
    yanked: bool = False,
) -> list[PublishedRelease]:
    """Oldest first: the releases with since <= version <= until (by default neither yanked nor
    pre-releases)."""
    return sorted(
        (
            r
            for r in releases
            if (yanked or not r.yanked)
            and (prereleases or not r.version.is_prerelease)
            and (since is None or r.version >= since)
            and (until is None or r.version <= until)
        ),
        key=lambda r: r.version,
    )


def candidate_releases(
    package: str,
    version: Version | None,
    settings: Settings,
    log: Callable[[str], None] = lambda _: None,
) -> list[EngineSpec]:
    """The release asked for, or (no version) the newest few installable releases of the
    package on the index, newest first."""
    if version is not None:
        return [EngineSpec(package, version)]
    log(f"asking {settings.pypi_url} for the newest {package} release")
    published = fetch_releases(package, settings.pypi_url, settings.http_timeout_s)
    found = installable_candidates(published)
    if not found:
        raise DiscoveryError(f"no installable {package} release found on {settings.pypi_url}")
    return [EngineSpec(package, release.version) for release in found[:NEWEST_TRIES]]
