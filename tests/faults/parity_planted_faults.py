"""Planted faults of a fault overlay environment (see tests.faults), imported from its `.pth`.

`install(version)` always makes `vllm.version` (so `vllm.__version__`, vLLM's logs and its
version-keyed cache hashes) read `version`, so the overlay is a self-consistent release of that
version; the installed distribution's metadata still names the real release, which neither the
monitor nor the suite reads. `PARITY_FAULT` names at most one fault, planted on
`vllm.entrypoints.llm.LLM` once that module is imported; unset, the overlay runs the real
release unchanged:

- `logprob_shift`: every reported sample and prompt logprob +0.02 (inside every gate);
- `reset_noop`: `reset_prefix_cache()` reports success and resets nothing;
- `nan_logprob`: the first generate call's first sampled-token logprob is NaN, once a process;
- `refuse_base`: the engine refuses the suite's base config with a ValueError;
- `bf16_head_shift`: an engine whose lm_head runs in bf16 reports every logprob +0.5 (past the
  gates); an fp32 head is exact, so the recipe's head_dtype override fixes it;
- `reload_partial`: `reload_weights` updates every weight but the token embedding and the
  lm_head, which keep the engine's starting values (the SmolLM2 tied-head case, planted on an
  untied model); a fresh engine from the new checkpoint loads all of it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import importlib.machinery
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

FAULT_VAR = "PARITY_FAULT"
SHIFT = 0.02
HEAD_SHIFT = 0.5
"""Past the default gates (k3 0.15 > 0.1, token_mult_prob_error 1.65 > 1.05)."""
BASE_CONFIG: dict[str, Any] = {
    "dtype": "float32",
    "logprobs_mode": "processed_logprobs",
    "enable_prefix_caching": False,
    "async_scheduling": False,
}
Patch = Callable[[ModuleType], None]


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader, then `patch` on the executed module."""

    def __init__(self, loader: Any, patch: Patch) -> None:
        self._loader = loader
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        created: ModuleType | None = self._loader.create_module(spec)
        return created

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._patch(module)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _PostImportHook(importlib.abc.MetaPathFinder):
    """Finds the named modules through the rest of `sys.meta_path` and patches them once
    they have run: nothing of vLLM is imported before the suite imports it."""

    def __init__(self, patches: dict[str, Patch]) -> None:
        self._patches = patches

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        patch = self._patches.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _PostImportHook) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def _set_version(version: str) -> Patch:
    def patch(module: ModuleType) -> None:
        module.__version__ = version  # type: ignore[attr-defined]
        numbers = tuple(int(part) if part.isdigit() else part for part in version.split("."))
        module.__version_tuple__ = numbers  # type: ignore[attr-defined]

    return patch


def _shift(entries: Any, by: float) -> None:
    """Add `by` to every reported logprob of one request's per-position logprobs, vLLM's flat
    container or a list of {token: Logprob} dicts (a prompt's position 0 holds none)."""
    if entries is None:
        return
    if hasattr(entries, "start_indices"):
        entries.logprobs[:] = [value + by for value in entries.logprobs]
        return
    for entry in entries:
        for token, logprob in (entry or {}).items():
            entry[token] = dataclasses.replace(logprob, logprob=logprob.logprob + by)


def _shifted(outputs: list[Any], by: float = SHIFT) -> list[Any]:
    for output in outputs:
        for completion in output.outputs:
            _shift(completion.logprobs, by)
        _shift(output.prompt_logprobs, by)
    return outputs


def _bf16_head_shift(llm: type) -> None:
    """Engines whose lm_head runs in bf16 (dtype bfloat16, no head_dtype override) report
    every logprob HEAD_SHIFT too high; an fp32 head, or an fp32 engine, is left as it is."""
    original_init, original_generate = llm.__init__, llm.generate  # type: ignore[attr-defined]

    @functools.wraps(original_init)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        overrides = kwargs.get("hf_overrides") or {}
        self._parity_bf16_head = kwargs.get("dtype") == "bfloat16" and not overrides.get(
            "head_dtype"
        )
        original_init(self, *args, **kwargs)

    @functools.wraps(original_generate)
    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        outputs = original_generate(self, *args, **kwargs)
        return _shifted(outputs, HEAD_SHIFT) if self._parity_bf16_head else outputs

    llm.__init__ = init  # type: ignore[misc]
    llm.generate = generate  # type: ignore[attr-defined]


