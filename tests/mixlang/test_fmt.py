"""`mixlang.fmt`: canonical layout, meaning kept, comments kept, idempotent."""

from __future__ import annotations

import os
import pathlib

import pytest

from mixlang.fmt import format_module, quote
from mixlang.parser import parse

DATA = pathlib.Path(__file__).parent / "testdata"
EXAMPLES = sorted((pathlib.Path(__file__).parents[2] / "examples").glob("*.mix"))
CASES = sorted((DATA / "fmt").glob("*.mix"))
CASES = [c for c in CASES if not c.name.endswith(".expected.mix")]
CORPUS = EXAMPLES + CASES + sorted((DATA / "check").glob("*.mix"))


def _fmt(text: str, path: str = "x.mix") -> str:
    result = parse(path, text)
    assert result.module is not None, result.diagnostics
    return format_module(result.module, text)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_golden_layout(case):
    """The expected files are regenerated with MIXLANG_UPDATE_GOLDEN=1, never by hand."""
    expected = case.with_name(case.name.replace(".mix", ".expected.mix"))
    actual = _fmt(case.read_text(encoding="utf-8"), case.name)
    if os.environ.get("MIXLANG_UPDATE_GOLDEN"):
        expected.write_text(actual, encoding="utf-8")
    assert actual == expected.read_text(encoding="utf-8")


def _chunks(path: pathlib.Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [c for c in text.split("\n---\n")] if "/check/" in str(path) else [text]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_meaning_comments_and_idempotence(path):
    for text in _chunks(path):
        before = parse(path.name, text)
        if before.module is None:
            continue
        once = format_module(before.module, text)
        after = parse(path.name, once)
        assert after.module == before.module, once
        assert [c.text for c in after.module.comments] == [c.text for c in before.module.comments]
        assert format_module(after.module, once) == once


def test_layout_rules():
    out = _fmt('source a{\npath "p"\nformat text()\n}\nmix m {\n  take a  1\n}\n')
    assert out == 'source a {\n  path   "p"\n  format text()\n}\n\nmix m {\n  take a 1\n}\n'


def test_blank_lines_inside_blocks_collapse_to_one_and_edges_drop():
    out = _fmt('mix m {\n\n  seq_len 1\n\n\n\n  seed 2\n\n}\n')
    assert out == "mix m {\n  seq_len 1\n\n  seed 2\n}\n"


def test_strings_are_reescaped_canonically():
    assert quote('a"b\\c\nd\te') == '"a\\"b\\\\c\\nd\\te"'
    assert _fmt('source a {\n  path "x\\ty"\n}\n') == 'source a {\n  path "x\\ty"\n}\n'


def test_empty_file_and_comment_only_file():
    assert _fmt("") == ""
    assert _fmt("# just a note\n\n\n# and another\n") == "# just a note\n\n# and another\n"
