"""The most divergent tokens of an arm, decoded with the run's own tokenizer when its model
directory is on this machine (found by the weights' fingerprint, so a rebuilt or different model
is never used to decode), else shown as token ids with the reason."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from monitor.config import Settings
from monitor.detection.traces import checked, most_divergent
from monitor.metrics import TokenArrays
from monitor.schema import ModelRef
from monitor.suite.models import ModelError, fingerprint

Decode = Callable[[Sequence[int]], str]
CONTEXT_TOKENS = 12
FOLLOWING_TOKENS = 4
BUILT_MODELS = ("tiny", "smollm2")
NUMBER_COLUMNS = ("δ", "vLLM logprob", "reference logprob")


@dataclass(frozen=True)
class Located:
    """Where the run's model lies here, or why it could not be used (path None)."""

    path: Path | None
    reason: str


def candidate_dirs(spec: str, models_dir: Path) -> list[Path]:
    """Directories that may hold the model a run was asked for: the built models of that name
    in the model cache, or the path the run named."""
    if spec in BUILT_MODELS:
        return sorted(models_dir.glob(f"{spec}-*")) if models_dir.is_dir() else []
    return [Path(spec).expanduser()]


def locate_model(
    spec: str,
    model: ModelRef | None,
    models_dir: Path,
    fingerprint_of: Callable[[Path], str] = fingerprint,
) -> Located:
    """The directory whose weights have the run's fingerprint and which holds tokenizer.json."""
    if model is None:
        return Located(None, "the run recorded no model")
    looked = candidate_dirs(spec, models_dir)
    for directory in looked:
        if not (directory / "tokenizer.json").is_file():
            continue
        try:
            if fingerprint_of(directory) == model.fingerprint:
                return Located(directory, f"decoded with {directory.name}/tokenizer.json")
        except (ModelError, OSError):
            continue
    where = f"under {models_dir}" if spec in BUILT_MODELS else f"at {spec}"
    return Located(
        None,
        f"model {model.name} (fingerprint {model.fingerprint}) with a tokenizer.json is not "
        f"{where} on this machine",
    )


def load_decoder(directory: Path) -> tuple[Decode | None, str]:
    """A decode function from the directory's tokenizer.json, or None and why not."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None, "the tokenizers package is not installed in the monitor's environment"
    try:
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as exc:
        return None, f"cannot read {directory.name}/tokenizer.json: {str(exc).splitlines()[0]}"

    def decode(ids: Sequence[int]) -> str:
        return str(tokenizer.decode([int(i) for i in ids], skip_special_tokens=False))

    return decode, f"decoded with {directory.name}/tokenizer.json"


@st.cache_resource(show_spinner=False, max_entries=16)
def _fingerprint(path: str, modified: float) -> str:
    """Weights fingerprint of a model directory, once per directory and modification time."""
    return fingerprint(Path(path))


def _cached_fingerprint(directory: Path) -> str:
    return _fingerprint(str(directory), (directory / "config.json").stat().st_mtime)


@st.cache_resource(show_spinner=False, max_entries=8)
def _decoder(path: str) -> tuple[Decode | None, str]:
    return load_decoder(Path(path))


def run_decoder(spec: str, model: ModelRef | None, settings: Settings) -> tuple[Decode | None, str]:
    """The decoder of a run's own model (`spec` as the run named it), or None and why not."""
    located = locate_model(spec, model, settings.models_dir, _cached_fingerprint)
    if located.path is None:
        return None, located.reason
    return _decoder(str(located.path))


def divergent_token_rows(
    trace: TokenArrays, k: int, decode: Decode | None = None
) -> list[dict[str, Any]]:
    """The k tokens with the largest |δ| (largest first): where they are, both logprobs, and
    (with a decoder) the token and the completion text around it. A trace that is not valid
    (lengths differ, logprobs not finite) raises DetectionError."""
    if trace.n_tokens == 0:
        return []
    valid = checked(trace, "arm trace")
    delta = valid.delta
    rows = []
    for index in most_divergent(valid, min(k, trace.n_tokens)):
        prompt, position = int(trace.prompt_index[index]), int(trace.position[index])
        row: dict[str, Any] = {
            "prompt": prompt,
            "position": position,
            "token id": int(trace.token_id[index]),
            "δ": float(delta[index]),
            "vLLM logprob": float(trace.vllm_logprob[index]),
            "reference logprob": float(trace.reference_logprob[index]),
        }
        if decode is not None:
            before, after = _neighbours(trace, prompt, position)
            token = decode([int(trace.token_id[index])])
            row["token"] = visible(token)
            row["context"] = visible(f"{decode(before)}[{token}]{decode(after)}", spaces=False)
        rows.append(row)
    return rows


def visible(text: str, *, spaces: bool = True) -> str:
    """Whitespace a table would hide, shown: newlines as ⏎, tabs as ⇥ (and spaces as ␣)."""
    text = text.replace("\n", "⏎").replace("\t", "⇥")
    return text.replace(" ", "␣") if spaces else text


def _neighbours(trace: TokenArrays, prompt: int, position: int) -> tuple[list[int], list[int]]:
    """Token ids of the same completion just before and just after a position."""
    same = trace.prompt_index == prompt
    positions, ids = trace.position[same], trace.token_id[same]
    order = np.argsort(positions, kind="stable")
    positions, ids = positions[order], ids[order]
    here = int(np.searchsorted(positions, position))
    before = ids[max(0, here - CONTEXT_TOKENS) : here]
    after = ids[here + 1 : here + 1 + FOLLOWING_TOKENS]
    return [int(i) for i in before], [int(i) for i in after]
