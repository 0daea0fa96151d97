"""The findings table and the run summary read at any terminal width: one line per finding (per
arm), never wider than the terminal, never wrapped, each finding's metric and severity (each
arm's verdict) in view; rendered in-process at fixed widths and printed by the real `parity
detect` and `parity report` under COLUMNS."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from monitor.cli.findings import findings_table
from monitor.cli.summary import print_summary
from monitor.config import Settings
from monitor.detection.findings import Finding
from monitor.schema import write_result
from monitor.store import ingest_result, open_store
from tests.conftest import parity
from tests.store_factory import succeeded

LONG_ARMS = {
    "logprob_semantics": (
        "default_vs_trainer_processed",
        "processed_vs_trainer_temperature",
        "raw_vs_trainer_raw",
    ),
    "prefix_cache": ("cache_on_vs_off",),
    "batch_invariance": ("batch_1_vs_batch_n", "repeat_run"),
    "v0_vs_v1": ("v0_vs_v1",),
}
FAILING = ("logprob_semantics/default_vs_trainer_processed", "prefix_cache/cache_on_vs_off")
SEVERITIES = ("info", "minor", "major", "critical")


def finding(
    probe: str, arm: str, metric: str, kind: str, severity: str, **numbers: float
) -> Finding:
    return Finding(
        release="0.32.0",
        run_id="7",
        kind=kind,  # type: ignore[arg-type]
        probe=probe,
        arm=arm,
        metric=metric,
        direction="worse",
        severity=severity,  # type: ignore[arg-type]
        candidate_value=numbers.pop("candidate", None),
        **numbers,  # type: ignore[arg-type]
    )


FINDINGS = [
    finding(
        "logprob_semantics",
        "default_vs_trainer_processed",
        "token_mult_prob_error",
        "gate",
        "major",
        candidate=1.5123,
        limit=1.05,
    ),
    finding(
        "logprob_semantics",
        "default_vs_trainer_processed",
        "token_mult_prob_error",
        "drift",
        "critical",
        candidate=1.5123,
        baseline_value=1.0000013,
        effect=0.5123,
        effect_in_floors=412.7,
        q_value=1.2e-7,
    ),
    finding(
        "logprob_semantics",
        "processed_vs_trainer_temperature",
        "outside_support_fraction",
        "change_point",
        "minor",
        candidate=0.01234,
        baseline_value=0.000123,
        effect=-0.0122,
    ),
    finding("weight_sync", "no_reset", "mean_abs_delta", "gate", "critical", candidate=0.749),
    finding("prefix_cache", "cache_on_vs_off", "seq_diverged_fraction", "coverage", "info"),
]


def rows(output: str) -> list[tuple[str, str, str]]:
    """(series, severity, kind) of every finding line of a findings table, flat or grouped."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"(severity|metric)\s", line))
    flat = lines[start].startswith("severity")
    found, heading = [], ""
    for line in lines[start + 1 :]:
        if not line.strip() or line.startswith("left out at"):
            break
        if flat:
            severity, kind, series = line.split()[:3]
            found.append((series, severity, kind))
        elif line.startswith("  "):
            metric, severity, kind = line.split()[:3]
            found.append((f"{heading}/{metric}", severity, kind))
        else:
            heading = line.strip()
    return found


def rendered(renderable: object, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def assert_fits(output: str, width: int) -> None:
    too_wide = [line for line in output.splitlines() if cell_len(line.rstrip()) > width]
    assert not too_wide, "\n".join(too_wide)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_every_finding_is_one_line_with_its_metric_and_severity(width: int) -> None:
    output = rendered(findings_table(FINDINGS), width)
    assert_fits(output, width)
    expected = Counter((f.series, f.severity, f.kind) for f in FINDINGS)
    assert Counter(rows(output)) == expected, output
    lines = output.splitlines()
    assert len(lines) <= 1 + 4 + len(FINDINGS) + 1, "a heading per arm, a line per finding"
    if width >= 120:
        assert "left out" not in output and "1.2e-07" in output and "412.7" in output


def test_a_narrow_terminal_says_which_numbers_it_left_out() -> None:
    output = rendered(findings_table(FINDINGS), 70)
    assert_fits(output, 70)
    assert Counter(rows(output)) == Counter((f.series, f.severity, f.kind) for f in FINDINGS)
    assert output.splitlines()[0].split() == ["metric", "severity", "kind", "candidate", "limit"]
    (note,) = [line for line in output.splitlines() if line.startswith("left out at 70 columns")]
    assert note.split(": ", 1)[1].split(", ") == ["baseline", "effect", "floors", "q"]


def test_the_summary_is_one_line_per_arm_with_its_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    result = succeeded("0.32.0", arms=LONG_ARMS, failing=FAILING)
    for width in (80, 120):
        monkeypatch.setenv("COLUMNS", str(width))
        console = Console(file=io.StringIO(), color_system=None)
        print_summary(result, Settings().tolerances, console)
        output = console.file.getvalue()  # type: ignore[attr-defined]
        assert_fits(output, width)
        for arms in LONG_ARMS.values():
            for arm in arms:
                (line,) = [ln for ln in output.splitlines() if re.match(rf"\s+{arm}\s", ln)]
                verdict = "n/a" if arm == "v0_vs_v1" else "pass"
                if any(arm in failing for failing in FAILING):
                    verdict = "fail"
                assert re.search(rf"\s{re.escape(verdict)}\b", line), (width, line)


@pytest.fixture
def judged_store(tmp_path: Path) -> tuple[Path, Path]:
    """A real SQLite store holding a baseline and a release that breaks gates and drifts, and
    that release's result file."""
    settings = Settings(data_dir=tmp_path)
    store = open_store(settings)
    ingest_result(store, succeeded("0.31.0", arms=LONG_ARMS), runner="local")
    candidate = succeeded("0.32.0", arms=LONG_ARMS, failing=FAILING)
    ingest_result(store, candidate, runner="local")
    store.close()
    result_file = tmp_path / "result.json"
    write_result(candidate, result_file)
    return tmp_path, result_file


def test_parity_detect_and_report_respect_columns(judged_store: tuple[Path, Path]) -> None:
    data_dir, result_file = judged_store
    wide = parity("detect", "--release", "0.32.0", data_dir=data_dir, env={"COLUMNS": "250"})
    assert wide.returncode == 0, wide.stderr
    expected = Counter(rows(wide.stdout))
    assert len(expected) >= 4 and {s for _, s, _ in expected} <= set(SEVERITIES)
    assert all(series.count("/") == 2 for series, _, _ in expected), wide.stdout
    for width in (80, 120):
        env = {"COLUMNS": str(width)}
        shown = parity("detect", "--release", "0.32.0", data_dir=data_dir, env=env)
        assert shown.returncode == 0, shown.stderr
        assert_fits(shown.stdout, width)
        assert Counter(rows(shown.stdout)) == expected, shown.stdout
        report = parity("report", str(result_file), data_dir=data_dir, env=env)
        assert report.returncode == 0, report.stderr
        assert_fits(report.stdout, width)
        (line,) = [ln for ln in report.stdout.splitlines() if "default_vs_trainer_processed" in ln]
        assert re.search(r"\sfail\b", line)
