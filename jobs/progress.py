"""Writes a held run's progress to the store from a thread of its own, so a busy database never
holds up the suite's event pipe: at most once a period, always the newest progress (what came
between is dropped), and what is pending when it stops."""

from __future__ import annotations

import copy
import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

from monitor.errors import one_line
from monitor.progress import WRITE_EVERY_S, RunProgress
from monitor.store import Store, StoreError
from monitor.store.progress import expected_seconds, save_progress

logger = logging.getLogger("jobs.progress")


def expected_duration(store: Store, run_id: int) -> float | None:
    """The last such run's duration, for the estimate; None when unknown or unreadable."""
    try:
        with store.reading() as session:
            return expected_seconds(session, run_id)
    except (SQLAlchemyError, StoreError):
        return None


class ProgressWriter(threading.Thread):
    """The sink of a ProgressFeed: `offer` hands it the progress, the thread stores the newest."""

    def __init__(
        self, store: Store, run_id: int, owner: str, every_s: float = WRITE_EVERY_S
    ) -> None:
        super().__init__(name=f"progress-{run_id}", daemon=True)
        self.store, self.run_id, self.owner, self.every_s = store, run_id, owner, every_s
        self.lock = threading.Lock()
        self.pending: RunProgress | None = None
        self.wake = threading.Event()
        self.stopped = threading.Event()

    def offer(self, progress: RunProgress) -> None:
        with self.lock:
            self.pending = copy.copy(progress)
        self.wake.set()

    def run(self) -> None:
        while not self.stopped.is_set() or self.pending is not None:
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            with self.lock:
                progress, self.pending = self.pending, None
            if progress is not None:
                self._write(progress)
                self.stopped.wait(self.every_s)

    def _write(self, progress: RunProgress) -> None:
        try:
            with self.store.writing() as session:
                save_progress(session, self.run_id, self.owner, progress)
        except (SQLAlchemyError, StoreError) as exc:
            logger.warning("progress of run %d not stored: %s", self.run_id, one_line(exc))

    def stop(self) -> None:
        """Write what is pending, then end."""
        self.stopped.set()
        self.wake.set()
        if self.is_alive():
            self.join(timeout=10)
