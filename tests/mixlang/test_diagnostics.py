"""Tests for mixlang.diagnostics: rendering, against golden files.

Each `testdata/golden/NAME.mix` is loaded and checked (as `mixc check` does: the checker runs
when loading succeeded) from inside that directory, so every path is relative and the output is
stable; all its diagnostics are rendered in full into `NAME.full.txt` and concisely into
`NAME.concise.txt`. Regenerate the golden files with `MIXLANG_UPDATE_GOLDEN=1 pytest ...`;
never edit them by hand.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mixlang.check import check
from mixlang.diagnostics import Diagnostic, Label, did_you_mean, error, render, render_all, warning
from mixlang.loader import load
from mixlang.syntax import Span

GOLDEN = Path(__file__).parent / "testdata" / "golden"
UPDATE = os.environ.get("MIXLANG_UPDATE_GOLDEN") == "1"
CASES = sorted(p.stem for p in GOLDEN.glob("*.mix"))
_FIRST_LINE = re.compile(r"^[\w./-]+\.mix:\d+:\d+: (error|warning)\[[EW]\d{3}\]: \S")


def diagnose(name: str) -> tuple[list[Diagnostic], dict[str, str]]:
    loaded = load(f"{name}.mix")
    diagnostics = list(loaded.diagnostics)
    if loaded.ok:
        diagnostics += check(loaded.modules).diagnostics
    return diagnostics, loaded.texts


def compare(path: Path, actual: str) -> None:
    if UPDATE:
        path.write_text(actual, encoding="utf-8")
        return
    assert path.exists(), f"{path.name} is missing; run with MIXLANG_UPDATE_GOLDEN=1"
    assert actual == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; if the change is intended, regenerate with MIXLANG_UPDATE_GOLDEN=1")


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("style", ["full", "concise"])
def test_golden(name: str, style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN)
    diagnostics, texts = diagnose(name)
    compare(GOLDEN / f"{name}.{style}.txt", render_all(diagnostics, texts, style) + "\n")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", CASES)
def test_first_line_names_path_line_and_column(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(GOLDEN)
    diagnostics, texts = diagnose(name)
    assert diagnostics
    for d in diagnostics:
        for style in ("full", "concise"):
            first = render(d, texts, style).split("\n")[0]  # type: ignore[arg-type]
            assert _FIRST_LINE.match(first), first
            assert first.startswith(f"{d.span.path}:{d.span.line}:{d.span.col}: ")


def test_no_golden_file_is_left_without_its_case() -> None:
    outputs = {p.name.split(".")[0] for p in GOLDEN.glob("*.txt")}
    assert outputs == set(CASES)


# -- rendering details ----------------------------------------------------------------------


TEXT = "mix m {\n  take voc 75%\n\tseed\t\"x\"\n}\n"


def span(line: int, col: int, end_col: int, end_line: int | None = None) -> Span:
    return Span("m.mix", line, col, end_line or line, end_col)


def test_full_rendering_with_label_and_help() -> None:
    d = error("E302", "source `voc` is taken twice", span(2, 8, 11), help="remove one",
              labels=(Label(span(1, 5, 6), "in this mix"),))
    assert render(d, {"m.mix": TEXT}) == (
        "m.mix:2:8: error[E302]: source `voc` is taken twice\n"
        "  --> m.mix:2:8\n"
        "  |\n"
        "2 |   take voc 75%\n"
        "  |        ^^^\n"
        "  --> m.mix:1:5\n"
        "  |\n"
        "1 | mix m {\n"
        "  |     ^ in this mix\n"
        "  = help: remove one")


def test_concise_rendering() -> None:
    d = warning("W301", "no effect", span(2, 3, 7), help="drop it")
    assert render(d, {}, "concise") == "m.mix:2:3: warning[W301]: no effect (drop it)"
    assert render(error("E1", "x", span(1, 1, 2)), {}, "concise") == "m.mix:1:1: error[E1]: x"


def test_tabs_keep_carets_under_the_span() -> None:
    d = error("E201", "bad", span(3, 7, 10))
    lines = render(d, {"m.mix": TEXT}).split("\n")
    assert lines[3:5] == ['3 |  seed "x"', "  |       ^^^"]


def test_a_span_over_several_lines_underlines_to_the_end_of_its_first_line() -> None:
    lines = render(error("E206", "x", span(1, 1, 2, end_line=4)), {"m.mix": TEXT}).split("\n")
    assert lines[3:5] == ["1 | mix m {", "  | ^^^^^^^"]


def test_an_empty_span_still_gets_a_caret() -> None:
    lines = render(error("E002", "end", span(2, 15, 15)), {"m.mix": TEXT}).split("\n")
    assert lines[4] == "  |" + " " * 15 + "^"


def test_without_the_text_or_a_location() -> None:
    assert render(error("E101", "gone", span(9, 1, 2)), {}) == "m.mix:9:1: error[E101]: gone\n  --> m.mix:9:1"
    assert render(error("E101", "gone"), {}) == "<no location>: error[E101]: gone"


def test_render_all_sorts_by_place() -> None:
    a, b = error("E2", "b", span(2, 1, 2)), error("E1", "a", span(1, 5, 6))
    assert render_all([a, b], {}, "concise") == "m.mix:1:5: error[E1]: a\nm.mix:2:1: error[E2]: b"
    assert render_all([], {}) == ""


def test_did_you_mean() -> None:
    assert did_you_mean("vco", ["voc", "general"]) == "did you mean `voc`?"
    assert did_you_mean("zzz", ["voc"]) is None
    assert did_you_mean("x", []) is None
