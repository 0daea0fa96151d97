"""Run requests: a release, the suite options, a prompt file, a runner and who asks, checked
before anything runs or is queued, and the suite config a request becomes. Every way a run is
asked for (`parity run`, `backfill`, the dashboard, discovery, nightly, confirmation) builds its
config here, with the KV cache size from the settings, so equal requests fall into one series."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from monitor.config import RUNNER_KINDS, Settings
from monitor.engines import EngineSpec, EngineSpecError, parse_release
from monitor.errors import one_line
from monitor.schema import SuiteConfig, SuiteOptions, validation_problem
from monitor.store.queue import insert_run
from monitor.suite.models import ModelError, check_model_spec
from monitor.suite.prompts import PromptError, bundled_prompts_text, load_prompts

MAX_REQUESTER = 64
BUNDLED = "bundled"


class RequestError(ValueError):
    """A run request that is refused; the message is one line naming the problem."""


@dataclass(frozen=True)
class PromptSet:
    """A prompt file (or the bundled prompts) as a run's config names it, read once."""

    label: str
    sha256: str
    count: int


@dataclass(frozen=True)
class RunRequest:
    """One run asked for: what to measure (release, options, prompts), where, and by whom."""

    release: EngineSpec
    options: SuiteOptions
    runner: str = "local"
    prompts: PromptSet | None = None
    """None: the bundled prompts."""
    requested_by: str | None = None


def check_options(values: Mapping[str, Any] | SuiteOptions) -> SuiteOptions:
    """Suite options within their limits and a model this machine can load, or RequestError."""
    if isinstance(values, SuiteOptions):
        options = values
    else:
        try:
            options = SuiteOptions.model_validate(dict(values))
        except ValidationError as exc:
            raise RequestError(f"run options {validation_problem(exc)}") from None
    try:
        check_model_spec(options.model)
    except ModelError as exc:
        raise RequestError(one_line(exc)) from None
    return options


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
    release: str | EngineSpec,
    options: Mapping[str, Any] | SuiteOptions,
    runner: str,
    *,
    prompts: Path | None = None,
    requested_by: str | None = None,
) -> RunRequest:
    """The request, or RequestError naming its first problem."""
    try:
        spec = parse_release(release.strip() if isinstance(release, str) else release)
    except EngineSpecError as exc:
        raise RequestError(str(exc)) from None
    if runner not in RUNNER_KINDS:
        raise RequestError(f"runner must be one of {', '.join(RUNNER_KINDS)}, not {runner!r}")
    return RunRequest(
        release=spec,
        options=check_options(options),
        runner=runner,
        prompts=None if prompts is None else read_prompts(prompts),
        requested_by=None if requested_by is None else check_requester(requested_by),
    )


def read_prompts(path: Path | None) -> PromptSet:
    """A prompt file, or the bundled prompts, checked and hashed; RequestError when it cannot
    be read or parsed."""
    try:
        loaded = load_prompts(path)
        text = path.read_bytes() if path is not None else bundled_prompts_text().encode()
    except (PromptError, OSError) as exc:
        raise RequestError(one_line(exc)) from None
    label = str(path.resolve()) if path is not None else BUNDLED
    return PromptSet(label, hashlib.sha256(text).hexdigest(), len(loaded))


def suite_config(
    release: EngineSpec, options: SuiteOptions, prompts: PromptSet | None, settings: Settings
) -> SuiteConfig:
    """The full config of one run: options, release, prompt set (None: the bundled one) and
    the KV cache setting."""
    chosen = prompts or read_prompts(None)
    return SuiteConfig(
        **options.model_dump(),
        engine=release,
        prompts=chosen.label,
        prompts_sha256=chosen.sha256,
        n_prompts=chosen.count,
        kv_cache_gib=settings.kv_cache_gib,
    )


def request_config(request: RunRequest, settings: Settings) -> SuiteConfig:
    return suite_config(request.release, request.options, request.prompts, settings)


def queue_request(session: Session, request: RunRequest, settings: Settings) -> int:
    """Queue the request as one run (within the caller's transaction); returns its id."""
    return insert_run(
        session, request_config(request, settings), request.runner, request.requested_by
    )


def rerun_config(config: SuiteConfig, probes: Sequence[str]) -> SuiteConfig:
    """A stored run's config narrowed to some of its probes (a confirmation re-run)."""
    return config.model_copy(update={"probes": list(probes)})
