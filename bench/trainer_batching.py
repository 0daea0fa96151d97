"""The trainer's scoring time, batched against one sequence per forward, side by side in one
process, with the largest logprob difference between the two; run with a release environment's
python (torch lives there), as bench/suite_cost.py does.

    ENV/bin/python bench/trainer_batching.py [MODEL] [MODEL_CACHE_DIR] [N_SEQUENCES]

MODEL: tiny | smollm2 (default) | an HF model directory.

The sequences are the bundled prompts, encoded as the suite encodes them, each followed by 32
tokens drawn from the model's vocabulary (a forward's cost does not depend on which tokens).
Then the processed logprobs' support under top-k, from the k candidates (what the trainer does)
against the whole vocabulary, on 32 rows of logits the size of the model's vocabulary. Last,
where one float32 forward of the longest prompt spends its time (matrix products, attention,
the rest) and its matrix products' rate against bare `torch.mm` on the same shapes: how close
exact scoring already is to what this CPU can do."""

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
from monitor.suite.trainer import (  # noqa: E402
    BATCH_SEQUENCES,
    BATCHED_DTYPES,
    Trainer,
    _support,
    _whole_support,
)

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


def support_cost(vocab: int, repeats: int = 20) -> None:
    """Median time of the top-k support from the candidates against the whole vocabulary."""
    import torch

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(32, vocab, generator=generator, dtype=torch.float64) * 3
    logprobs = torch.log_softmax(logits / SAMPLING[0], dim=-1)

    def median_s(call: Any) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return float(np.median(times))

    fast, slow = (
        median_s(lambda: _support(logprobs, *SAMPLING[1:])),
        median_s(lambda: _whole_support(logprobs, *SAMPLING[1:])),
    )
    (keep, mass), (expected_keep, expected_mass) = (
        _support(logprobs, *SAMPLING[1:]),
        _whole_support(logprobs, *SAMPLING[1:]),
    )
    same = bool(torch.equal(keep, expected_keep))
    print(
        f"support of 32 rows x {vocab} ids (top-p {SAMPLING[1]}, top-k {SAMPLING[2]}): "
        f"candidates {fast * 1e3:.1f} ms, whole vocabulary {slow * 1e3:.1f} ms "
        f"({slow / fast:.1f}x); same support: {same}; max |mass difference| "
        f"{float((mass - expected_mass).abs().max()):.1e}"
    )


def forward_profile(trainer: Trainer, seq: tuple[list[int], list[int]], repeats: int = 3) -> None:
    """Shares of one forward's time by operator (a profile without FLOP counting, which
    doubles it), and the rate of its matrix products against `torch.mm` of the model's own
    projection shapes, measured in this process."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    ids = torch.tensor([seq[0] + seq[1]])
    kept = len(seq[1]) + 1
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            trainer.model(input_ids=ids, logits_to_keep=kept)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                trainer.model(input_ids=ids, logits_to_keep=kept)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key == "aten::mm")
    attention = sum(e.self_cpu_time_total for e in events if "attention" in e.key)
    matmul_flops = repeats * counter.get_flop_counts()["Global"][torch.ops.aten.mm]
    config = trainer.model.config
    hidden, inner = config.hidden_size, config.intermediate_size
    rows = ids.shape[1]
    bare = []
    for inner_dim, outer in ((hidden, inner), (inner, hidden), (hidden, hidden)):
        a, b = torch.randn(rows, inner_dim), torch.randn(inner_dim, outer)
        a @ b
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        bare.append(2 * rows * inner_dim * outer * 10 / (time.perf_counter() - started))
    in_forward = matmul_flops / (matmul * 1e-6)
    print(
        f"one float32 forward of {rows} tokens, {total * 1e-6 / repeats:.2f} s: matrix products "
        f"{matmul / total:.0%}, attention {attention / total:.0%}, the rest "
        f"{1 - (matmul + attention) / total:.0%}; its matrix products run at "
        f"{in_forward / 1e9:.0f} GFLOP/s, bare torch.mm of its shapes at "
        f"{min(bare) / 1e9:.0f}-{max(bare) / 1e9:.0f} GFLOP/s ({in_forward / max(bare):.0%} of "
        "the best)"
    )


def main() -> None:
    spec = sys.argv[1] if len(sys.argv) > 1 else "smollm2"
    cache = Path(sys.argv[2]) if len(sys.argv) > 2 else default_cache_dir()
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    path = Path(resolve_model(spec, cache).path)
    every = sequences(path, len(load_prompts()))
    seqs = every[:count]
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
    from transformers import AutoConfig

    support_cost(AutoConfig.from_pretrained(path).vocab_size)
    longest = max(every, key=lambda seq: len(seq[0]))
    forward_profile(Trainer(path, "float32"), longest)


if __name__ == "__main__":
    main()
