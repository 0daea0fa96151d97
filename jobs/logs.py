"""Log lines of the scheduler and its workers: time, level, source, message, on stderr (the
service manager's journal). Libraries' routine chatter (migrations, every job execution) is
left out."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("alembic", "apscheduler", "httpx", "urllib3")


def configure(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
