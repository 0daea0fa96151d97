"""Tolerance gates: the field's defaults, tolerance keys and limits checked once, and the gates
an arm is judged by, resolved most specific first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.config import Settings
from monitor.detection.errors import DetectionError
from monitor.gates import (
    DEFAULT_GATES,
    Gate,
    ToleranceError,
    check_override_key,
    check_tolerances,
    known_metrics,
    resolve_gates,
)


def limits(gates: tuple[Gate, ...]) -> dict[str, float]:
    return {gate.metric: gate.limit for gate in gates}


def test_defaults_cover_the_field_thresholds() -> None:
    by_metric = {gate.metric: gate for gate in DEFAULT_GATES}
    assert by_metric["token_mult_prob_error"].limit == 1.05
    assert by_metric["k1"].limit == 0.1 and by_metric["k1"].absolute
    assert by_metric["clip_fraction"].limit == 0.05 and not by_metric["clip_fraction"].absolute
    assert {"k3", "icepop_fraction", "tis_fraction"} <= set(by_metric)
    assert set(by_metric) <= known_metrics()


def test_known_metrics_span_token_sequence_and_agreement_metrics() -> None:
    assert {"k3", "seq_logratio_abs_max", "token_agreement", "n_tokens"} <= known_metrics()
    assert "k_3" not in known_metrics()


def test_a_gate_reports_the_measured_value_against_its_limit() -> None:
    k1 = Gate("k1", 0.1, "verl mismatch-KL warning", absolute=True)
    assert k1.check(0.1) is None and k1.check(-0.1) is None
    assert k1.check(-0.2) == "|k1| = 0.2 > 0.1 (verl mismatch-KL warning)"
    signed = Gate("mean_delta", 0.1, "override mean_delta")
    assert signed.check(-5.0) is None
    assert signed.check(0.12345) == "mean_delta = 0.1235 > 0.1 (override mean_delta)"


def test_overrides_resolve_most_specific_first() -> None:
    tolerances = {
        "k3": 0.5,
        "prefix_cache/k3": 0.2,
        "prefix_cache/cache_on_vs_off/k3": 0.05,
        "prefix_cache/cache_on_vs_off/token_mult_prob_error": None,
    }
    exact = {g.metric: g for g in resolve_gates("prefix_cache", "cache_on_vs_off", tolerances)}
    assert (
        exact["k3"].limit == 0.05
        and exact["k3"].source == "override prefix_cache/cache_on_vs_off/k3"
    )
    assert "token_mult_prob_error" not in exact
    assert limits(resolve_gates("prefix_cache", "other_arm", tolerances))["k3"] == 0.2
    other = limits(resolve_gates("dtype_floor", "fp32_engine_vs_fp32_trainer", tolerances))
    assert other["k3"] == 0.5 and other["token_mult_prob_error"] == 1.05
    assert resolve_gates("dtype_floor", "x", {}) == DEFAULT_GATES


@given(
    scopes=st.lists(st.sampled_from(["metric", "probe", "arm"]), unique=True),
    values=st.lists(st.floats(0, 10, allow_nan=False), min_size=3, max_size=3),
)
def test_the_most_specific_present_override_wins(scopes: list[str], values: list[float]) -> None:
    keys = {"metric": "k3", "probe": "p/k3", "arm": "p/a/k3"}
    tolerances = {keys[scope]: values[i] for i, scope in enumerate(scopes)}
    resolved = limits(resolve_gates("p", "a", tolerances))["k3"]
    for scope in ("arm", "probe", "metric"):
        if scope in scopes:
            assert resolved == values[scopes.index(scope)]
            break
    else:
        assert resolved == 0.1


def test_override_keeps_absolute_and_adds_new_gates() -> None:
    tolerances = {"k1": 0.01, "p/mean_abs_delta": 0.02}
    gates = {g.metric: g for g in resolve_gates("p", "a", tolerances)}
    assert gates["k1"].absolute and gates["k1"].check(-0.05) is not None
    assert gates["k1"].source == "override k1"
    assert gates["mean_abs_delta"].limit == 0.02 and not gates["mean_abs_delta"].absolute
    assert "mean_abs_delta" not in limits(resolve_gates("q", "a", tolerances))


@pytest.mark.parametrize(
    "key",
    ["", "k_3", "probe//k3", "a/b/c/k3", " k3", "probe/arm/", "probe/nonsense_metric"],
)
def test_bad_tolerance_keys_are_named(key: str) -> None:
    with pytest.raises(ToleranceError, match="tolerance key") as info:
        check_override_key(key)
    assert not isinstance(info.value, DetectionError)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.1"])
def test_bad_tolerance_values_are_named(value: object) -> None:
    with pytest.raises(ToleranceError, match="'k3' must be a finite number or null"):
        check_tolerances({"k3": value})


def test_checked_tolerances_hold_floats_or_none() -> None:
    checked = check_tolerances({"k3": 1, "p/a/k1": None, "p/clip_fraction": 0.2})
    assert checked == {"k3": 1.0, "p/a/k1": None, "p/clip_fraction": 0.2}
    assert isinstance(checked["k3"], float)
    assert check_override_key("p/a/k1") == ("p", "a", "k1")


def test_settings_read_tolerances_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARITY_TOLERANCES", '{"k3": 0.05, "prefix_cache/cache_on_vs_off/k1": null}')
    assert Settings().tolerances == {"k3": 0.05, "prefix_cache/cache_on_vs_off/k1": None}
    monkeypatch.setenv("PARITY_TOLERANCES", '{"prefix_cache/k_3": 0.05}')
    with pytest.raises(ValidationError, match="unknown metric 'k_3'"):
        Settings()
