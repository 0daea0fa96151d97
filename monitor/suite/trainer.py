"""Trainer-side reference: recompute the sampled tokens' logprobs with HF transformers, as an RL
trainer would, under each logprob semantics (raw, temperature-scaled, fully processed)."""

from __future__ import annotations

import inspect
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SEMANTICS = ("raw", "temperature", "processed")


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

    def __init__(self, model_path: Path, dtype: str, label: str = "initial") -> None:
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

    def score(
        self,
        prompt_ids: list[int],
        token_ids: list[int],
        temperature: float,
        top_p: float,
        top_k: int,
    ) -> TokenScores:
        key = (tuple(prompt_ids), tuple(token_ids), temperature, top_p, top_k)
        if key not in self._cache:
            self._cache[key] = self._score(prompt_ids, token_ids, temperature, top_p, top_k)
        return self._cache[key]

    def _score(
        self,
        prompt_ids: list[int],
        token_ids: list[int],
        temperature: float,
        top_p: float,
        top_k: int,
    ) -> TokenScores:
        import torch

        logits = self._continuation_logits(prompt_ids, token_ids)
        targets = torch.tensor(token_ids, dtype=torch.long)
        return score_logits(logits, targets, temperature, top_p, top_k)

    def _continuation_logits(self, prompt_ids: list[int], token_ids: list[int]) -> Any:
        """One forward over prompt + continuation: the fp32 logits predicting each continuation
        token (row i predicts token_ids[i])."""
        import torch

        self.forwards += 1
        ids = torch.tensor([prompt_ids + token_ids], dtype=torch.long)
        kept = len(token_ids) + 1
        only_scored = {"logits_to_keep": kept} if self._keeps_logits else {}
        with torch.inference_mode():
            logits = self.model(input_ids=ids, **only_scored).logits[0].float()
        return logits[-kept:-1]

    def distributions(
        self,
        prompt_ids: list[int],
        token_ids: list[int],
        positions: list[int],
        temperature: float,
        top_p: float,
        top_k: int,
        semantics: str,
    ) -> np.ndarray:
        """The whole log-distribution (one row per vocabulary id) the trainer gives each of the
        continuation's `positions` under `semantics` (processed: -inf outside the top-k/top-p
        support); not cached, one forward per call."""
        import torch

        logits = self._continuation_logits(prompt_ids, token_ids)
        rows = logits[torch.tensor(positions, dtype=torch.long)]
        return distribution_rows(rows, temperature, top_p, top_k, semantics)

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


def score_logits(
    logits: Any, targets: Any, temperature: float, top_p: float, top_k: int
) -> TokenScores:
    """Logprobs of `targets` under raw, temperature-scaled and processed (top-k, then top-p,
    renormalised over the kept support, as vLLM's sampler does) distributions."""
    import torch

    raw = torch.log_softmax(logits.double(), dim=-1)
    scaled = logits.double() / temperature if temperature > 0 else logits.double()
    tempered = torch.log_softmax(scaled, dim=-1)
    keep = _kept_support(tempered, top_p, top_k)
    kept_mass = torch.logsumexp(tempered.masked_fill(~keep, float("-inf")), dim=-1)
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
    import torch

    if semantics not in SEMANTICS:
        raise ValueError(f"unknown trainer semantics {semantics!r}")
    raw = torch.log_softmax(logits.double(), dim=-1)
    if semantics == "raw":
        return raw.numpy()  # type: ignore[no-any-return]
    scaled = logits.double() / temperature if temperature > 0 else logits.double()
    tempered = torch.log_softmax(scaled, dim=-1)
    if semantics == "temperature":
        return tempered.numpy()  # type: ignore[no-any-return]
    keep = _kept_support(tempered, top_p, top_k)
    kept_mass = torch.logsumexp(tempered.masked_fill(~keep, float("-inf")), dim=-1, keepdim=True)
    return (tempered - kept_mass).masked_fill(~keep, float("-inf")).numpy()  # type: ignore[no-any-return]


def _kept_support(logprobs: Any, top_p: float, top_k: int) -> Any:
    """Boolean mask of the tokens that survive top-k then top-p."""
    import torch

    vocab = logprobs.shape[-1]
    keep = torch.ones_like(logprobs, dtype=torch.bool)
    if 0 < top_k < vocab:
        kth = torch.topk(logprobs, top_k, dim=-1).values[..., -1:]
        keep &= logprobs >= kth
    if top_p < 1.0:
        masked = logprobs.masked_fill(~keep, float("-inf"))
        probs = torch.softmax(masked, dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=False)
        cumulative = sorted_probs.cumsum(dim=-1)
        drop_sorted = cumulative <= (1.0 - top_p)
        drop_sorted[..., -1] = False
        drop = torch.zeros_like(keep).scatter(-1, order, drop_sorted)
        keep &= ~drop
    return keep
