"""Tests for the bundled prompt set and the strict prompts.jsonl loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from monitor.suite.prompts import (
    Prompt,
    PromptError,
    bundled_prompts_text,
    load_prompts,
    parse_prompts,
    shared_prefix_groups,
)

MIN_PREFIX_CHARS = 1500


def _write(tmp_path: Path, lines: list[str], name: str = "prompts.jsonl") -> Path:
    """Write raw lines to a JSONL file and return its path."""
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bundled_set_size_and_ids() -> None:
    prompts = load_prompts()
    assert len(prompts) >= 32
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(p.text.strip() for p in prompts)
    assert sum(1 for p in prompts if p.group is None) >= 40


def test_bundled_set_is_varied() -> None:
    texts = [p.text for p in load_prompts()]
    assert any(any(ord(ch) > 0x3000 for ch in t) for t in texts), "no CJK prompt"
    assert any(any("\u0400" <= ch <= "\u04ff" for ch in t) for t in texts), "no Cyrillic prompt"
    assert any("def " in t for t in texts), "no code prompt"
    assert any(t.lstrip().startswith("{") for t in texts), "no JSON prompt"


def test_bundled_shared_prefix_groups() -> None:
    groups = shared_prefix_groups(load_prompts())
    long_groups = {
        name: members
        for name, members in groups.items()
        if len(members) >= 4
        and len(os.path.commonprefix([p.text for p in members])) >= MIN_PREFIX_CHARS  # noqa: RUF071
    }
    assert len(long_groups) >= 3, {n: len(m) for n, m in groups.items()}
    for members in long_groups.values():
        assert len({p.text for p in members}) == len(members), "group prompts must differ"


def test_bundled_file_is_package_data() -> None:
    text = bundled_prompts_text()
    assert parse_prompts(text) == load_prompts()
    source = Path(__file__).resolve().parents[1] / "monitor" / "suite" / "data" / "prompts.jsonl"
    assert source.read_text(encoding="utf-8") == text


def test_shared_prefix_groups_keeps_order_and_skips_ungrouped() -> None:
    prompts = [
        Prompt(id="a", text="x", group="g2"),
        Prompt(id="b", text="y"),
        Prompt(id="c", text="z", group="g1"),
        Prompt(id="d", text="w", group="g2"),
    ]
    groups = shared_prefix_groups(prompts)
    assert list(groups) == ["g2", "g1"]
    assert [p.id for p in groups["g2"]] == ["a", "d"]


def test_default_ids_blank_lines_and_groups(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            json.dumps({"text": "first"}),
            "",
            "   ",
            json.dumps({"id": "named", "text": "second", "group": "g"}),
            json.dumps({"text": "third", "group": None}),
        ],
    )
    prompts = load_prompts(path)
    assert [p.id for p in prompts] == ["p1", "named", "p5"]
    assert [p.group for p in prompts] == [None, "g", None]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "hi"}).encode() + b"\n")
    assert load_prompts(path)[0].text == "hi"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="not found") as info:
        load_prompts(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match="not a file"):
        load_prompts(tmp_path)


@pytest.mark.parametrize("content", ["", "\n\n   \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "prompts.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptError, match=r"prompts\.jsonl: no prompts"):
        load_prompts(path)


GOOD = json.dumps({"text": "fine"})


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ('{"text": "unterminated', "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ('["a", "list"]', "expected a JSON object, got array"),
        ('"just a string"', "expected a JSON object, got string"),
        ("42", "expected a JSON object, got number"),
        ('{"id": "x"}', 'missing "text"'),
        ('{"text": ""}', '"text" must be a non-empty string'),
        ('{"text": "   "}', '"text" must be a non-empty string'),
        ('{"text": 7}', '"text" must be a string, got number'),
        ('{"text": null}', '"text" must be a string, got null'),
        ('{"text": "ok", "id": 3}', '"id" must be a string, got number'),
        ('{"text": "ok", "id": ""}', '"id" must be a non-empty string'),
        ('{"text": "ok", "group": 1}', '"group" must be a string or null'),
        ('{"text": "ok", "group": ""}', '"group" must be a non-empty string or null'),
        ('{"text": "ok", "grup": "g"}', "unknown field(s) 'grup'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, bad_line: str, problem: str) -> None:
    path = _write(tmp_path, [GOOD, "", bad_line, GOOD])
    with pytest.raises(PromptError) as info:
        load_prompts(path)
    message = str(info.value)
    assert message.startswith("prompts.jsonl line 3: "), message
    assert problem in message
    assert "\n" not in message


def test_duplicate_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            json.dumps({"id": "a", "text": "one"}),
            json.dumps({"id": "b", "text": "two"}),
            json.dumps({"id": "a", "text": "three"}),
        ],
    )
    with pytest.raises(PromptError, match=r"prompts\.jsonl line 3: duplicate id 'a'.*line 1"):
        load_prompts(path)


def test_explicit_id_colliding_with_default(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, json.dumps({"id": "p1", "text": "again"})])
    with pytest.raises(PromptError, match=r"line 2: duplicate id 'p1'"):
        load_prompts(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(PromptError, match="not UTF-8"):
        load_prompts(path)
