"""The replay corpus: fixed token sequences (prompt + completion) that every release scores by
teacher forcing, so two releases are compared on the very same tokens. A corpus is made once per
model (sampled from the trainer at T=1 with a fixed seed), shipped with the project for the
bundled models and kept in the model cache for any other; it is never made again for a model
that has one, whatever the release."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from monitor.schema import SamplingSpec

FORMAT = 1
PROMPTS = 16
"""Sequences in a corpus (the first prompts of the bundled prompt set)."""
TOKENS = 32
"""Completion tokens per sequence."""
SEED = 20261203
SHIPPED = Path(__file__).parent / "data" / "replay"


class Sampler(Protocol):
    def continuation(self, prompt_ids: list[int], n_tokens: int, seed: int) -> list[int]: ...


class ReplaySequence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_index: int = Field(ge=0)
    prompt_ids: list[int] = Field(min_length=1)
    token_ids: list[int] = Field(min_length=1)


class ReplayCorpus(BaseModel):
    """One model's corpus; `digest` names its token sequences (equal digest, equal tokens)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = FORMAT
    model: str
    fingerprint: str
    seed: int
    tokens_per_sequence: int = Field(ge=1)
    sequences: list[ReplaySequence] = Field(min_length=1)

    @property
    def digest(self) -> str:
        text = json.dumps([s.model_dump() for s in self.sequences], separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def longest(self) -> int:
        return max(len(s.prompt_ids) + len(s.token_ids) for s in self.sequences)

    def text(self) -> str:
        """The corpus as JSON with one sequence per line (short diffs, readable headers)."""
        head = self.model_dump(exclude={"sequences"})
        lines = ",\n".join(s.model_dump_json() for s in self.sequences)
        return json.dumps(head)[:-1] + ', "sequences": [\n' + lines + "\n]}\n"

    def sampling(self) -> SamplingSpec:
        """The distribution the corpus was drawn from and is scored under: T=1, untruncated."""
        return SamplingSpec(
            temperature=1.0,
            top_p=1.0,
            top_k=-1,
            max_tokens=self.tokens_per_sequence,
            seed=self.seed,
            ignore_eos=True,
        )


def corpus_path(directory: Path, fingerprint: str) -> Path:
    return directory / f"{fingerprint}.json"


def build_corpus(
    model: str, fingerprint: str, prompts: Sequence[tuple[int, list[int]]], sampler: Sampler
) -> ReplayCorpus:
    """Draw TOKENS tokens after each of the first PROMPTS prompts, each with its own seed."""
    chosen = sorted(prompts)[:PROMPTS]
    return ReplayCorpus(
        model=model,
        fingerprint=fingerprint,
        seed=SEED,
        tokens_per_sequence=TOKENS,
        sequences=[
            ReplaySequence(
                prompt_index=index,
                prompt_ids=list(ids),
                token_ids=sampler.continuation(list(ids), TOKENS, SEED + index),
            )
            for index, ids in chosen
        ],
    )


def load_corpus(path: Path, fingerprint: str) -> ReplayCorpus:
    corpus = ReplayCorpus.model_validate_json(path.read_text())
    if corpus.fingerprint != fingerprint:
        raise ValueError(
            f"{path} holds the corpus of model {corpus.fingerprint}, not {fingerprint}"
        )
    return corpus


def replay_corpus(
    model: str,
    fingerprint: str,
    prompts: Sequence[tuple[int, list[int]]],
    sampler: Sampler,
    cache_dir: Path,
) -> tuple[ReplayCorpus, str]:
    """The model's corpus and where it came from: shipped, kept in the cache, or made now (and
    kept, atomically, so a later release replays the same tokens)."""
    for where, directory in (("shipped", SHIPPED), ("kept", cache_dir / "replay")):
        path = corpus_path(directory, fingerprint)
        if path.exists():
            return load_corpus(path, fingerprint), f"{where} {path.name}"
    corpus = build_corpus(model, fingerprint, prompts, sampler)
    return corpus, f"made now, kept as {write_corpus(corpus, cache_dir / 'replay')}"


def write_corpus(corpus: ReplayCorpus, directory: Path) -> Path:
    """Write the corpus atomically (a reader sees all of it or none) under its fingerprint."""
    path = corpus_path(directory, corpus.fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(corpus.text())
    partial.replace(path)
    return path


def bundled_prompt_ids(tokenizer: Any) -> list[tuple[int, list[int]]]:
    """The first PROMPTS bundled prompts, tokenized: what a corpus is drawn after."""
    from monitor.suite.prompts import load_prompts

    return [(i, list(tokenizer.encode(p.text))) for i, p in enumerate(load_prompts()[:PROMPTS])]


def main(argv: Sequence[str] | None = None) -> int:
    """Make a model's corpus (run inside a release environment), into the shipped folder
    unless --out names another."""
    import argparse

    from monitor.suite.models import default_cache_dir, resolve_model
    from monitor.suite.trainer import Trainer

    parser = argparse.ArgumentParser(
        prog="python -m monitor.suite.replay", description=main.__doc__
    )
    parser.add_argument("spec", help='"tiny", "smollm2" or a path to an HF model directory')
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache directory")
    parser.add_argument("--out", type=Path, default=SHIPPED, help="folder to write it to")
    args = parser.parse_args(argv)
    info = resolve_model(args.spec, args.cache_dir or default_cache_dir())
    trainer = Trainer(Path(info.path), "float32")
    prompts = bundled_prompt_ids(trainer.tokenizer())
    corpus = build_corpus(info.name, info.fingerprint, prompts, trainer)
    print(f"{write_corpus(corpus, args.out)}\t{corpus.digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
