"""A run request from the dashboard's form, validated before anything reaches the store: the
release as a PEP 440 engine spec, the options against the suite's own limits (`RunOptions`,
the same as `parity run`), a known runner and a plain requester name. Pure, no I/O."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from monitor.engines import EngineSpecError, parse_engine
from monitor.runners.base import RUNNER_KINDS, RunOptions

FORM_MODELS = ("tiny", "smollm2")
"""Models a form may ask for: built here from packaged data. A path on the server is not a
choice a web form gets to make."""
MAX_REQUESTER = 64


class RequestError(ValueError):
    """A run request that is refused; the message is one line naming the problem."""


@dataclass(frozen=True)
class RunRequest:
    package: str
    version: str
    runner: str
    options: RunOptions
    requested_by: str

    @property
    def release(self) -> str:
        return f"{self.package}=={self.version}"


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "options"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def check_requester(name: str) -> str:
    """A requester name: 1 to 64 printable characters, no control or formatting characters."""
    name = name.strip()
    if not name:
        raise RequestError("say who is asking (your name or e-mail)")
    if len(name) > MAX_REQUESTER:
        raise RequestError(f"requester name is {len(name)} characters long (at most 64)")
    if any(unicodedata.category(char).startswith("C") for char in name):
        raise RequestError("requester name contains control characters")
    return name


def check_request(
    package: str, version: str, runner: str, options: dict[str, Any], requested_by: str
) -> RunRequest:
    """The request, or RequestError naming the first problem."""
    if not version.strip():
        raise RequestError("give the release version, e.g. 0.32.0")
    try:
        parsed_package, parsed_version = parse_engine(f"{package.strip()}=={version.strip()}")
    except EngineSpecError as exc:
        raise RequestError(str(exc)) from None
    if runner not in RUNNER_KINDS:
        raise RequestError(f"runner must be one of {', '.join(RUNNER_KINDS)}, not {runner!r}")
    if options.get("model") not in FORM_MODELS:
        raise RequestError(f"model must be one of {', '.join(FORM_MODELS)}")
    if options.get("prompts") is not None:
        raise RequestError("a requested run uses the bundled prompts")
    try:
        checked = RunOptions.model_validate(options)
    except ValidationError as exc:
        raise RequestError(f"run options {_problem(exc)}") from None
    return RunRequest(
        package=parsed_package,
        version=str(parsed_version),
        runner=runner,
        options=checked,
        requested_by=check_requester(requested_by),
    )
