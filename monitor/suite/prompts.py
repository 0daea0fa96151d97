"""Prompt set of the parity suite: the bundled JSONL file and a strict loader for custom ones."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

BUNDLED_RESOURCE = ("monitor.suite", "data/prompts.jsonl")
_ALLOWED_KEYS = frozenset({"id", "text", "group"})


class PromptError(ValueError):
    """A prompts file is missing or malformed; the message names the file and line."""


class Prompt(BaseModel):
    """One suite prompt; prompts in one `group` share a long prefix (for the prefix-cache probe)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    text: str
    group: str | None = None

    @field_validator("id", "text")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        """Reject empty and whitespace-only ids and texts."""
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @field_validator("group")
    @classmethod
    def _non_empty_group(cls, value: str | None) -> str | None:
        """Reject an empty group name (use null or leave it out instead)."""
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty string or null")
        return value


def bundled_prompts_text() -> str:
    """Return the bundled prompts.jsonl contents, read through importlib.resources (wheel-safe)."""
    package, name = BUNDLED_RESOURCE
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def _describe(value: Any) -> str:
    """Name the JSON type of `value` for error messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _parse_line(raw: str, label: str, lineno: int) -> Prompt:
    """Validate one non-blank JSONL line into a Prompt, raising a one-line PromptError."""
    where = f"{label} line {lineno}"
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PromptError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise PromptError(f"{where}: expected a JSON object, got {_describe(obj)}")
    unknown = sorted(set(obj) - _ALLOWED_KEYS)
    if unknown:
        raise PromptError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    if "text" not in obj:
        raise PromptError(f'{where}: missing "text"')
    for key in ("id", "text"):
        if key in obj and not isinstance(obj[key], str):
            raise PromptError(f'{where}: "{key}" must be a string, got {_describe(obj[key])}')
    if "group" in obj and obj["group"] is not None and not isinstance(obj["group"], str):
        raise PromptError(f'{where}: "group" must be a string or null')
    fields = {"id": f"p{lineno}", **obj}
    try:
        return Prompt.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(part) for part in err["loc"]) or "prompt"
        message = str(err["msg"]).removeprefix("Value error, ")
        raise PromptError(f'{where}: "{key}" {message}') from None


def parse_prompts(text: str, label: str = "prompts.jsonl") -> list[Prompt]:
    """Parse JSONL text into prompts; blank lines are skipped, ids default to "p<line>"."""
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        prompt = _parse_line(raw, label, lineno)
        if prompt.id in first_line:
            raise PromptError(
                f"{label} line {lineno}: duplicate id {prompt.id!r} "
                f"(first used on line {first_line[prompt.id]})"
            )
        first_line[prompt.id] = lineno
        prompts.append(prompt)
    if not prompts:
        raise PromptError(f"{label}: no prompts (the file is empty)")
    return prompts


def load_prompts(path: Path | None = None) -> list[Prompt]:
    """Load and validate a prompts JSONL file; None loads the set bundled with the package."""
    if path is None:
        return parse_prompts(bundled_prompts_text(), label="bundled prompts.jsonl")
    path = Path(path)
    if not path.exists():
        raise PromptError(f"prompts file not found: {path}")
    if not path.is_file():
        raise PromptError(f"prompts path is not a file: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PromptError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_prompts(text, label=path.name)


def shared_prefix_groups(prompts: list[Prompt]) -> dict[str, list[Prompt]]:
    """Group prompts by their `group` field, keeping file order; ungrouped prompts are left out."""
    groups: dict[str, list[Prompt]] = {}
    for prompt in prompts:
        if prompt.group is not None:
            groups.setdefault(prompt.group, []).append(prompt)
    return groups
