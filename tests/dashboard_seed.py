"""A results store for the dashboard's tests, filled through the real ingest path with
realistic results (tests/store_factory.py): releases across 0.9.x, 0.10.x and 0.11.x (so string
order and version order differ), three repeat runs of one release, a level shift from 0.10.1
on, an arm that breaks its tolerance gates (nothing stores a verdict: readers judge it), an
engine default that changes in 0.11.0 and a failed run. A second, hostile store holds results
whose text (device, model name, arm name, reasons, error) is Markdown and HTML aimed at the page."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from monitor.config import Settings
from monitor.judge import judge_run
from monitor.schema import SuiteResult
from monitor.store import ingest_result, open_store
from tests.store_factory import MODEL, PROBE_ARMS, T0, failed, succeeded

VERSIONS = ("0.9.1", "0.9.2", "0.10.0", "0.10.1", "0.11.0")
REPEATED = "0.10.1"
SHIFTED_FROM = "0.10.1"
LEVEL_SHIFT = 0.3
REPEAT_SHIFTS = (0.0, 0.004, 0.008)
FAILING_ARM = ("0.10.0", "prefix_cache/cache_on")
CHANGED_DEFAULT = ("0.11.0", "attention_backend", "FLEX_ATTENTION")
FAILED_VERSION = "0.11.1"
HOSTILE = "[x](http://evil.example) ![i](http://evil.example/i.png)"
HOSTILE_HTML = '<a href="http://evil.example/m">model</a><img src="http://evil.example/m.png">'
HOSTILE_ARM = "cache_on [y](http://evil.example/arm)"
HOSTILE_ERROR = f"engine died: {HOSTILE} \x1b[2J\u202ereversed"
HOSTILE_VERSIONS = ("0.12.0", "0.12.1")
"""The hostile store's releases; the second breaks the hostile arm's gates (an incident)."""


@dataclass
class Seeded:
    """Where the seeded store is and which run holds what."""

    url: str
    runs: dict[str, list[int]] = field(default_factory=dict)
    failed_run: int = 0

    def newest(self, version: str) -> int:
        return self.runs[version][-1]

    def copy_to(self, path: Path) -> str:
        """The URL of a copy of this SQLite store at `path`, for a test that writes to it."""
        shutil.copy(self.url.removeprefix("sqlite:///"), path)
        return f"sqlite:///{path}"


def seeded_results() -> list[tuple[str, SuiteResult]]:
    """(version, result) in the order they are stored."""
    results = []
    shifted = False
    for index, version in enumerate(VERSIONS):
        shifted = shifted or version == SHIFTED_FROM
        repeats = REPEAT_SHIFTS if version == REPEATED else (0.0,)
        for repeat, extra in enumerate(repeats):
            results.append(
                (
                    version,
                    succeeded(
                        version,
                        shift=(LEVEL_SHIFT if shifted else 0.0) + extra,
                        failing=(FAILING_ARM[1],) if version == FAILING_ARM[0] else (),
                        started=T0 + timedelta(days=index, hours=repeat),
                        effective=(
                            {CHANGED_DEFAULT[1]: CHANGED_DEFAULT[2]}
                            if version == CHANGED_DEFAULT[0]
                            else None
                        ),
                    ),
                )
            )
    results.append((FAILED_VERSION, failed(FAILED_VERSION, started=T0 + timedelta(days=9))))
    return results


def seed_store(path: Path) -> Seeded:
    """Build the seeded SQLite store at `path`."""
    url = f"sqlite:///{path}"
    store = open_store(Settings(database_url=url, data_dir=path.parent))
    seeded = Seeded(url=url)
    try:
        for version, result in seeded_results():
            run_id = ingest_result(store, result, runner="local").run_id
            if result.status == "failed":
                seeded.failed_run = run_id
            else:
                seeded.runs.setdefault(version, []).append(run_id)
    finally:
        store.close()
    return seeded


def detect_failing_release(seeded: Seeded) -> None:
    """Run real detection on the release with the failing arm: it opens incident 1."""
    store = open_store(Settings(database_url=seeded.url))
    try:
        outcome = judge_run(store, seeded.newest(FAILING_ARM[0]), Settings())
    finally:
        store.close()
    assert outcome.action == "opened" and outcome.incident_id == 1


def hostile_results() -> list[tuple[str, SuiteResult]]:
    """(version, result): two releases whose device, model name, prefix-cache arm and n/a
    reason are hostile text, then a failed run whose error is (with ESC and U+202E too)."""
    model = MODEL.model_copy(update={"name": HOSTILE_HTML})
    arms = {**PROBE_ARMS, "prefix_cache": (HOSTILE_ARM,)}
    results = []
    for index, version in enumerate(HOSTILE_VERSIONS):
        result = succeeded(
            version,
            device=HOSTILE,
            arms=arms,
            failing=(f"prefix_cache/{HOSTILE_ARM}",) if index else (),
            not_applicable={"v0_vs_v1": HOSTILE},
            started=T0 + timedelta(days=index),
        )
        results.append((version, result.model_copy(update={"model": model})))
    broken = failed("0.12.2", started=T0 + timedelta(days=5))
    results.append(("0.12.2", broken.model_copy(update={"error": HOSTILE_ERROR})))
    return results


def seed_hostile(path: Path) -> Seeded:
    """Build the hostile SQLite store at `path`, and judge its second release (incident 1)."""
    url = f"sqlite:///{path}"
    store = open_store(Settings(database_url=url, data_dir=path.parent))
    seeded = Seeded(url=url)
    try:
        for version, result in hostile_results():
            run_id = ingest_result(store, result, runner="local").run_id
            if result.status == "failed":
                seeded.failed_run = run_id
            else:
                seeded.runs.setdefault(version, []).append(run_id)
        outcome = judge_run(store, seeded.newest(HOSTILE_VERSIONS[1]), Settings())
    finally:
        store.close()
    assert outcome.action == "opened" and outcome.incident_id == 1
    return seeded
