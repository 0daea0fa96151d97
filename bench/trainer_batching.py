"""The trainer's scoring time, batched against one sequence per forward, side by side in one
process, with the largest logprob difference between the two; run with a release environment's
python (torch lives there), as bench/suite_cost.py does.

    ENV/bin/python bench/trainer_batching.py [MODEL] [MODEL_CACHE_DIR] [N_SEQUENCES]

MODEL: tiny | smollm2 (default) | an HF model directory.

The sequences are the bundled prompts, encoded as the suite encodes them, each followed by 32
tokens drawn from the model's vocabulary (a forward's cost does not depend on which tokens)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.suite.models import default_cache_dir, resolve_model  # noqa: E402
from monitor.suite.prompts import load_prompts  # noqa: E402
from monitor.suite.trainer import BATCH_SEQUENCES, BATCHED_DTYPES, Trainer  # noqa: E402

SAMPLING = (0.7, 0.9, 50)
TOKENS = 32


def sequences(path: Path, count: int) -> list[tuple[list[int], list[int]]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    rng = np.random.default_rng(0)
    chosen = []
    for prompt in load_prompts()[:count]:
        ids = list(tokenizer.encode(prompt.text))
        chosen.append((ids, rng.integers(0, len(tokenizer), size=TOKENS).tolist()))
    return chosen


def timed(path: Path, dtype: str, batch: int, seqs: list[Any]) -> tuple[float, list[Any]]:
    trainer = Trainer(path, dtype, batch=batch)
    started = time.perf_counter()
    scores = trainer.score_many(seqs, *SAMPLING)
    return time.perf_counter() - started, scores


def largest_difference(a: list[Any], b: list[Any]) -> float:
    return max(
        float(np.abs(getattr(x, field) - getattr(y, field)).max(initial=0.0))
        for x, y in zip(a, b, strict=True)
        for field in ("raw", "temperature", "processed")
    )


def main() -> None:
    spec = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    cache = Path(sys.argv[2]) if len(sys.argv) > 2 else default_cache_dir()
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    path = Path(resolve_model(spec, cache).path)
    seqs = sequences(path, count)
    print(
        f"{len(seqs)} sequences of {path.name}, prompt + {TOKENS} tokens, "
        f"batches of {BATCH_SEQUENCES}"
    )
    for dtype in ("float32", "float64"):
        alone_s, alone = timed(path, dtype, 1, seqs)
        batched_s, batched = timed(path, dtype, BATCH_SEQUENCES, seqs)
        used = "batched" if dtype in BATCHED_DTYPES else "one per forward"
        print(
            f"{dtype}: one per forward {alone_s:6.1f} s, batched {batched_s:6.1f} s "
            f"({alone_s / batched_s:.2f}x); max |logprob difference| "
            f"{largest_difference(alone, batched):.1e}; the suite scores it {used}"
        )


if __name__ == "__main__":
    main()
