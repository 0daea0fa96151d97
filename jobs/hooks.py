"""What happens after a scheduled run ends (succeeded, failed or timed out). Detection and
alerting plug in here: add the "module:function" path of a `function(store, run_id)` to
AFTER_RUN; a deployment adds its own with PARITY_AFTER_RUN_HOOKS. Hooks run in the process that
ended the run (its worker, or the scheduler when it collects a result a worker left behind);
one that fails is logged and never fails the run. A hook may see a run twice (a worker that
died after storing): make it idempotent."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from monitor.store import Store

logger = logging.getLogger(__name__)
AfterRun = Callable[[Store, int], None]
AFTER_RUN: list[str] = ["monitor.store.incidents:detect_after_run"]
"""Called in order with (store, run_id) once a run is succeeded, failed or timed out. Detection
judges succeeded runs (and confirmation runs) with the PARITY_* settings of the process."""


def resolve(path: str) -> AfterRun:
    module, _, name = path.partition(":")
    function: AfterRun = getattr(importlib.import_module(module), name)
    return function


def after_run(store: Store, run_id: int, extra: list[str] | None = None) -> None:
    for path in [*AFTER_RUN, *(extra or [])]:
        try:
            resolve(path)(store, run_id)
        except Exception:
            logger.exception("after-run hook %s failed for run %d", path, run_id)
