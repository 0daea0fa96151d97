"""Severity, one incident per release, the alert text, and the choice of baseline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.detection.baseline import choose_baseline
from monitor.detection.errors import DetectionError
from monitor.detection.findings import (
    SEVERITY_RANK,
    DivergentToken,
    Finding,
    IncidentDraft,
    build_incident,
    change_severity,
    direction,
    group_incidents,
)
from monitor.detection.render import render_alert, run_link


def drift(release: str, probe: str, metric: str, effect: float, **changes: object) -> Finding:
    floor = 0.01
    fields: dict[str, object] = {
        "release": release,
        "run_id": f"run-{release}",
        "kind": "drift",
        "probe": probe,
        "arm": "arm",
        "metric": metric,
        "direction": "worse" if effect > 0 else "better",
        "severity": change_severity("worse" if effect > 0 else "better", effect, floor, 0.05),
        "candidate_value": 0.05 + effect,
        "baseline_release": "0.31.0",
        "baseline_run_id": "run-0.31.0",
        "baseline_value": 0.05,
        "effect": effect,
        "noise_floor": floor,
        "effect_in_floors": effect / floor,
        "p_value": 1e-9,
        "q_value": 4e-8,
        "ci_low": effect * 0.8,
        "ci_high": effect * 1.2,
        "n_prompts": 52,
    }
    fields.update(changes)
    return Finding.model_validate(fields)


@given(
    small=st.floats(0.0, 100.0),
    extra=st.floats(0.0, 100.0),
    floor=st.floats(1e-6, 1.0),
)
def test_severity_rises_with_the_effect(small: float, extra: float, floor: float) -> None:
    lower = change_severity("worse", small * floor, floor, 1.0)
    higher = change_severity("worse", (small + extra) * floor, floor, 1.0)
    assert SEVERITY_RANK[higher] >= SEVERITY_RANK[lower] >= SEVERITY_RANK["minor"]


def test_severity_thresholds_and_improvements() -> None:
    assert change_severity("worse", 0.02, 0.01, 1.0) == "minor"
    assert change_severity("worse", -0.05, 0.01, 1.0) == "major"
    assert change_severity("worse", 0.2, 0.01, 1.0) == "critical"
    assert change_severity("better", 0.2, 0.01, 1.0) == "info"
    assert change_severity("worse", 0.01, None, 0.1) == "minor"
    assert change_severity("worse", 0.5, None, 0.1) == "critical"
    assert direction("k1", -0.01, 0.005) == "better"
    assert direction("k1", 0.01, -0.05) == "worse"
    assert direction("ess", 0.99, 0.9) == "worse"
    assert direction("k3", 0.01, 0.02) == "worse"


def test_findings_group_into_one_incident_per_release() -> None:
    findings = [
        drift("0.32.0", "prefix_cache", "k3", 0.05),
        drift("0.33.0", "fp32_head", "mean_abs_delta", 0.02),
        drift("0.32.0", "prefix_cache", "mean_abs_delta", 0.2),
        drift("0.32.0", "weight_sync", "k1", -0.02),
        drift("0.34.0", "dtype_floor", "k3", -0.05),
    ]
    incidents = group_incidents(findings)
    assert [i.release for i in incidents] == ["0.32.0", "0.33.0"]
    first = incidents[0]
    assert first.severity == "critical"
    assert first.probes == ["prefix_cache"] and first.metrics == ["k3", "mean_abs_delta"]
    assert [f.severity for f in first.findings] == ["critical", "major", "info"]
    assert first.baseline_release == "0.31.0" and first.baseline_run_id == "run-0.31.0"
    assert incidents[1].severity == "minor"


def test_info_alone_opens_no_incident_and_runs_are_not_mixed() -> None:
    assert build_incident([]) is None
    assert build_incident([drift("0.32.0", "p", "k3", -0.05)]) is None
    mixed = [drift("0.32.0", "p", "k3", 0.05), drift("0.32.0", "p", "k1", 0.05, run_id="other")]
    with pytest.raises(DetectionError, match="findings of one run, got 2"):
        build_incident(mixed)


def token() -> DivergentToken:
    return DivergentToken(
        probe="prefix_cache",
        arm="arm",
        index=17,
        prompt_index=3,
        position=9,
        token_id=1234,
        vllm_logprob=-0.1,
        reference_logprob=-2.4,
        delta=-2.3,
    )


def test_incident_survives_json_for_the_store() -> None:
    incident = build_incident([drift("0.32.0", "prefix_cache", "k3", 0.05)], [token()])
    assert incident is not None
    assert IncidentDraft.model_validate_json(incident.model_dump_json()) == incident


def test_alert_names_release_regression_numbers_and_link() -> None:
    findings = [
        drift("0.32.0", "prefix_cache", "k3", 0.05),
        Finding(
            release="0.32.0",
            run_id="run-0.32.0",
            kind="gate",
            probe="prefix_cache",
            arm="arm",
            metric="token_mult_prob_error",
            direction="worse",
            severity="major",
            candidate_value=1.08,
            baseline_value=1.01,
            limit=1.05,
        ),
        drift("0.32.0", "dtype_floor", "k1", -0.05),
    ]
    incident = build_incident(findings, [token()])
    assert incident is not None
    title, body = render_alert(incident, "http://dash.example:8501/")
    assert (
        title
        == "[major] vLLM 0.32.0: k3, token_mult_prob_error regressed in prefix_cache vs 0.31.0"
    )
    assert "baseline 0.31.0 (run run-0.31.0)" in body
    assert "prefix_cache/arm/k3 [drift, major, worse]: baseline 0.05 -> candidate 0.1" in body
    assert "effect +0.05 = 5.0x noise floor 0.01, p = 1e-09, q = 4e-08" in body
    assert "95% CI [+0.04, +0.06], 52 prompts" in body
    assert "1.08 breaks limit 1.05 (baseline 1.01)" in body
    assert "Also noted (1, info): dtype_floor/arm/k1" in body
    assert "token #17 (prompt 3, position 9, id 1234): delta -2.3" in body
    assert body.endswith("Details: http://dash.example:8501/run_detail?run=run-0.32.0")


def test_bad_dashboard_url_is_named() -> None:
    assert run_link("https://x.org/base", "a b") == "https://x.org/base/run_detail?run=a%20b"
    for bad in ("", "dash:8501", "ftp://x.org"):
        with pytest.raises(DetectionError, match="not an http"):
            run_link(bad, "1")


def test_baseline_is_the_previous_measured_release_whatever_its_gates_said() -> None:
    series = ["0.30.0", "0.31.0", "0.31.1", "0.32.0"]
    assert choose_baseline(series, "0.32.0") == "0.31.1"
    assert choose_baseline(series, "0.31.0") == "0.30.0"
    assert choose_baseline(series, "0.30.0") is None
    assert choose_baseline(series, "0.40.0") == "0.32.0"
    assert choose_baseline(["0.9.0", "0.10.0"], "0.11.0") == "0.10.0"
    assert choose_baseline(["0.10.0", "0.9.0"], "0.10.0") == "0.9.0"


@pytest.mark.parametrize(
    ("series", "candidate", "message"),
    [
        (["0.30.0"], "latest", "'latest' is not a PEP 440 version"),
        (["0.3x"], "0.31.0", "'0.3x' is not a PEP 440"),
        (["0.30.0", "0.30"], "0.31.0", "appears twice"),
    ],
)
def test_bad_series_raise_named_errors(series: list[str], candidate: str, message: str) -> None:
    with pytest.raises(DetectionError, match=message):
        choose_baseline(series, candidate)
