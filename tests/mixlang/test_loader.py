"""Tests for mixlang.loader: imports relative to the importing file, each file parsed once, and
missing files, cycles, non-UTF-8 text and directories reported at the import that named them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mixlang import syntax as s
from mixlang.loader import LoadResult, load


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def block_names(result: LoadResult) -> list[str]:
    return [st.name.name for m in result.modules for st in m.statements if isinstance(st, s.Block)]


def codes(result: LoadResult) -> list[tuple[str, int, int, str]]:
    return [(d.code, d.span.line, d.span.col, os.path.basename(d.span.path)) for d in result.diagnostics]


def test_a_single_file(tmp_path: Path) -> None:
    write(tmp_path, {"main.mix": "source a {\n}\n"})
    result = load(str(tmp_path / "main.mix"))
    assert result.ok and result.diagnostics == ()
    assert [m.path for m in result.modules] == [str(tmp_path / "main.mix")]
    assert result.texts == {str(tmp_path / "main.mix"): "source a {\n}\n"}


def test_imports_are_relative_to_the_importing_file(tmp_path: Path) -> None:
    write(tmp_path, {
        "main.mix": 'import "lib/a.mix"\nsource m {\n}\n',
        "lib/a.mix": 'import "b.mix"\nimport "../top.mix"\nsource a {\n}\n',
        "lib/b.mix": 'import "deeper/c.mix"\nsource b {\n}\n',
        "lib/deeper/c.mix": "source c {\n}\n",
        "top.mix": "source top {\n}\n",
        "b.mix": "source wrong_b {\n}\n",
    })
    result = load(str(tmp_path / "main.mix"))
    assert result.ok
    assert block_names(result) == ["m", "a", "b", "c", "top"]
    assert [os.path.relpath(m.path, tmp_path) for m in result.modules] == [
        "main.mix", os.path.join("lib", "a.mix"), os.path.join("lib", "b.mix"),
        os.path.join("lib", "deeper", "c.mix"), "top.mix"]
    assert set(result.texts) == {m.path for m in result.modules}


def test_root_given_by_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"sub/main.mix": 'import "lib.mix"\n', "sub/lib.mix": "source l {\n}\n"})
    monkeypatch.chdir(tmp_path)
    result = load(os.path.join("sub", "main.mix"))
    assert result.ok
    assert [m.path for m in result.modules] == [os.path.join("sub", "main.mix"), os.path.join("sub", "lib.mix")]


def test_spans_name_the_file_they_come_from(tmp_path: Path) -> None:
    write(tmp_path, {"main.mix": 'import "sub/lib.mix"\n', "sub/lib.mix": "\nsource l {\n}\n"})
    result = load(str(tmp_path / "main.mix"))
    lib = result.modules[1]
    assert lib.statements[0].span.path == str(tmp_path / "sub" / "lib.mix")
    assert lib.statements[0].span.line == 2


def test_a_diamond_is_parsed_once(tmp_path: Path) -> None:
    write(tmp_path, {
        "main.mix": 'import "left.mix"\nimport "right.mix"\n',
        "left.mix": 'import "shared/base.mix"\nsource l {\n}\n',
        "right.mix": 'import "./shared/../shared/base.mix"\nsource r {\n}\n',
        "shared/base.mix": "source base {\n}\n",
    })
    result = load(str(tmp_path / "main.mix"))
    assert result.ok
    assert block_names(result) == ["l", "base", "r"]
    assert len(result.modules) == 4


def test_importing_the_same_file_twice_is_harmless(tmp_path: Path) -> None:
    write(tmp_path, {"main.mix": 'import "a.mix"\nimport "a.mix"\n', "a.mix": "source a {\n}\n"})
    result = load(str(tmp_path / "main.mix"))
    assert result.ok and block_names(result) == ["a"]


def test_a_cycle_points_at_the_import_that_closes_it(tmp_path: Path) -> None:
    write(tmp_path, {
        "main.mix": 'import "a.mix"\n',
        "a.mix": '# a\nimport "b.mix"\n',
        "b.mix": 'source b {\n}\n\nimport "a.mix"\n',
    })
    result = load(str(tmp_path / "main.mix"))
    assert not result.ok
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.col, os.path.basename(d.span.path)) == ("E104", 4, 8, "b.mix")
    assert d.message == "import cycle: a.mix -> b.mix -> a.mix"
    assert [(os.path.basename(lb.span.path), lb.span.line) for lb in d.labels] == [("a.mix", 2)]
    assert block_names(result) == ["b"]  # everything that could be read is still there


def test_a_file_importing_itself(tmp_path: Path) -> None:
    write(tmp_path, {"main.mix": 'source a {\n}\nimport "main.mix"\n'})
    result = load(str(tmp_path / "main.mix"))
    assert codes(result) == [("E104", 3, 8, "main.mix")]
    assert "main.mix -> main.mix" in result.diagnostics[0].message


def test_a_missing_import_points_at_the_import_line(tmp_path: Path) -> None:
    write(tmp_path, {"main.mix": 'source a {\n}\n  import "nope.mix"\nimport "lib.mix"\n',
                     "lib.mix": 'import "sub/missing.mix"\n'})
    result = load(str(tmp_path / "main.mix"))
    assert codes(result) == [("E101", 3, 10, "main.mix"), ("E101", 1, 8, "lib.mix")]
    assert "nope.mix" in result.diagnostics[0].message
    assert "relative to the importing file" in result.diagnostics[0].help
    assert block_names(result) == ["a"]


def test_a_missing_root_file(tmp_path: Path) -> None:
    result = load(str(tmp_path / "absent.mix"))
    (d,) = result.diagnostics
    assert d.code == "E101" and "absent.mix" in d.message
    assert result.modules == ()


def test_a_directory_given_as_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.mix").mkdir()
    write(tmp_path, {"main.mix": 'import "dir.mix"\n'})
    result = load(str(tmp_path / "main.mix"))
    assert codes(result) == [("E101", 1, 8, "main.mix")]
    assert "is a directory" in result.diagnostics[0].message
    root = load(str(tmp_path / "dir.mix"))
    assert [d.code for d in root.diagnostics] == ["E101"] and "is a directory" in root.diagnostics[0].message


@pytest.mark.parametrize("content, line, col", [
    (b"source a {\n  path \"\xff\"\n}\n", 2, 9),
    (b"\xfe", 1, 1),
    (b"# caf\xc3\xa9 \xe9\n", 1, 8),               # a column counts characters, not bytes
    (b"\xef\xbb\xbf\n\n  \xc0", 3, 3),            # a BOM is not counted either
])
def test_non_utf8_text_is_located(tmp_path: Path, content: bytes, line: int, col: int) -> None:
    write(tmp_path, {"main.mix": 'import "bad.mix"\n', "bad.mix": content})
    result = load(str(tmp_path / "main.mix"))
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.col, os.path.basename(d.span.path)) == ("E103", line, col, "bad.mix")
    assert "not UTF-8" in d.message


def test_a_bom_is_accepted(tmp_path: Path) -> None:
    write(tmp_path, {"main.mix": b"\xef\xbb\xbfsource a {\n}\n"})
    result = load(str(tmp_path / "main.mix"))
    assert result.ok and block_names(result) == ["a"]


def test_syntax_errors_in_an_import_are_reported_and_loading_goes_on(tmp_path: Path) -> None:
    write(tmp_path, {
        "main.mix": 'import "bad.mix"\nimport "good.mix"\n',
        "bad.mix": "source a {\n  path = 1\n}\n",
        "good.mix": "source g {\n}\n",
    })
    result = load(str(tmp_path / "main.mix"))
    assert codes(result) == [("E003", 2, 8, "bad.mix")]
    assert block_names(result) == ["g"]
    assert str(tmp_path / "bad.mix") in result.texts  # kept for rendering the error


def test_imports_of_a_file_with_syntax_errors_are_not_followed(tmp_path: Path) -> None:
    write(tmp_path, {"main.mix": 'import "missing.mix"\nsource a {\n  x = 1\n}\n'})
    result = load(str(tmp_path / "main.mix"))
    assert codes(result) == [("E003", 3, 5, "main.mix")]
