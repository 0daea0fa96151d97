"""Tolerance gates: defaults, the verdict the suite uses, and overrides most-specific-first."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor import tolerances
from monitor.config import Settings
from monitor.detection.errors import DetectionError
from monitor.detection.gates import (
    DEFAULT_GATES,
    Gate,
    check_override_key,
    check_overrides,
    known_metrics,
    resolve_gates,
    verdict,
)


def limits(gates: tuple[Gate, ...]) -> dict[str, float]:
    return {gate.metric: gate.limit for gate in gates}


def test_suite_verdict_is_unchanged_through_tolerances() -> None:
    assert tolerances.verdict is verdict and tolerances.DEFAULT_GATES is DEFAULT_GATES
    assert tolerances.verdict({"token_mult_prob_error": 1.01, "k1": -0.05, "k3": 0.0}) == (
        "pass",
        [],
    )
    outcome, reasons = tolerances.verdict({"token_mult_prob_error": 1.387, "k1": -0.2})
    assert outcome == "fail"
    assert reasons == [
        "token_mult_prob_error = 1.387 > 1.05 (NeMo-RL gate)",
        "|k1| = 0.2 > 0.1 (verl mismatch-KL warning)",
    ]


def test_defaults_cover_the_field_thresholds() -> None:
    by_metric = {gate.metric: gate for gate in DEFAULT_GATES}
    assert by_metric["token_mult_prob_error"].limit == 1.05
    assert by_metric["k1"].limit == 0.1 and by_metric["k1"].absolute
    assert {"k3", "icepop_fraction", "tis_fraction", "clip_fraction"} <= set(by_metric)
    assert set(by_metric) <= known_metrics()
    assert verdict({"clip_fraction": 0.06})[0] == "fail"
    assert verdict({"unrelated": 99.0}) == ("pass", [])


def test_overrides_resolve_most_specific_first() -> None:
    overrides = {
        "k3": 0.5,
        "prefix_cache/k3": 0.2,
        "prefix_cache/cache_on_vs_off/k3": 0.05,
        "prefix_cache/cache_on_vs_off/token_mult_prob_error": None,
    }
    exact = limits(resolve_gates("prefix_cache", "cache_on_vs_off", overrides))
    assert exact["k3"] == 0.05
    assert "token_mult_prob_error" not in exact
    assert limits(resolve_gates("prefix_cache", "other_arm", overrides))["k3"] == 0.2
    other = limits(resolve_gates("dtype_floor", "fp32_engine_vs_fp32_trainer", overrides))
    assert other["k3"] == 0.5 and other["token_mult_prob_error"] == 1.05
    assert limits(resolve_gates("dtype_floor", "x", {})) == limits(DEFAULT_GATES)


@given(
    scopes=st.lists(st.sampled_from(["metric", "probe", "arm"]), unique=True),
    values=st.lists(st.floats(0, 10, allow_nan=False), min_size=3, max_size=3),
)
def test_the_most_specific_present_override_wins(scopes: list[str], values: list[float]) -> None:
    keys = {"metric": "k3", "probe": "p/k3", "arm": "p/a/k3"}
    overrides = {keys[scope]: values[i] for i, scope in enumerate(scopes)}
    resolved = limits(resolve_gates("p", "a", overrides))["k3"]
    for scope in ("arm", "probe", "metric"):
        if scope in scopes:
            assert resolved == values[scopes.index(scope)]
            break
    else:
        assert resolved == 0.1


def test_override_keeps_absolute_and_adds_new_gates() -> None:
    gates = {g.metric: g for g in resolve_gates("p", "a", {"k1": 0.01, "p/mean_abs_delta": 0.02})}
    assert gates["k1"].absolute and gates["k1"].check(-0.05) is not None
    assert gates["k1"].source == "override k1"
    assert gates["mean_abs_delta"].limit == 0.02 and not gates["mean_abs_delta"].absolute
    assert "mean_abs_delta" not in limits(resolve_gates("q", "a", {"p/mean_abs_delta": 0.02}))


@pytest.mark.parametrize(
    "key",
    ["", "k_3", "probe//k3", "a/b/c/k3", " k3", "probe/arm/", "probe/nonsense_metric"],
)
def test_bad_override_keys_are_named(key: str) -> None:
    with pytest.raises(DetectionError, match="tolerance key"):
        check_override_key(key)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "0.1"])
def test_bad_override_values_are_named(value: object) -> None:
    with pytest.raises(DetectionError, match="finite number or null"):
        check_overrides({"k3": value})  # type: ignore[dict-item]


def test_settings_read_overrides_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARITY_TOLERANCES", '{"k3": 0.05, "prefix_cache/cache_on_vs_off/k1": null}')
    assert Settings().tolerances == {"k3": 0.05, "prefix_cache/cache_on_vs_off/k1": None}
    monkeypatch.setenv("PARITY_TOLERANCES", '{"prefix_cache/k_3": 0.05}')
    with pytest.raises(ValidationError, match="unknown metric 'k_3'"):
        Settings()


def test_gates_import_without_scipy_for_release_environments() -> None:
    """The suite imports the gates inside release environments, which lack scipy and ruptures."""
    code = (
        "import sys, monitor.tolerances, monitor.detection.gates;"
        "bad = [m for m in ('scipy', 'ruptures', 'pydantic_settings') if m in sys.modules];"
        "sys.exit(str(bad) if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
