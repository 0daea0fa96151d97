"""A recipe in the user's own config language: plain text, JSON, `vllm.LLM` keyword arguments
and `vllm serve` flags, verl's rollout config and NeMo-RL's vLLM generation config (key
spellings and their sources in docs/recipes.md). Pure: text in, text out."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from typing import Any

from monitor.recipe import Recipe
from monitor.upgrade import Verification

NOT_MEASURED = "not measured in this run, so not in the recipe"
FORMATS = ("text", "json", "vllm-args", "verl", "nemo-rl")
NEMO_RL_OWN = frozenset({"logprobs_mode"})
"""Engine arguments NeMo-RL reads in `vllm_cfg` itself; the others go to `vllm_kwargs`."""


def serve_flags(kwargs: dict[str, Any]) -> list[str]:
    """`vllm serve` flags for `vllm.LLM` keyword arguments (booleans as --x / --no-x, objects
    as JSON)."""
    flags: list[str] = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, dict | list):
            flags += [flag, json.dumps(value, separators=(",", ":"))]
        else:
            flags += [flag, str(value)]
    return flags


def yaml_block(document: dict[str, Any], indent: int = 0) -> list[str]:
    """Nested mappings as block YAML; every scalar written as JSON (which YAML reads alike)."""
    lines = []
    pad = "  " * indent
    for key, value in document.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines += yaml_block(value, indent + 1)
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")
    return lines


def _notes(recipe: Recipe, verified: Verification | None, missing: Sequence[str] = ()) -> list[str]:
    """What a config file cannot hold, as comment lines: practices, unfixable, verification."""
    lines = [f"# parity recipe of {recipe.engine_package}=={recipe.version}"]
    if verified is not None:
        lines.append(f"# {verified.text}")
    if missing:
        lines.append(f"# {NOT_MEASURED}: {', '.join(missing)}")
    lines += [
        f"# practice: {line.key} ({line.why})" for line in recipe.lines if line.kind == "practice"
    ]
    lines += [f"# no setting fixes {line.key}: {line.value}" for line in recipe.unfixable()]
    return lines


def as_text(recipe: Recipe, verified: Verification | None, missing: Sequence[str] = ()) -> str:
    head = f"recipe of {recipe.engine_package}=={recipe.version}"
    lines = [head + (f": {verified.text}" if verified is not None else "")]
    if missing:
        lines.append(f"  {NOT_MEASURED}: {', '.join(missing)}")
    if not recipe.lines:
        lines.append("  nothing to set: every measured rule found the defaults at parity")
    for line in recipe.lines:
        lines.append(f"  {line.kind} {line.key} = {json.dumps(line.value)}: {line.why}")
        lines += [f"      evidence: {item.text()}" for item in line.evidence]
    return "\n".join(lines) + "\n"


def as_json(recipe: Recipe, verified: Verification | None, missing: Sequence[str] = ()) -> str:
    document: dict[str, Any] = {
        "recipe": recipe.model_dump(mode="json"),
        "not_measured": list(missing),
    }
    if verified is not None:
        document["verification"] = {
            "state": verified.state,
            "text": verified.text,
            "numbers": [item.model_dump(mode="json") for item in verified.numbers],
        }
    return json.dumps(document, indent=1) + "\n"


def as_vllm_args(recipe: Recipe, verified: Verification | None, missing: Sequence[str] = ()) -> str:
    kwargs = recipe.engine_kwargs()
    lines = _notes(recipe, verified, missing)
    lines += ["# vllm.LLM keyword arguments (JSON)", json.dumps(kwargs)]
    lines += ["# vllm serve flags", shlex.join(serve_flags(kwargs))]
    return "\n".join(lines) + "\n"


def as_verl(recipe: Recipe, verified: Verification | None, missing: Sequence[str] = ()) -> str:
    """verl: extra vLLM engine arguments live under actor_rollout_ref.rollout.engine_kwargs.vllm."""
    document = {
        "actor_rollout_ref": {"rollout": {"engine_kwargs": {"vllm": recipe.engine_kwargs()}}}
    }
    return "\n".join([*_notes(recipe, verified, missing), *yaml_block(document)]) + "\n"


def as_nemo_rl(recipe: Recipe, verified: Verification | None, missing: Sequence[str] = ()) -> str:
    """NeMo-RL: logprobs_mode is its own policy.generation.vllm_cfg key; other engine arguments
    pass through policy.generation.vllm_kwargs."""
    kwargs = recipe.engine_kwargs()
    generation: dict[str, Any] = {}
    own = {key: value for key, value in kwargs.items() if key in NEMO_RL_OWN}
    passed = {key: value for key, value in kwargs.items() if key not in NEMO_RL_OWN}
    if own:
        generation["vllm_cfg"] = own
    if passed:
        generation["vllm_kwargs"] = passed
    document = {"policy": {"generation": generation}}
    return "\n".join([*_notes(recipe, verified, missing), *yaml_block(document)]) + "\n"


RENDERERS: dict[str, Callable[[Recipe, Verification | None, Sequence[str]], str]] = {
    "text": as_text,
    "json": as_json,
    "vllm-args": as_vllm_args,
    "verl": as_verl,
    "nemo-rl": as_nemo_rl,
}


def render(
    recipe: Recipe, fmt: str, verified: Verification | None = None, missing: Sequence[str] = ()
) -> str:
    """The recipe in one of FORMATS (ValueError naming the formats otherwise); `missing`: the
    rule probes the run did not measure."""
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return RENDERERS[fmt](recipe, verified, missing)
