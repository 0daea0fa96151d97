"""Detection on a real vLLM release: faults planted in an overlay of the test release's own
environment (tests.faults), presented to the monitor as the next micro release.

One clean baseline run of the test release is shared by the module; every test stores it in a
fresh database, runs the overlay release with one fault (or none) through `parity run`, and
reads the incident the overlay release got. Engine starts are the costly part: the baseline
and the A/A run start two, every other run one or none."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from monitor.config import Settings
from monitor.schema import ArmResult, SuiteResult, load_result
from monitor.store.db import open_store
from monitor.store.incident_reads import incident_detail, list_incidents
from monitor.suite.prompts import load_prompts
from monitor.verdicts import judge_arm
from tests.conftest import TEST_ENGINE, parity
from tests.faults import FAULT_VAR, fault_env

pytestmark = pytest.mark.vllm

PACKAGE, BASE_VERSION = TEST_ENGINE.split("==")
_base = Version(BASE_VERSION)
FAULT_VERSION = f"{_base.major}.{_base.minor}.{_base.micro + 1}"
FAULT_RELEASE = f"{PACKAGE}=={FAULT_VERSION}"
BASE_PROBES = "prefill_vs_decode,weight_sync,dtype_floor"
SINGLE_PROMPTS = 10
"""Ungrouped prompts besides one shared-prefix group of four: drift's signed-rank test over
fewer than about ten prompts cannot reach q ≤ 0.01, whatever the shift."""


@dataclass(frozen=True)
class Baseline:
    """The clean run of the test release every test compares against."""

    result_file: Path
    prompts: Path


@dataclass(frozen=True)
class Outcome:
    """One overlay run: the CLI's exit, its result, the overlay release's incident drafts, and
    `parity upgrade --format markdown` from the test release to the overlay release."""

    done: subprocess.CompletedProcess[str]
    result: SuiteResult
    drafts: list[dict[str, Any]]
    upgrade: subprocess.CompletedProcess[str]

    @property
    def findings(self) -> list[dict[str, Any]]:
        return [finding for draft in self.drafts for finding in draft.get("findings", [])]

    def named(self, probe: str, arm: str) -> list[dict[str, Any]]:
        """The findings on one arm that regressed it (info ones open nothing)."""
        return [
            f
            for f in self.findings
            if (f["probe"], f["arm"]) == (probe, arm) and f["severity"] != "info"
        ]

    def explain(self) -> str:
        """The findings and the tail of the run's stderr, for failure messages."""
        rows = [
            f"  {f['severity']:8} {f['kind']:12} {f['probe']}/{f['arm']}/{f['metric']}: "
            f"baseline {f.get('baseline_value')} candidate {f.get('candidate_value')} "
            f"q {f.get('q_value')} {f.get('detail', '')}"
            for f in self.findings
        ]
        return (
            f"exit {self.done.returncode}, result {self.result.status} ({self.result.error})\n"
            f"findings of {FAULT_RELEASE}:\n"
            + ("\n".join(rows) or "  none")
            + f"\nstderr tail:\n{self.done.stderr[-3000:]}"
        )


def arm(result: SuiteResult, probe: str, name: str) -> ArmResult:
    return next(a for a in result.arms() if (a.probe, a.arm) == (probe, name))


@pytest.fixture(scope="module")
def fault_dir(data_dir: Path, release_python: Path) -> Path:
    """The overlay of the test release's environment, reporting FAULT_VERSION."""
    target = data_dir / "fault-envs" / f"{PACKAGE}-{FAULT_VERSION}"
    target.parent.mkdir(parents=True, exist_ok=True)
    return fault_env(release_python, target, FAULT_VERSION)


@pytest.fixture(scope="module")
def baseline(
    data_dir: Path, release_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Baseline:
    """The clean test release on a small prompt set: singles plus one shared-prefix group."""
    work = tmp_path_factory.mktemp("planted-baseline")
    bundled = load_prompts()
    group = next(p.group for p in bundled if p.group)
    chosen = [p for p in bundled if not p.group][:SINGLE_PROMPTS]
    chosen += [p for p in bundled if p.group == group]
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(p.model_dump_json(exclude_none=True) + "\n" for p in chosen))
    out = work / "base.json"
    done = parity(
        "run",
        "--engine",
        TEST_ENGINE,
        "--probes",
        BASE_PROBES,
        *common_options(prompts),
        "--out",
        str(out),
        data_dir=data_dir,
        database_url=f"sqlite:///{work / 'throwaway.db'}",
    )
    assert done.returncode == 0 and out.is_file(), done.stderr[-3000:]
    return Baseline(out, prompts)