def _one_nan(outputs: list[Any]) -> list[Any]:
    """NaN for the first request's first sampled token, in place in either container."""
    completion = outputs[0].outputs[0]
    sampled, entries = completion.token_ids[0], completion.logprobs
    if hasattr(entries, "start_indices"):
        for i in range(entries.start_indices[0], entries.end_indices[0]):
            if entries.token_ids[i] == sampled:
                entries.logprobs[i] = float("nan")
    else:
        entries[0][sampled] = dataclasses.replace(entries[0][sampled], logprob=float("nan"))
    return outputs


def _wrap_generate(llm: type, rewrite: Callable[[list[Any]], list[Any]], once: bool) -> None:
    original = llm.generate  # type: ignore[attr-defined]
    done: list[bool] = []

    @functools.wraps(original)
    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        outputs = original(self, *args, **kwargs)
        if once and done:
            return outputs
        done.append(True)
        return rewrite(outputs)

    llm.generate = generate  # type: ignore[attr-defined]


def _refuse_base(llm: type) -> None:
    original = llm.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        asked = {name: kwargs.get(name) for name in BASE_CONFIG}
        if asked == BASE_CONFIG and kwargs.get("hf_overrides") is None:
            raise ValueError("planted fault: this release refuses the base config (float32)")
        original(self, *args, **kwargs)

    llm.__init__ = init  # type: ignore[misc]


def _reset_noop(llm: type) -> None:
    def reset_prefix_cache(self: Any, *args: Any, **kwargs: Any) -> bool:
        return True

    llm.reset_prefix_cache = reset_prefix_cache  # type: ignore[attr-defined]


KEPT_ON_RELOAD = ("model.embed_tokens.weight", "lm_head.weight")


def _with_old_head(new: str, old: str) -> str:
    """A copy of checkpoint `new` whose KEPT_ON_RELOAD tensors are checkpoint `old`'s."""
    from safetensors.torch import load_file, save_file

    old_tensors: dict[str, Any] = {}
    for file in sorted(Path(old).glob("*.safetensors")):
        old_tensors.update(load_file(file))
    mixed = Path(f"{new.rstrip('/')}.old-head")
    shutil.rmtree(mixed, ignore_errors=True)
    shutil.copytree(new, mixed, ignore=shutil.ignore_patterns("*.safetensors"))
    for file in sorted(Path(new).glob("*.safetensors")):
        tensors = load_file(file)
        for name in KEPT_ON_RELOAD:
            if name in tensors and name in old_tensors:
                tensors[name] = old_tensors[name].to(tensors[name].dtype)
        save_file(tensors, mixed / file.name, metadata={"format": "pt"})
    return str(mixed)


def _reload_partial(llm: type) -> None:
    original = llm.collective_rpc  # type: ignore[attr-defined]

    @functools.wraps(original)
    def collective_rpc(self: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if method == "reload_weights":
            asked = dict(kwargs.get("kwargs") or {})
            started_from = self.llm_engine.vllm_config.model_config.model
            asked["weights_path"] = _with_old_head(asked["weights_path"], started_from)
            kwargs = {**kwargs, "kwargs": asked}
        return original(self, method, *args, **kwargs)

    llm.collective_rpc = collective_rpc  # type: ignore[attr-defined]


FAULTS: dict[str, Callable[[type], None]] = {
    "logprob_shift": lambda llm: _wrap_generate(llm, _shifted, once=False),
    "reset_noop": _reset_noop,
    "nan_logprob": lambda llm: _wrap_generate(llm, _one_nan, once=True),
    "refuse_base": _refuse_base,
    "reload_partial": _reload_partial,
    "bf16_head_shift": _bf16_head_shift,
}


def _plant(fault: str) -> Patch:
    def patch(module: ModuleType) -> None:
        FAULTS[fault](module.LLM)

    return patch


def install(version: str) -> None:
    """Report `version` as vLLM's, and plant the fault `PARITY_FAULT` names (if any); once per
    process, however often the `.pth` is read."""
    if any(isinstance(finder, _PostImportHook) for finder in sys.meta_path):
        return
    patches: dict[str, Patch] = {"vllm.version": _set_version(version)}
    fault = os.environ.get(FAULT_VAR, "")
    if fault:
        if fault not in FAULTS:
            raise SystemExit(f"{FAULT_VAR}={fault!r} is not one of {sorted(FAULTS)}")
        patches["vllm.entrypoints.llm"] = _plant(fault)
    sys.meta_path.insert(0, _PostImportHook(patches))
