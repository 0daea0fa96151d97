"""Loopback helpers for tests: a real HTTP server on 127.0.0.1 answering fixed paths (recorded
PyPI answers), a webhook receiver that records what is posted to it (slow or failing on demand),
a free port, and waiting for a condition."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every probe stays bound until all are chosen, so the kernel
    cannot hand the same port out twice (one-at-a-time probes can collide)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy (returned) or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or condition}")


@contextmanager
def serve(
    routes: Mapping[str, tuple[int, bytes]], on_request: Callable[[str], None] | None = None
) -> Iterator[str]:
    """Serve `routes` (path -> (status, body)); anything else is a 404. `on_request` is called
    with each request's path before it is answered. Yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if on_request is not None:
                on_request(self.path)
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@dataclass
class Webhook:
    """A running webhook receiver: its port, what it received in order of arrival (each the
    request's path, its headers, its arrival on the monotonic clock and the posted JSON object's
    fields) and how many answers it got out."""

    port: int
    received: list[dict[str, Any]] = field(default_factory=list)
    answered: int = 0


@contextmanager
def webhook(
    port: int = 0, *, delay_s: float = 0.0, statuses: Sequence[int] = ()
) -> Iterator[Webhook]:
    """A webhook receiver on 127.0.0.1:`port` (0: a free one). Each POST is recorded as it
    arrives (the receiver has "processed" it), then answered after `delay_s` (a slow receiver)
    with the next of `statuses`, 200 once they are used up. A sender that gave up waiting finds
    the connection gone; that is not an error here."""
    hook = Webhook(port)
    lock = threading.Lock()
    pending = list(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            posted = json.loads(self.rfile.read(length))
            with lock:
                hook.received.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "at": time.monotonic(),
                        **posted,
                    }
                )
                status = pending.pop(0) if pending else 200
            time.sleep(delay_s)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                return
            with lock:
                hook.answered += 1

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    hook.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        httpd.shutdown()
        httpd.server_close()
