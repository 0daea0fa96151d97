"""Suite entry point, run inside a release environment by the monitor:
`python -m monitor.suite --config REQUEST.json --out RESULT.json`.

Whatever happens, RESULT.json ends up either a succeeded result or a failed one carrying the
error and its traceback tail; it is never half-written."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from monitor.schema import SuiteConfig, SuiteResult, storable_text, write_result


def _emitter(stream: TextIO | None) -> Any:
    def emit(event: str, **fields: Any) -> None:
        if stream is not None:
            stream.write(json.dumps({"event": event, **fields}) + "\n")
            stream.flush()

    return emit


def failed_result(config: SuiteConfig, started_at: datetime, exc: BaseException) -> SuiteResult:
    tail = storable_text("".join(traceback.format_exception(exc))[-4000:])
    message = storable_text(f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500])
    return SuiteResult(
        status="failed",
        error=message,
        error_tail=tail,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        config=config,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monitor.suite")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--model-cache", type=Path, required=True)
    parser.add_argument("--progress-fd", type=int, default=None)
    args = parser.parse_args(argv)
    started_at = datetime.now(UTC)
    config = SuiteConfig.model_validate_json(args.config.read_text())
    stream = os.fdopen(args.progress_fd, "w", buffering=1) if args.progress_fd else None
    emit = _emitter(stream)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        from monitor.suite.runner import run_suite

        result = run_suite(config, args.work_dir, args.model_cache, emit, started_at)
    except Exception as exc:
        result = failed_result(config, started_at, exc)
    write_result(result, args.out)
    emit("done", status=result.status, error=result.error)
    return 0 if result.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