def common_options(prompts: Path) -> list[str]:
    return ["--model", "tiny", "--max-tokens", "16", "--seed", "0", "--prompts", str(prompts)]


def run_overlay(
    fault: str, probes: str, baseline: Baseline, fault_dir: Path, data_dir: Path, work: Path
) -> Outcome:
    """Store the baseline in a fresh database, run the overlay release with `fault` planted
    (empty: none) on `probes`, and read the overlay release's incidents."""
    database_url = f"sqlite:///{work / 'parity.db'}"
    stored = parity(
        "ingest", str(baseline.result_file), data_dir=data_dir, database_url=database_url
    )
    assert stored.returncode == 0, stored.stderr[-3000:]
    out = work / "result.json"
    env = {
        FAULT_VAR: fault,
        "PARITY_PREBUILT_ENVS": json.dumps({FAULT_RELEASE: str(fault_dir)}),
    }
    done = parity(
        "run",
        "--engine",
        FAULT_RELEASE,
        "--probes",
        probes,
        *common_options(baseline.prompts),
        "--out",
        str(out),
        data_dir=data_dir,
        database_url=database_url,
        env=env,
    )
    assert out.is_file(), done.stderr[-3000:]
    store = open_store(Settings(data_dir=data_dir, database_url=database_url), upgrade=False)
    try:
        with store.reading() as session:
            views = list_incidents(session, package=PACKAGE, version=FAULT_VERSION)
            drafts = [incident_detail(session, view.id).draft for view in views]
    finally:
        store.close()
    upgrade = parity(
        "upgrade",
        "--engine",
        PACKAGE,
        "--from",
        BASE_VERSION,
        "--to",
        FAULT_VERSION,
        "--format",
        "markdown",
        data_dir=data_dir,
        database_url=database_url,
    )
    return Outcome(done, load_result(out), drafts, upgrade)


def metric_differences(before: SuiteResult, after: SuiteResult) -> list[str]:
    """Every metric of an arm both runs carry whose value differs, as measured."""
    earlier = {(a.probe, a.arm): a.metrics for a in before.arms()}
    return [
        f"{a.probe}/{a.arm}/{name}: {earlier[(a.probe, a.arm)][name]!r} -> {value!r}"
        for a in after.arms()
        if (a.probe, a.arm) in earlier
        for name, value in a.metrics.items()
        if earlier[(a.probe, a.arm)].get(name) != value
    ]


