"""Hostile results, on SQLite and PostgreSQL. A property-based test feeds mutations of a valid
result file (each field replaced by a hostile value, hostile keys, and raw-file mutations) through
the path `parity ingest` takes (read, validate, store, judge) and checks: no traceback, only a
one-line refusal naming the problem; the same decision and verdict on both backends; nothing
written on refusal; and a regressed release stored afterwards still opens its incident. Then bad
runs planted in a store (as stores written before the schema refused them may hold) are left out
of later judgements, each with a finding of its own."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update

from monitor.config import Settings
from monitor.judge import judge_run
from monitor.pipeline import finish
from monitor.schema import SchemaError, parse_result
from monitor.store import Store, StoreError, ingest_result, open_store
from monitor.store import models as m
from monitor.store.queries import table_counts
from tests.store_factory import succeeded
from tests.store_fixtures import empty_pg, in_ci

LIMIT = 1 << 20
"""The size limit the fuzzed door runs with (the real one, 256 MiB, is too large to fill)."""
EXAMPLES = 800 if in_ci() else 100
"""Hostile files per run, each through both backends (CI: the figure docs/store.md gives)."""
BASE = succeeded("0.31.0")
VALID = succeeded("0.32.0").model_dump(mode="json")
REGRESSED = succeeded("0.33.0", failing=("prefix_cache/cache_on", "logprob_semantics/raw"))
COUNTS = frozenset(
    {
        "engine_starts",
        "trainer_forwards",
        "n_parameters",
        "n_tokens",
        "n_sequences",
        "nonfinite_tokens",
        "unmet_claims",
        "n",
        "n_prompts",
        "max_tokens",
        "start_seconds",
        "work_seconds",
        "setup",
        "scoring",
    }
)
"""Fields (and timings) that count or time something: a negative value must be refused."""
DATES = frozenset({"started_at", "finished_at"})
DEEP = "\x01deep\x01"
"""Stands for 40 levels of nesting until the document is serialised."""

Path_ = tuple[str | int, ...]
Rule = Callable[[Path_], bool]


def _get(document: Any, path: Path_) -> Any:
    for part in path:
        document = document[part]
    return document


def always(_path: Path_) -> bool:
    return True


def never(_path: Path_) -> bool:
    return False


def counted(path: Path_) -> bool:
    return path[-1] in COUNTS


def dated(path: Path_) -> bool:
    return path[-1] in DATES


def was_int(path: Path_) -> bool:
    """Where an integer was: a float field takes any integer as a float."""
    value = _get(VALID, path)
    return isinstance(value, int) and not isinstance(value, bool)


HOSTILE: list[tuple[str, object, Rule]] = [
    ("lone surrogate", "\ud800", always),
    ("lone surrogate", "ok\udfffok", always),
    ("NUL", "a\x00b", always),
    ("NaN/Inf", math.nan, always),
    ("NaN/Inf", math.inf, always),
    ("NaN/Inf", -math.inf, always),
    ("integer beyond 64 bits", 2**63, was_int),
    ("integer beyond 64 bits", -(2**63) - 1, was_int),
    ("integer beyond 64 bits", 2**80, was_int),
    ("deep nesting", DEEP, always),
    ("negative count", -1, counted),
    ("negative count", -0.5, counted),
    ("naive or out-of-range date", "2026-11-01T12:00:00", dated),
    ("naive or out-of-range date", "0001-01-01T00:00:00+14:00", dated),
    ("naive or out-of-range date", "9999-12-31T23:59:59-14:00", dated),
    ("integer at the int32 edge", 2**31, never),
    ("integer at the int32 edge", 2**31 - 1, never),
    ("integer at the int32 edge", -(2**31), never),
    ("long text", "x" * 65, never),
    ("long text", "y" * 256, never),
    ("long text", "z" * 100_000, never),
    ("benign", None, never),
    ("benign", True, never),
    ("benign", "", never),
    ("benign", {}, never),
    ("benign", [], never),
    ("benign", 1e308, never),
    ("benign", 5e-324, never),
    ("benign", -0.0, never),
    ("benign", "é ‮ 🙂", never),
]
HOSTILE_KEYS: list[tuple[str, str, bool]] = [
    ("lone surrogate key", "\ud800", True),
    ("NUL key", "k\x00", True),
    ("long key", "m" * 65, False),
    ("empty key", "", False),
]


def _paths(node: object, prefix: Path_ = ()) -> Iterator[Path_]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


PATHS = sorted(_paths(VALID), key=repr)
DICT_PATHS = [path for path in PATHS if isinstance(_get(VALID, path), dict) and _get(VALID, path)]


def _serialised(document: object) -> bytes:
    nested = b'{"a": ' * 40 + b"1" + b"}" * 40
    return json.dumps(document).encode().replace(json.dumps(DEEP).encode(), nested)


class Case:
    """One hostile file: its category, bytes, and whether it must be refused."""

    def __init__(self, category: str, data: bytes, refuse: bool) -> None:
        self.category, self.data, self.refuse = category, data, refuse

    def __repr__(self) -> str:
        return f"Case({self.category!r}, {len(self.data)} bytes, refuse={self.refuse})"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        printer.text(repr(self))


@st.composite
def field_cases(draw: st.DrawFn) -> Case:
    """A valid result with one field (or container) replaced by a hostile value."""
    path = draw(st.sampled_from(PATHS))
    category, value, rule = draw(st.sampled_from(HOSTILE))
    document = json.loads(json.dumps(VALID))
    _get(document, path[:-1])[path[-1]] = value
    return Case(f"{category} ({path[-1]})", _serialised(document), rule(path))


@st.composite
def key_cases(draw: st.DrawFn) -> Case:
    """A valid result with one key of an object renamed to a hostile key."""
    path = draw(st.sampled_from(DICT_PATHS))
    category, key, refuse = draw(st.sampled_from(HOSTILE_KEYS))
    document = json.loads(json.dumps(VALID))
    node = _get(document, path)
    old = draw(st.sampled_from(sorted(node)))
    node[key] = node.pop(old)
    return Case(category, _serialised(document), refuse)


RAW = json.dumps(VALID).encode()
DUPLICABLE = [b'"engine_starts": 1', b'"status": "succeeded"', b'"k3": ', b'"arm": "raw"']


RAW_KINDS = (
    "not UTF-8",
    "BOM",
    "duplicate key",
    "deep raw nesting",
    "too large",
    "truncated",
    "NaN literal",
    "long integer literal",
    "trailing bytes",
    "reformatted",
)


@st.composite
def raw_cases(draw: st.DrawFn, kind: str) -> Case:
    """The valid file's bytes mutated: not UTF-8, a BOM, duplicate keys, deep nesting, too
    large, truncated, non-JSON numbers, trailing bytes, or reformatted."""
    if kind == "not UTF-8":
        at = draw(st.integers(0, len(RAW)))
        bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80"]))
        return Case(kind, RAW[:at] + bad + RAW[at:], True)
    if kind == "BOM":
        return Case(kind, b"\xef\xbb\xbf" + RAW, False)
    if kind == "duplicate key":
        pair = draw(st.sampled_from(DUPLICABLE))
        start = RAW.index(pair)
        end = RAW.index(b",", start + len(pair) - 1)
        return Case(kind, RAW[:end] + b", " + RAW[start:end] + RAW[end:], True)
    if kind == "deep raw nesting":
        depth = draw(st.sampled_from([40, 1000, 100_000]))
        nested = b"[" * depth + b"]" * depth
        return Case(
            kind, RAW.replace(b'"extra": {', b'"extra": {"deep": ' + nested + b", ", 1), True
        )
    if kind == "too large":
        return Case(kind, RAW[:-1] + b" " * (LIMIT - len(RAW) + 1) + b"}", True)
    if kind == "truncated":
        return Case(kind, RAW[: draw(st.integers(0, len(RAW) - 1))], True)
    if kind == "NaN literal":
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"]))
        return Case(kind, RAW.replace(b'"k3": ', b'"k3": ' + literal + b', "x": ', 1), True)
    if kind == "long integer literal":
        return Case(
            kind, RAW.replace(b'"engine_starts": 1', b'"engine_starts": ' + b"9" * 5000), True
        )
    if kind == "trailing bytes":
        return Case(kind, RAW + draw(st.sampled_from([b"x", b"{}", b"\x00"])), True)
    return Case(kind, json.dumps(VALID, indent=draw(st.integers(0, 3))).encode(), False)


CASES = st.one_of(
    *(field_cases() for _ in range(10)),
    *(key_cases() for _ in range(3)),
    *(raw_cases(kind) for kind in RAW_KINDS),
)
"""About 45 % field values, 10 % keys, 45 % raw-file mutations (each kind alike)."""


class Backend:
    """One database the fuzz test keeps for all its examples: seeded with a baseline release,
    put back to that state after every example that stored something."""

    def __init__(self, name: str, url: str, data_dir: Path) -> None:
        self.name = name
        self.settings = Settings(data_dir=data_dir, database_url=url)
        self.store = open_store(self.settings)
        self.seconds = 0.0
        finish(self.store, self.settings, BASE, runner="fuzz")
        with self.store.reading() as session:
            self.seeded = table_counts(session)
            self.marks = {
                model: session.scalar(select(func.max(model.id))) or 0 for model in ID_TABLES
            }
            self.series = set(session.scalars(select(m.SeriesRow.hash)))

    def counts(self) -> dict[str, int]:
        with self.store.reading() as session:
            return table_counts(session)

    def reset(self) -> None:
        """Delete what examples added (a run's children go with it)."""
        with self.store.writing() as session:
            for model in ID_TABLES:
                session.execute(delete(model).where(model.id > self.marks[model]))
                if model is m.RunRow:
                    session.execute(delete(m.SeriesRow).where(m.SeriesRow.hash.not_in(self.series)))
        assert self.counts() == self.seeded


ID_TABLES: tuple[Any, ...] = (
    m.AlertRow,
    m.IncidentEventRow,
    m.IncidentRow,
    m.RunRow,
    m.EnvironmentRow,
    m.ModelRow,
    m.ReleaseRow,
)
"""Tables an example can add to, in the order their rows can be deleted."""


@dataclass(frozen=True)
class Outcome:
    refused: bool
    verdict: tuple[object, ...] | None


def attempt(backend: Backend, case: Case) -> Outcome:
    """What `parity ingest` does with the file on one backend, checked as it goes."""
    before = backend.counts()
    started = time.perf_counter()
    try:
        try:
            result = parse_result(case.data, "hostile.json", max_bytes=LIMIT)
            finished = finish(backend.store, backend.settings, result, runner="fuzz")
        except (SchemaError, StoreError) as exc:
            message = str(exc)
            assert message.isprintable() and message, (backend.name, message)
            assert "could not be stored" not in message, f"{backend.name} database: {message}"
            assert backend.counts() == before, f"{backend.name} wrote part of {case}"
            return Outcome(True, None)
        assert finished.problem is None, f"{backend.name} could not judge {case}"
        judged = finished.judged
        assert judged is not None
        verdict = (
            judged.action,
            tuple(sorted((f.kind, f.probe, f.arm, f.metric, f.severity) for f in judged.findings)),
        )
        later = finish(backend.store, backend.settings, REGRESSED, runner="fuzz").judged
        assert later is not None and later.incident_id is not None, f"{case} poisoned judgement"
        assert later.draft is not None and later.draft.severity in ("major", "critical")
        backend.reset()
        return Outcome(False, verdict)
    finally:
        backend.seconds += time.perf_counter() - started


def test_hostile_results_are_refused_alike_and_never_poison_judgement(
    tmp_path: Path, pg_database: str
) -> None:
    empty_pg(pg_database)
    backends = [
        Backend("sqlite", f"sqlite:///{tmp_path / 'fuzz.db'}", tmp_path),
        Backend("postgresql", pg_database, tmp_path),
    ]
    tally: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(case=CASES)
    def check(case: Case) -> None:
        for backend in backends:
            if backend.counts() != backend.seeded:
                backend.reset()
        outcomes = [attempt(backend, case) for backend in backends]
        assert outcomes[0] == outcomes[1], f"{case}: {outcomes}"
        assert not (case.refuse and not outcomes[0].refused), f"{case} was stored"
        tally["refused" if outcomes[0].refused else "stored"] += 1
        tally[case.category.split(" (")[0]] += 1

    check()
    for backend in backends:
        files = tally["refused"] + tally["stored"]
        print(f"{backend.name}: {files} files in {backend.seconds:.1f} s {dict(tally)}")
        backend.store.close()


FAILING = ("prefix_cache/cache_on",)


def _trace_column(store: Store, run_id: int, column: str, change: Callable[[Any], Any]) -> None:
    """Rewrite one stored trace column of the run's first arm through `change`."""
    dtype = {"prompt_index": "<i4", "vllm_logprob": "<f8", "reference_logprob": "<f8"}[column]
    with store.writing() as session:
        arm_id = session.scalar(
            select(m.ArmRow.id).where(m.ArmRow.run_id == run_id).order_by(m.ArmRow.id)
        )
        raw = session.scalar(
            select(getattr(m.TraceRow, column)).where(m.TraceRow.arm_result_id == arm_id)
        )
        values = change(np.frombuffer(raw, dtype=dtype).copy())
        session.execute(
            update(m.TraceRow)
            .where(m.TraceRow.arm_result_id == arm_id)
            .values({column: np.asarray(values, dtype=dtype).tobytes()})
        )


def _nan_in_trace(store: Store, run_id: int) -> None:
    _trace_column(
        store, run_id, "vllm_logprob", lambda v: np.where(np.arange(v.size) == 0, np.nan, v)
    )


def _overflowing_trace(store: Store, run_id: int) -> None:
    _trace_column(store, run_id, "reference_logprob", lambda v: v - 1000.0)


def _other_prompts(store: Store, run_id: int) -> None:
    _trace_column(store, run_id, "prompt_index", lambda v: v + 100)


def _infinite_metric(store: Store, run_id: int) -> None:
    with store.writing() as session:
        session.execute(
            update(m.MetricRow)
            .where(m.MetricRow.run_id == run_id, m.MetricRow.name == "k3")
            .values(value=math.inf)
        )


def _invalid_config(store: Store, run_id: int) -> None:
    with store.writing() as session:
        run = session.get_one(m.RunRow, run_id)
        run.config = {**run.config, "prompts_sha256": "f" * 100}


@pytest.mark.parametrize(
    ("plant", "skipped"),
    [
        (_nan_in_trace, "vllm_logprob has 1 non-finite"),
        (_overflowing_trace, "overflows on this trace"),
        (_infinite_metric, "has non-finite metrics: k3"),
        (_other_prompts, None),
        (_invalid_config, "stored config is not valid: prompts_sha256"),
    ],
)
def test_a_bad_stored_run_is_left_out_and_later_releases_are_still_judged(
    store: Store, store_settings: Settings, plant: Callable[[Store, int], None], skipped: str | None
) -> None:
    good = ingest_result(store, succeeded("0.30.0")).run_id
    bad = ingest_result(store, succeeded("0.31.0")).run_id
    plant(store, bad)
    candidate = ingest_result(store, succeeded("0.32.0", failing=FAILING)).run_id

    judged = judge_run(store, candidate, store_settings)

    assert judged.action == "opened" and judged.baseline_run_id == good
    assert judged.draft is not None and judged.draft.severity == "major"
    notes = [f for f in judged.findings if f.kind == "unusable"]
    if plant is _invalid_config:
        assert notes == []
    else:
        assert [(f.arm, f.metric, f.severity) for f in notes] == [
            ("baseline", f"run {bad} (0.31.0)", "info")
        ]
    alone = judge_run(store, bad, store_settings)
    if skipped is None:
        assert alone.action == "clean" and [f.kind for f in alone.findings] == ["unusable"]
        return
    assert alone.action == "skipped" and skipped in alone.reason
    assert [(f.kind, f.arm, f.severity) for f in alone.findings] == [
        ("unusable", "candidate", "major")
    ]
