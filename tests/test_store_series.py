"""Series keys (pure): every component separates series, equal settings give equal hashes, and
the hash is pinned because stored rows carry it."""

from __future__ import annotations

import dataclasses

import pytest

from monitor.schema import SamplingSpec
from monitor.series import SeriesKey, arm_series_key, config_hash, series_key
from tests.store_factory import failed, succeeded

SAMPLING = SamplingSpec(temperature=0.7, top_p=0.9, top_k=50, max_tokens=16, seed=0)
KEY = series_key(
    "prefix_cache",
    "cache_on",
    "k3",
    model="0123456789abcdef",
    device="cpu",
    sampling=SAMPLING,
    trainer_dtype="float32",
    engine_dtype="float32",
    prompts_sha256="ab" * 32,
)
OTHER_VALUES = {
    "probe": "weight_sync",
    "arm": "reset",
    "metric": "k1",
    "model": "fedcba9876543210",
    "device": "NVIDIA H100 80GB HBM3",
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": -1,
    "max_tokens": 32,
    "seed": 1,
    "ignore_eos": False,
    "trainer_dtype": "bfloat16",
    "engine_dtype": "bfloat16",
    "prompts_sha256": "cd" * 32,
}


def test_the_hash_is_pinned() -> None:
    assert KEY.hash == "7a9ecaf7d025d6b4a23a1663c8eb02fe"
    assert KEY.label == "prefix_cache/cache_on/k3"


@pytest.mark.parametrize("component", [f.name for f in dataclasses.fields(SeriesKey)])
def test_every_component_separates_series(component: str) -> None:
    changed = dataclasses.replace(KEY, **{component: OTHER_VALUES[component]})
    assert changed.hash != KEY.hash


def test_equal_settings_written_differently_are_one_series() -> None:
    integral = SamplingSpec(temperature=1, top_p=1, top_k=50, max_tokens=16, seed=0)
    floating = SamplingSpec(temperature=1.0, top_p=1.0, top_k=50, max_tokens=16, seed=0)
    keys = [
        series_key(
            "p",
            "a",
            "k3",
            model="m",
            device="cpu",
            sampling=sampling,
            trainer_dtype="float32",
            engine_dtype="float32",
            prompts_sha256="x",
        )
        for sampling in (integral, floating)
    ]
    assert keys[0] == keys[1] and keys[0].hash == keys[1].hash


def test_a_results_arms_are_keyed_by_their_own_sampling() -> None:
    result = succeeded("0.32.0", device="cuda", trainer_dtype="bfloat16")
    arm = result.probes[1].arms[0]
    key = arm_series_key(result, arm, "k3")
    assert (key.probe, key.arm, key.device, key.trainer_dtype) == (
        "prefix_cache",
        "cache_on",
        "cuda",
        "bfloat16",
    )
    greedy = arm.model_copy(update={"sampling": SAMPLING.model_copy(update={"temperature": 0.0})})
    assert arm_series_key(result, greedy, "k3").temperature == 0.0
    unsampled = arm.model_copy(update={"sampling": None})
    assert arm_series_key(result, unsampled, "k3") == key
    assert (
        arm_series_key(succeeded("0.31.0", device="cuda", trainer_dtype="bfloat16"), arm, "k3")
        == key
    )


def test_a_result_without_model_has_no_series() -> None:
    result = failed("0.31.0")
    with pytest.raises(ValueError, match="without model and versions"):
        arm_series_key(result, succeeded().probes[0].arms[0], "k3")


def test_config_hash_groups_releases_but_not_settings() -> None:
    a, b = succeeded("0.31.0").config, succeeded("0.32.0").config
    assert a.engine != b.engine and config_hash(a) == config_hash(b)
    assert config_hash(a.model_copy(update={"prompts": "/elsewhere/prompts.jsonl"})) == config_hash(
        a
    )
    assert config_hash(a.model_copy(update={"trainer_dtype": "bfloat16"})) != config_hash(a)
    assert config_hash(a.model_copy(update={"prompts_sha256": "0" * 64})) != config_hash(a)
