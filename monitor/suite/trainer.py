"""Trainer-side reference: recompute the sampled tokens' logprobs with HF transformers, as an RL
trainer would, under each logprob semantics (raw, temperature-scaled, fully processed)."""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEMANTICS = ("raw", "temperature", "processed")
BATCHED_DTYPES = frozenset({"float64"})
"""Trainer dtypes scored in batches: their batched forward gives the one-sequence forward's
logprobs (float64: within 1e-13). A float32 forward's GEMMs round differently with the batch's
shape (SmolLM2 on CPU: logprobs move by up to 3.7e-5), so float32 stays one sequence per forward
and every stored series keeps its numerics (bench/trainer_batching.py measures both)."""
BATCH_SEQUENCES = 8


@dataclass
class TokenScores:
    """Per-token trainer logprobs of one continuation under each semantics."""

    raw: np.ndarray
    temperature: np.ndarray
    processed: np.ndarray
    argmax: np.ndarray
    in_support: np.ndarray

    def logprobs(self, semantics: str) -> np.ndarray:
        if semantics not in SEMANTICS:
            raise ValueError(f"unknown trainer semantics {semantics!r}")
        return getattr(self, semantics)  # type: ignore[no-any-return]


class Trainer:
    """An HF causal LM in a chosen dtype, scoring prompt+continuation in one forward pass."""

    def __init__(
        self, model_path: Path, dtype: str, label: str = "initial", batch: int | None = None
    ) -> None:
        """`batch`: sequences per forward (default: BATCH_SEQUENCES for BATCHED_DTYPES, else 1)."""
        import torch
        from transformers import AutoModelForCausalLM

        self.path = Path(model_path)
        self.dtype = dtype
        self.label = label
        self.torch_dtype = getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=self.torch_dtype)
        self.model.eval()
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._cache: dict[tuple[Any, ...], TokenScores] = {}
        self.forwards = 0
        self.batch = batch or (BATCH_SEQUENCES if dtype in BATCHED_DTYPES else 1)

    def score(
        self,
        prompt_ids: list[int],
        token_ids: list[int],
        temperature: float,
        top_p: float,
        top_k: int,
    ) -> TokenScores:
        return self.score_many([(prompt_ids, token_ids)], temperature, top_p, top_k)[0]

    def score_many(
        self,
        sequences: Sequence[tuple[list[int], list[int]]],
        temperature: float,
        top_p: float,
        top_k: int,
    ) -> list[TokenScores]:
        """Scores of each (prompt, continuation); every distinct one not scored before under
        this sampling gets one forward, in length-bucketed batches where batching is exact."""
        sampling = (temperature, top_p, top_k)
        keys = [(tuple(p), tuple(t), *sampling) for p, t in sequences]
        pending = list(dict.fromkeys(k for k in keys if k not in self._cache))
        for key, logits in self._logits(pending):
            self._cache[key] = score_logits(logits, _targets(key), *sampling)
        return [self._cache[key] for key in keys]

    def distributions_many(
        self,
        requests: Sequence[tuple[list[int], list[int], list[int]]],
        temperature: float,
        top_p: float,
        top_k: int,
        semantics: str,
    ) -> list[np.ndarray]:
        """For each (prompt, continuation, positions): the whole log-distribution (one row per
        vocabulary id) the trainer gives those continuation positions under `semantics`
        (processed: -inf outside the top-k/top-p support). The rows are not kept; the same
        forward scores the sequence, so scoring it afterwards costs none."""
        sampling = (temperature, top_p, top_k)
        keys = [(tuple(p), tuple(t), *sampling) for p, t, _ in requests]
        rows: list[np.ndarray | None] = [None] * len(requests)
        for key, logits in self._logits(list(dict.fromkeys(keys))):
            if key not in self._cache:
                self._cache[key] = score_logits(logits, _targets(key), *sampling)
            for index in (i for i, wanted in enumerate(keys) if wanted == key):
                chosen = logits[list(requests[index][2])]
                rows[index] = distribution_rows(chosen, *sampling, semantics)
        return [row for row in rows if row is not None]

    def _logits(self, keys: list[tuple[Any, ...]]) -> Iterator[tuple[tuple[Any, ...], Any]]:
        """Each key's continuation logits (row i predicts token i), one forward per sequence,
        or per batch of similar lengths where this dtype's batched forward is exact."""
        by_length = sorted(keys, key=lambda key: len(key[0]) + len(key[1]))
        for start in range(0, len(by_length), self.batch):
            batch = by_length[start : start + self.batch]
            yield from zip(batch, self._batch_logits(batch), strict=True)

    def _batch_logits(self, keys: list[tuple[Any, ...]]) -> list[Any]:
        """One forward over right-padded, attention-masked prompt + continuation sequences:
        each one's logits predicting its continuation tokens, in float32 or the model's own
        wider dtype (a float64 reference stays float64). Left padding with explicit positions
        is not exact (float64 logits moved by 7.5e-6); right padding is (1.8e-14)."""
        import torch

        self.forwards += len(keys)
        wide = torch.promote_types(self.torch_dtype, torch.float32)
        lengths = [len(key[0]) + len(key[1]) for key in keys]
        width = max(lengths)
        kept = width - min(len(key[0]) for key in keys) + 1
        only_scored = {"logits_to_keep": kept} if self._keeps_logits else {}
        ids = torch.zeros((len(keys), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (key, length) in enumerate(zip(keys, lengths, strict=True)):
            ids[row, :length] = torch.tensor(key[0] + key[1], dtype=torch.long)
            mask[row, :length] = 1
        padded = {"attention_mask": mask} if len(keys) > 1 else {}
        with torch.inference_mode():
            logits = self.model(input_ids=ids, **padded, **only_scored).logits.to(wide)
        first = width - logits.shape[1]
        return [
            logits[row, len(key[0]) - 1 - first : len(key[0]) + len(key[1]) - 1 - first]
            for row, key in enumerate(keys)
        ]

    def continuation(self, prompt_ids: list[int], n_tokens: int, seed: int) -> list[int]:
        """`n_tokens` tokens drawn at T=1 from this model after the prompt (numpy's generator
        with `seed` picks each from the float64 softmax), for a corpus made once and kept."""
        import torch

        rng = np.random.default_rng(seed)
        ids = list(prompt_ids)
        with torch.inference_mode():
            for _ in range(n_tokens):
                logits = self.model(input_ids=torch.tensor([ids], dtype=torch.long)).logits
                probs = torch.softmax(logits[0, -1].double(), dim=-1).numpy()
                ids.append(int(rng.choice(probs.size, p=probs / probs.sum())))
        return ids[len(prompt_ids) :]

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    def perturbed(self, step: float, seed: int, out_dir: Path) -> Trainer:
        """Save a copy moved by one sign-like optimizer step (each weight ± step·rms(weight)),
        as an RL update would, and return a trainer on it."""
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                direction = torch.randn(param.shape, generator=generator).sign()
                rms = param.pow(2).mean().sqrt().clamp_min(1e-8)
                param.add_(direction * rms * step)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        model.save_pretrained(out_dir)
        for name in (
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "generation_config.json",
            "vocab.json",
            "merges.txt",
        ):
            if (self.path / name).exists() and not (out_dir / name).exists():
                shutil.copy2(self.path / name, out_dir / name)
        return Trainer(out_dir, self.dtype, label=f"perturbed(step={step:g})")


def _targets(key: tuple[Any, ...]) -> Any:
    import torch

    return torch.tensor(key[1], dtype=torch.long)


def score_logits(
    logits: Any, targets: Any, temperature: float, top_p: float, top_k: int
) -> TokenScores:
    """Logprobs of `targets` under raw, temperature-scaled and processed (top-k, then top-p,
    renormalised over the kept support, as vLLM's sampler does) distributions."""
    import torch

    raw, tempered = _raw_and_tempered(logits, temperature)
    keep, kept_mass = _support(tempered, top_p, top_k)
    rows = torch.arange(len(targets))
    tempered_target = tempered[rows, targets]
    return TokenScores(
        raw=raw[rows, targets].numpy(),
        temperature=tempered_target.numpy(),
        processed=(tempered_target - kept_mass).numpy(),
        argmax=logits.argmax(dim=-1).numpy().astype(np.int64),
        in_support=keep[rows, targets].numpy(),
    )


def distribution_rows(
    logits: Any, temperature: float, top_p: float, top_k: int, semantics: str
) -> np.ndarray:
    """Whole-vocabulary log-distributions of `logits` rows under raw, temperature-scaled or
    processed semantics (as `score_logits` scores single tokens)."""
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown trainer semantics {semantics!r}")
    raw, tempered = _raw_and_tempered(logits, temperature)
    if semantics == "raw":
        return raw.numpy()  # type: ignore[no-any-return]
    if semantics == "temperature":
        return tempered.numpy()  # type: ignore[no-any-return]
    keep, kept_mass = _support(tempered, top_p, top_k)
    return (tempered - kept_mass[:, None]).masked_fill(~keep, float("-inf")).numpy()  # type: ignore[no-any-return]


def _raw_and_tempered(logits: Any, temperature: float) -> tuple[Any, Any]:
    """float64 log-softmax of the logits, and of the logits over the temperature (the same
    tensor where dividing would change nothing: T = 1, or greedy's T = 0)."""
    import torch

    wide = logits.double()
    raw = torch.log_softmax(wide, dim=-1)
    if temperature <= 0 or temperature == 1.0:
        return raw, raw
    return raw, torch.log_softmax(wide / temperature, dim=-1)


def _support(logprobs: Any, top_p: float, top_k: int) -> tuple[Any, Any]:
    """The kept support (boolean, per vocabulary id) and the log of its mass, per row. Under
    top-k without ties at the k-th value, both come from the k candidates alone: the same
    support as the whole-vocabulary `_kept_support`, a mass within float64 rounding (1e-15),
    at well under half its cost on a 49,152-id vocabulary (docs/benchmarks.md)."""
    import torch

    vocab = logprobs.shape[-1]
    if 0 < top_k < vocab:
        values, ids = torch.topk(logprobs, top_k, dim=-1)
        if not bool((logprobs >= values[:, -1:]).sum(dim=-1).gt(top_k).any()):
            kept = torch.ones_like(values, dtype=torch.bool)
            if top_p < 1.0:
                ascending = torch.softmax(values, dim=-1).flip(-1)
                dropped = ascending.cumsum(dim=-1) <= (1.0 - top_p)
                dropped[..., -1] = False
                kept = ~dropped.flip(-1)
            keep = torch.zeros_like(logprobs, dtype=torch.bool).scatter(-1, ids, kept)
            mass = torch.logsumexp(values.masked_fill(~kept, float("-inf")), dim=-1)
            return keep, mass
    return _whole_support(logprobs, top_p, top_k)


def _whole_support(logprobs: Any, top_p: float, top_k: int) -> tuple[Any, Any]:
    """The kept support and the log of its mass, per row, over the whole vocabulary."""
    import torch

    keep = _kept_support(logprobs, top_p, top_k)
    if bool(keep.all()):
        return keep, torch.logsumexp(logprobs, dim=-1)
    return keep, torch.logsumexp(logprobs.masked_fill(~keep, float("-inf")), dim=-1)


def _kept_support(logprobs: Any, top_p: float, top_k: int) -> Any:
    """Boolean mask of the tokens that survive top-k then top-p, over the whole vocabulary."""
    import torch

    vocab = logprobs.shape[-1]
    keep = torch.ones_like(logprobs, dtype=torch.bool)
    if 0 < top_k < vocab:
        kth = torch.topk(logprobs, top_k, dim=-1).values[..., -1:]
        keep &= logprobs >= kth
    if top_p < 1.0:
        masked = logprobs.masked_fill(~keep, float("-inf"))
        probs = torch.softmax(masked, dim=-1)
        if keep.all():
            ascending, order = torch.sort(probs, dim=-1, descending=False)
        else:
            # Tokens cut by top-k have probability 0 and add nothing to the ascending cumsum:
            # the cut over the top-k candidates alone is the cut over the whole vocabulary.
            width = int(keep.sum(dim=-1).max())
            descending, order = torch.topk(probs, width, dim=-1)
            ascending, order = descending.flip(-1), order.flip(-1)
        cumulative = ascending.cumsum(dim=-1)
        drop_sorted = cumulative <= (1.0 - top_p)
        drop_sorted[..., -1] = False
        drop = torch.zeros_like(keep).scatter(-1, order, drop_sorted)
        keep &= ~drop
    return keep