def test_aa_clean_copy_opens_nothing_new(
    baseline: Baseline, fault_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    outcome = run_overlay("", BASE_PROBES, baseline, fault_dir, data_dir, tmp_path)
    assert outcome.done.returncode == 0, outcome.explain()
    assert outcome.result.versions is not None
    assert outcome.result.versions.vllm == FAULT_VERSION
    differences = metric_differences(load_result(baseline.result_file), outcome.result)
    assert not outcome.drafts, outcome.explain() + "\ndifferences:\n" + "\n".join(differences)
    assert outcome.upgrade.returncode == 0, outcome.upgrade.stdout + outcome.upgrade.stderr
    assert "safe as is" in outcome.upgrade.stdout


def test_logprob_shift_is_drift(
    baseline: Baseline, fault_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    outcome = run_overlay(
        "logprob_shift", "prefill_vs_decode,dtype_floor", baseline, fault_dir, data_dir, tmp_path
    )
    assert outcome.done.returncode == 0, outcome.explain()
    decode = outcome.named("prefill_vs_decode", "decode")
    assert {"drift", "change_point"} & {f["kind"] for f in decode}, outcome.explain()
    gates = [f for f in outcome.findings if f["kind"] == "gate"]
    assert not [f for f in gates if (f["probe"], f["arm"]) == ("prefill_vs_decode", "decode")], (
        outcome.explain()
    )
    upgrade = outcome.upgrade.stdout + outcome.upgrade.stderr
    assert outcome.upgrade.returncode == 2 and "regression" in upgrade, upgrade
    assert "prefill_vs_decode/decode" in upgrade, upgrade


def test_reset_noop_is_named(
    baseline: Baseline, fault_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    outcome = run_overlay("reset_noop", "weight_sync", baseline, fault_dir, data_dir, tmp_path)
    assert outcome.done.returncode == 0, outcome.explain()
    assert outcome.named("weight_sync", "reset"), outcome.explain()
    upgrade = outcome.upgrade.stdout + outcome.upgrade.stderr
    assert outcome.upgrade.returncode == 2 and "regression" in upgrade, upgrade
    assert "weight_sync/reset" in upgrade, upgrade


def test_partial_reload_is_named_and_its_fresh_engine_answer_verified(
    baseline: Baseline, fault_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A reload that leaves the embedding and head on their old values (SmolLM2's tied-head
    case) breaks weight_sync/reset; the recipe says no setting fixes it, and its answer, a
    fresh engine from the updated checkpoint, is run and passes (logprob_semantics runs too:
    the recipe's engine needs processed logprobs to be at parity at all)."""
    outcome = run_overlay(
        "reload_partial",
        "logprob_semantics,weight_sync,recipe",
        baseline,
        fault_dir,
        data_dir,
        tmp_path,
    )
    assert outcome.done.returncode == 0, outcome.explain()
    assert outcome.named("weight_sync", "reset"), outcome.explain()
    rollout = arm(outcome.result, "recipe", "rollout")
    lines = {line["key"]: line for line in rollout.extra["recipe"]["lines"]}
    assert "reload_weights_incomplete" in lines, lines
    assert "reset_prefix_cache_after_weight_update" not in lines, lines
    fresh = arm(outcome.result, "recipe", "fresh_after_update")
    assert judge_arm(fresh, {}).verdict == "pass", (fresh.metrics, fresh.reason)
    assert fresh.metrics["n_tokens"] > 0 and fresh.extra["weights_moved"] > 0
    started = [record.names for record in outcome.result.engines if record.started]
    assert started[-2:] == [["recipe"], ["recipe-fresh"]], started
    upgrade = outcome.upgrade.stdout + outcome.upgrade.stderr
    assert outcome.upgrade.returncode == 2, upgrade
    assert "new problem no setting fixes: reload_weights_incomplete" in upgrade, upgrade
    assert "verified (" in upgrade and "fresh_after_update" in upgrade, upgrade


def test_a_head_that_needs_fp32_gets_a_verified_recipe_line(
    baseline: Baseline, fault_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A bf16 lm_head that breaks the gates (an fp32 one does not): the recipe adds
    hf_overrides head_dtype=float32, its engine runs with it and passes, and the upgrade is
    safe with these recipe changes (exit 1), the incident's arms being what the recipe fixes."""
    outcome = run_overlay(
        "bf16_head_shift",
        "logprob_semantics,fp32_head,recipe",
        baseline,
        fault_dir,
        data_dir,
        tmp_path,
    )
    assert outcome.done.returncode == 0, outcome.explain()
    assert outcome.named("fp32_head", "bf16_head"), outcome.explain()
    rollout = arm(outcome.result, "recipe", "rollout")
    lines = {line["key"]: line["value"] for line in rollout.extra["recipe"]["lines"]}
    assert lines.get("hf_overrides") == {"head_dtype": "float32"}, lines
    assert judge_arm(rollout, {}).verdict == "pass", (rollout.metrics, rollout.reason)
    recipe_engine = next(e for e in outcome.result.engines if e.names == ["recipe"])
    assert recipe_engine.requested["hf_overrides"] == {"head_dtype": "float32"}
    upgrade = outcome.upgrade.stdout + outcome.upgrade.stderr
    assert outcome.upgrade.returncode == 1, upgrade
    assert "safe with these recipe changes" in upgrade and "head_dtype" in upgrade, upgrade


def test_one_nan_fails_one_arm(
    baseline: Baseline, fault_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    outcome = run_overlay(
        "nan_logprob", "prefill_vs_decode,dtype_floor", baseline, fault_dir, data_dir, tmp_path
    )
    assert outcome.done.returncode == 0, outcome.explain()
    assert outcome.result.status == "succeeded", outcome.explain()
    decode = arm(outcome.result, "prefill_vs_decode", "decode")
    assert decode.metrics.get("nonfinite_tokens") == 1, (decode.metrics, outcome.explain())
    for probe, name in (("prefill_vs_decode", "prefill"), ("dtype_floor", "harness")):
        other = arm(outcome.result, probe, name)
        assert other.metrics.get("nonfinite_tokens") == 0, (probe, name, other.metrics)
        assert other.metrics["n_tokens"] > 0 and "mean_abs_delta" in other.metrics
    named = outcome.named("prefill_vs_decode", "decode")
    assert "nonfinite_tokens" in {f["metric"] for f in named}, outcome.explain()


def test_refused_base_engine_is_unmeasured(
    baseline: Baseline, fault_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    outcome = run_overlay(
        "refuse_base", "prefill_vs_decode", baseline, fault_dir, data_dir, tmp_path
    )
    assert outcome.done.returncode == 1, outcome.explain()
    assert outcome.result.status == "failed", outcome.explain()
    assert "planted fault" in (outcome.result.error or ""), outcome.explain()
    unmeasured = [f for f in outcome.findings if f["kind"] == "unmeasured"]
    assert unmeasured and "planted fault" in unmeasured[0]["detail"], outcome.explain()
