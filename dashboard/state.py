"""A page's state in the URL's query parameters, so a chart can be shared as a link. Each
widget is seeded from its parameter (when the URL is new or changed) and the page writes its
whole state back at the end of the run. Values the URL names that are not valid choices are
ignored in favour of the default, with one line on the page saying so."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

import streamlit as st

from dashboard.escape import md

T = TypeVar("T")
MAX_ID = 2**53 - 1
"""The largest id a URL may name: the largest whole number a browser's number widget holds."""
DIGITS = re.compile("[0-9]{1,30}")
SHOWN_CHARS = 40
SHOWN_VALUES = 3


def whole(raw: str, low: int = 1, high: int = MAX_ID) -> int | None:
    """`raw` as a whole number in [low, high], or None (ASCII digits only: no sign, no
    superscripts or other scripts' digits, which int() would take or choke on)."""
    if DIGITS.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if low <= value <= high else None


def cut(raw: str) -> str:
    """A URL value cut to SHOWN_CHARS for a one-line message."""
    return raw[:SHOWN_CHARS] + ("…" if len(raw) > SHOWN_CHARS else "")


def quoted(raw: str) -> str:
    """A URL value for a message: cut, quoted, unprintable characters spelled out."""
    return repr(cut(raw))


def ignored(param: str, values: Sequence[str], why: str) -> None:
    """Say on the page, in one line, that these values of the URL's `param` were not used and
    why (the first SHOWN_VALUES of them, then how many more)."""
    named = ", ".join(md(quoted(raw)) for raw in values[:SHOWN_VALUES])
    more = f" and {len(values) - SHOWN_VALUES} more" if len(values) > SHOWN_VALUES else ""
    st.warning(f"Ignored {md(param)}={named}{more} in the URL: {why}.")


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
            if raw is not None and chosen is None:
                ignored(param, [raw], "not one of the choices here")
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
            unknown = [text for text in dict.fromkeys(raw) if text not in by_text]
            if unknown:
                ignored(param, unknown, "not one of the choices here")
            chosen = [by_text[text] for text in dict.fromkeys(raw) if text in by_text]
            st.session_state[key] = chosen or list(default)
        else:
            kept = [value for value in st.session_state.get(key, []) if value in options]
            st.session_state[key] = kept
        return key

    def pick_int(self, param: str, default: int | None, *, low: int = 1) -> str:
        """Widget key of a whole number in [low, MAX_ID] (an id)."""
        key = self._key(param)
        if self._url_changed(param):
            raw = st.query_params.get(param)
            value = whole(raw, low) if raw is not None else None
            if raw is not None and value is None:
                ignored(param, [raw], f"not a whole number from {low} to {MAX_ID}")
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
