"""Series identity (pure): derived from the options' roles, every component separates series,
equal settings give equal hashes, and the hash is pinned because stored rows carry it."""

from __future__ import annotations

import dataclasses

import pytest

from monitor.schema import SamplingSpec, SuiteOptions, option_role
from monitor.series import (
    NOT_REQUESTED,
    SAMPLING_FIELDS,
    SERIES_OPTIONS,
    SeriesKey,
    config_hash,
    series_config,
    series_key,
)
from monitor.store import models as m
from tests.store_factory import series_of, succeeded

RESULT = succeeded("0.32.0")
ARM = RESULT.probes[1].arms[0]
KEY = series_of(RESULT, ARM, "k3")
OTHER_VALUES = {
    "probe": "weight_sync",
    "arm": "reset",
    "metric": "k1",
    "model": "fedcba9876543210",
    "device": "NVIDIA H100 80GB HBM3",
    "prompts_sha256": "cd" * 32,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": -1,
    "max_tokens": 32,
    "seed": 1,
    "ignore_eos": False,
    "trainer_dtype": "bfloat16",
    "engine_dtype": "bfloat16",
    "weight_step": 0.2,
}


def test_the_hash_is_pinned() -> None:
    assert KEY.hash == "24d2a7db9d0c7cf8f124dfe9ccd5c3fd"
    assert KEY.label == "prefix_cache/cache_on/k3"


def test_the_key_is_the_fixed_part_the_sampling_and_the_series_options() -> None:
    fixed = ("probe", "arm", "metric", "model", "device", "prompts_sha256")
    names = [f.name for f in dataclasses.fields(SeriesKey)]
    assert set(names) == {*fixed, *SAMPLING_FIELDS, *SERIES_OPTIONS}
    assert SERIES_OPTIONS == ("engine_dtype", "trainer_dtype", "weight_step")
    roles = {option_role(name) for name in SuiteOptions.model_fields}
    assert roles == {"model", "selection", "series", "sampling"}


def test_the_series_table_has_one_column_per_key_component() -> None:
    columns = {c.name for c in m.SeriesRow.__table__.columns} - {"hash"}
    assert columns == {f.name for f in dataclasses.fields(SeriesKey)}


@pytest.mark.parametrize("component", [f.name for f in dataclasses.fields(SeriesKey)])
def test_every_component_separates_series(component: str) -> None:
    changed = dataclasses.replace(KEY, **{component: OTHER_VALUES[component]})
    assert changed.hash != KEY.hash


def test_equal_settings_written_differently_are_one_series() -> None:
    integral = SamplingSpec(temperature=1, top_p=1, top_k=50, max_tokens=16, seed=0)
    floating = SamplingSpec(temperature=1.0, top_p=1.0, top_k=50, max_tokens=16, seed=0)
    keys = [
        series_of(RESULT, ARM.model_copy(update={"sampling": s}), "k3")
        for s in (integral, floating)
    ]
    assert keys[0] == keys[1] and keys[0].hash == keys[1].hash


def test_a_results_arms_are_keyed_by_their_own_sampling() -> None:
    result = succeeded("0.32.0", device="cuda", trainer_dtype="bfloat16")
    arm = result.probes[1].arms[0]
    key = series_of(result, arm, "k3")
    assert (key.probe, key.arm, key.device, key.trainer_dtype) == (
        "prefix_cache",
        "cache_on",
        "cuda",
        "bfloat16",
    )
    assert arm.sampling is not None
    greedy = arm.model_copy(
        update={"sampling": arm.sampling.model_copy(update={"temperature": 0.0})}
    )
    assert series_of(result, greedy, "k3").temperature == 0.0
    unsampled = arm.model_copy(update={"sampling": None})
    assert series_of(result, unsampled, "k3") == key
    other_release = succeeded("0.31.0", device="cuda", trainer_dtype="bfloat16")
    assert series_of(other_release, arm, "k3") == key


def test_the_kv_cache_size_is_a_resource_not_part_of_any_identity() -> None:
    config = RESULT.config
    bigger = config.model_copy(update={"kv_cache_gib": 8.0})
    assert "kv_cache_gib" in NOT_REQUESTED
    assert config_hash(bigger) == config_hash(config)
    assert series_config(bigger, "m", "cpu") == series_config(config, "m", "cpu")
    assert series_key(bigger, "m", "cpu", ARM, "k3") == series_key(config, "m", "cpu", ARM, "k3")


def test_a_weight_step_change_is_another_series() -> None:
    config = RESULT.config
    stepped = config.model_copy(update={"weight_step": 0.2})
    assert series_config(stepped, "m", "cpu") != series_config(config, "m", "cpu")
    assert series_key(stepped, "m", "cpu", ARM, "k3") != series_key(config, "m", "cpu", ARM, "k3")


def test_config_hash_groups_releases_but_not_settings() -> None:
    a, b = succeeded("0.31.0").config, succeeded("0.32.0").config
    assert a.engine != b.engine and config_hash(a) == config_hash(b)
    moved = a.model_copy(update={"prompts": "/elsewhere/prompts.jsonl"})
    assert config_hash(moved) == config_hash(a)
    assert config_hash(a.model_copy(update={"trainer_dtype": "bfloat16"})) != config_hash(a)
    assert config_hash(a.model_copy(update={"prompts_sha256": "0" * 64})) != config_hash(a)
    assert config_hash(a.model_copy(update={"probes": ["prefix_cache"]})) != config_hash(a)
    assert series_config(a.model_copy(update={"probes": ["prefix_cache"]}), "m", "cpu") == (
        series_config(a, "m", "cpu")
    )
