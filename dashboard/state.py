"""A page's state in the URL's query parameters, so a chart can be shared as a link. Each
widget is seeded from its parameter (when the URL is new or changed) and the page writes its
whole state back at the end of the run. Values the URL names that are not valid choices are
ignored in favour of the default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import streamlit as st

T = TypeVar("T")


class PageState:
    """The query parameters of one page: `pick`/`pick_many`/`pick_int` seed a widget's session
    state and return its key; `keep` records the value to publish; `publish` writes the URL."""

    def __init__(self, page: str) -> None:
        self.page = page
        self.values: dict[str, str | list[str]] = {}

    def _key(self, param: str) -> str:
        return f"{self.page}:{param}"

    def _url_changed(self, param: str) -> bool:
        """True on a page's first run and when the URL no longer says what this page wrote
        (a link or the browser's history brought new parameters)."""
        key = self._key(param)
        written = st.session_state.get(f"{key}:url")
        return key not in st.session_state or _url_value(param) != written

    def pick(self, param: str, options: Sequence[T], default: T | None) -> str:
        """Widget key of a single choice among `options` (matched on str(option))."""
        key = self._key(param)
        by_text = {str(option): option for option in options}
        if self._url_changed(param):
            raw = st.query_params.get(param)
            chosen = by_text.get(raw) if raw is not None else None
            st.session_state[key] = chosen if chosen is not None else default
        elif st.session_state.get(key) not in options:
            st.session_state[key] = default
        return key

    def pick_many(self, param: str, options: Sequence[T], default: Sequence[T]) -> str:
        """Widget key of a multiple choice (repeated parameter: ?arm=a&arm=b)."""
        key = self._key(param)
        by_text = {str(option): option for option in options}
        if self._url_changed(param):
            raw = st.query_params.get_all(param)
            chosen = [by_text[text] for text in dict.fromkeys(raw) if text in by_text]
            st.session_state[key] = chosen or list(default)
        else:
            kept = [value for value in st.session_state.get(key, []) if value in options]
            st.session_state[key] = kept
        return key

    def pick_int(self, param: str, default: int | None, *, low: int = 1) -> str:
        """Widget key of a whole number ≥ `low` (an id)."""
        key = self._key(param)
        if self._url_changed(param):
            raw = st.query_params.get(param)
            value = _whole(raw, low) if raw is not None else None
            st.session_state[key] = value if value is not None else default
        return key

    def keep(self, param: str, value: object) -> None:
        """Record what the page shows for `param` (None or an empty list: left out)."""
        if value is None or value == []:
            self.values.pop(param, None)
            return
        text: str | list[str]
        text = [str(v) for v in value] if isinstance(value, list | tuple) else str(value)
        self.values[param] = text

    def publish(self) -> None:
        """Make the URL say exactly what the page shows."""
        st.query_params.from_dict(self.values)
        prefix = f"{self.page}:"
        written = {
            f"{self._key(param)}:url": _as_url(value) for param, value in self.values.items()
        }
        for name in [n for n in st.session_state if isinstance(n, str) and n.startswith(prefix)]:
            if name.endswith(":url"):
                st.session_state[name] = written.pop(name, None)
        for name, value in written.items():
            st.session_state[name] = value


def _whole(raw: str, low: int) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= low else None


def _url_value(param: str) -> str | list[str] | None:
    values = st.query_params.get_all(param)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _as_url(value: str | list[str]) -> str | list[str] | None:
    if isinstance(value, list):
        if not value:
            return None
        return value[0] if len(value) == 1 else value
    return value
