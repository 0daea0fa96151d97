"""Fault overlays: a venv that runs a real release environment's packages in place (through a
`.pth` that adds its site-packages) plus `parity_planted_faults`, so the copy is presented to
the monitor as another release (`PARITY_PREBUILT_ENVS`) whose faults `PARITY_FAULT` plants."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

FAULT_MODULE = Path(__file__).with_name("parity_planted_faults.py")
FAULT_VAR = "PARITY_FAULT"
STAMP = "parity-overlay.json"


def _site_dirs(python: Path) -> list[str]:
    """The purelib and platlib directories of an environment's interpreter."""
    code = "import sysconfig; p = sysconfig.get_paths(); print(p['purelib']); print(p['platlib'])"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return list(dict.fromkeys(done.stdout.split()))


def fault_env(real_python: Path, target: Path, version: str) -> Path:
    """The overlay of the environment of `real_python` reporting vLLM `version`, built at
    `target` unless one with the same inputs is there already; returns `target`."""
    wanted = {
        "real_python": str(real_python),
        "real_site": _site_dirs(real_python),
        "version": version,
        "module_sha256": hashlib.sha256(FAULT_MODULE.read_bytes()).hexdigest(),
    }
    stamp = target / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return target
    building = target.with_name(f".{target.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run(
        [str(real_python), "-m", "venv", "--without-pip", str(building)],
        check=True,
        capture_output=True,
    )
    site = Path(_site_dirs(building / "bin" / "python")[0])
    base = "".join(f"import site; site.addsitedir({path!r})\n" for path in wanted["real_site"])
    (site / "parity_base_env.pth").write_text(base)
    shutil.copy2(FAULT_MODULE, site / FAULT_MODULE.name)
    (site / "parity_planted_faults.pth").write_text(
        f"import parity_planted_faults; parity_planted_faults.install({version!r})\n"
    )
    (building / STAMP).write_text(json.dumps(wanted))
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)
    return target
