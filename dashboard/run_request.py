"""The dashboard's policy on run requests, over `monitor.requests.check_request` (which checks
the release, the options against `SuiteOptions`, the runner and the requester): a form may only
ask for a model built here from packaged data, and always runs the bundled prompts. Pure, no
I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.requests import RequestError, RunRequest, check_request

FORM_MODELS = ("tiny", "smollm2")
"""Models a form may ask for: built here from packaged data. A path on the server is not a
choice a web form gets to make."""


def check_form_request(
    package: str, version: str, runner: str, options: Mapping[str, Any], requested_by: str
) -> RunRequest:
    """The request the form's values make, or RequestError naming the first problem."""
    if not version.strip():
        raise RequestError("give the release version, e.g. 0.32.0")
    if options.get("model") not in FORM_MODELS:
        raise RequestError(f"model must be one of {', '.join(FORM_MODELS)}")
    if "prompts" in options:
        raise RequestError("a requested run uses the bundled prompts")
    return check_request(
        f"{package.strip()}=={version.strip()}", options, runner, requested_by=requested_by
    )
