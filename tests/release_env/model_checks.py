"""Model checks that need torch, transformers, tokenizers and gguf: run by tests/test_models.py
with a release environment's python, where those live (the monitor's own environment has none).

    python tests/release_env/model_checks.py CHECK WORK_DIR
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from monitor.suite import models
from monitor.suite.models import fingerprint, resolve_model
from monitor.suite.prompts import load_prompts

TINY_MIN_PEAKEDNESS = 0.4  # measured 0.65 with transformers 5.19 / torch 2.13 (1/vocab ~ 0.001)


def check_build_tiny_is_cached(work: Path) -> None:
    tiny_dir = models.build_tiny(work / "models")
    assert tiny_dir.name.startswith("tiny-") and len(tiny_dir.name) == len("tiny-") + 12
    started = time.monotonic()
    again = models.build_tiny(tiny_dir.parent)
    assert again == tiny_dir
    assert time.monotonic() - started < 5
    assert fingerprint(again) == fingerprint(tiny_dir)
    assert [p.name for p in tiny_dir.parent.iterdir()] == [tiny_dir.name]
    expected = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert {p.name for p in tiny_dir.iterdir()} == expected


def check_build_tiny_is_deterministic(work: Path) -> None:
    tiny_dir = models.build_tiny(work / "models")
    tmp_path = work / "scratch"
    other = models.build_tiny(tmp_path / "cache-b")
    assert other.name == tiny_dir.name
    assert fingerprint(other) == fingerprint(tiny_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (other / name).read_bytes() == (tiny_dir / name).read_bytes(), name


def check_resolve_tiny(work: Path) -> None:
    tiny_dir = models.build_tiny(work / "models")
    info = resolve_model("tiny", tiny_dir.parent)
    assert info.source == "tiny" and info.name == "tiny"
    assert info.path == str(tiny_dir.resolve())
    assert info.architecture == "Qwen2ForCausalLM"
    assert info.fingerprint == fingerprint(tiny_dir)
    config = json.loads((tiny_dir / "config.json").read_text(encoding="utf-8"))
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    assert (config["hidden_size"], config["num_hidden_layers"], head_dim) == (256, 2, 64)
    assert config["tie_word_embeddings"] is False
    assert 1_000_000 < info.n_parameters < 3_000_000


def check_tiny_tokenizer_round_trips(work: Path) -> None:
    tiny_dir = models.build_tiny(work / "models")
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    raw = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    config = json.loads((tiny_dir / "config.json").read_text(encoding="utf-8"))
    assert len(tokenizer) == config["vocab_size"]
    assert tokenizer.bos_token_id == config["bos_token_id"]
    assert tokenizer.eos_token_id == config["eos_token_id"]
    samples = [p.text for p in load_prompts()] + ["Unseen text: Zürich, 42 €, ¿qué? 🙂\n\tdone"]
    for text in samples:
        ids = tokenizer(text).input_ids
        assert ids[0] == config["bos_token_id"]
        assert max(ids) < config["vocab_size"]
        assert ids == raw.encode(text).ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text


def check_tiny_next_token_distributions_are_peaked(work: Path) -> None:
    tiny_dir = models.build_tiny(work / "models")
    texts = [p.text for p in load_prompts()]
    peak = models.measure_peakedness(tiny_dir, texts)
    assert peak > TINY_MIN_PEAKEDNESS, peak


def check_tiny_loads_in_hf_and_generates(work: Path) -> None:
    tiny_dir = models.build_tiny(work / "models")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = tokenizer("Once upon a time", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8


def check_convert_smollm2(work: Path) -> None:
    tmp_path = work / "smollm2"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.convert_smollm2(tmp_path)
    assert path.name.startswith("smollm2-")
    assert models.convert_smollm2(tmp_path) == path
    info = resolve_model("smollm2", tmp_path)
    assert info.architecture == "LlamaForCausalLM"
    assert 130_000_000 < info.n_parameters < 140_000_000
    assert (path / "model.safetensors").stat().st_size < 300_000_000

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    assert len(tokenizer) == model.config.vocab_size
    assert tokenizer("12345").input_ids == tokenizer.convert_tokens_to_ids(list("12345"))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])


def check_trainer_scores_each_sequence_once_in_exact_batches(work: Path) -> None:
    """score_many forwards each distinct sequence once: float64 in right-padded batches that
    give the one-sequence logprobs (within 1e-9), float32 one sequence per forward, bit for bit;
    a top-k request's forward also scores its sequence."""
    import numpy as np

    from monitor.suite.trainer import BATCH_SEQUENCES, Trainer

    tiny_dir = models.build_tiny(work / "models")
    rng = np.random.default_rng(7)
    sequences = [
        (
            rng.integers(3, 200, size=int(rng.integers(2, 30))).tolist(),
            rng.integers(3, 200, size=n).tolist(),
        )
        for n in (0, 1, 5, 8, 8, 12, 3, 16, 2, 9, 7)
    ]
    asked = [*sequences, sequences[3], sequences[0]]
    for dtype, per_call, tolerance in (("float64", BATCH_SEQUENCES, 1e-9), ("float32", 1, 0.0)):
        batched = Trainer(tiny_dir, dtype)
        calls: list[int] = []
        batched.model.register_forward_hook(
            lambda _m, _a, kw, _o, calls=calls: calls.append(len(kw["input_ids"])), with_kwargs=True
        )
        scores = batched.score_many(asked, 0.7, 0.9, 20)
        assert batched.forwards == len(sequences)
        assert calls == [
            min(per_call, len(sequences) - i) for i in range(0, len(sequences), per_call)
        ]
        single = Trainer(tiny_dir, dtype)
        for (prompt, tokens), got in zip(asked, scores, strict=True):
            alone = single.score(prompt, tokens, 0.7, 0.9, 20)
            for field in ("raw", "temperature", "processed"):
                assert (
                    np.abs(getattr(got, field) - getattr(alone, field)).max(initial=0) <= tolerance
                ), (dtype, field)
            assert (got.in_support == alone.in_support).all() and (got.argmax == alone.argmax).all()
        assert batched.score_many(asked, 0.7, 0.9, 20) == scores and batched.forwards == len(
            sequences
        )
        fresh = Trainer(tiny_dir, dtype)
        rows = fresh.distributions_many(
            [(p, t, [0, 1]) for p, t in sequences[2:5]], 0.7, 0.9, 20, "raw"
        )
        assert [r.shape for r in rows] == [(2, fresh.model.config.vocab_size)] * 3
        fresh.score_many(sequences[2:5], 0.7, 0.9, 20)
        assert fresh.forwards == 3


CHECKS = {
    name[len("check_") :]: fn for name, fn in dict(globals()).items() if name.startswith("check_")
}

if __name__ == "__main__":
    CHECKS[sys.argv[1]](Path(sys.argv[2]))
