"""How long a `parity` command takes to start, against a bare Python start measured in the same
run: every CLI call (and every test that runs the CLI) pays it.

    .venv/bin/python bench/cli_startup.py [repeats]

Prints the median wall time of each command and its ratio to `python -c pass`, and whether the
statistics stack (SciPy, ruptures: seconds to import) was loaded by `import monitor.cli`."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass (baseline)": ["-c", "pass"],
    "import monitor.store": ["-c", "import monitor.store"],
    "parity --help": ["-m", "monitor.cli", "--help"],
    "import monitor.judge (statistics)": ["-c", "import monitor.judge"],
}


def median_seconds(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    medians = {name: median_seconds(args, repeats) for name, args in COMMANDS.items()}
    baseline = medians["python -c pass (baseline)"]
    for name, seconds in medians.items():
        print(f"{name:<36} {seconds:6.2f} s  ({seconds / baseline:5.1f}x bare python)")
    probe = "import sys, monitor.cli; print(sorted({'scipy', 'ruptures'} & set(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    print(f"statistics loaded by `import monitor.cli`: {loaded.stdout.strip()} (goal: [])")


if __name__ == "__main__":
    main()
