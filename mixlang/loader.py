"""Load a `.mix` file and everything it imports.

Takes a path; produces a `LoadResult`: the parsed modules (root first, then imports in the
order they were first reached), the text of every file read (for rendering diagnostics), and
the diagnostics. Import paths are relative to the importing file. A missing file, an import
cycle or a file that is not UTF-8 is a diagnostic pointing at the import line; each file is
parsed once however often it is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mixlang import syntax as s
from mixlang.diagnostics import Diagnostic, Label, error
from mixlang.parser import parse

MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class LoadResult:
    modules: tuple[s.Module, ...]
    texts: dict[str, str] = field(compare=False)
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return not any(d.is_error for d in self.diagnostics)


def read_text(path: str, span: s.Span | None = None) -> tuple[str | None, Diagnostic | None]:
    """A file's text, or a diagnostic saying why it cannot be read (at `span`, the import)."""
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            return None, error("E102", f"`{path}` is too large for a .mix file ({size:,} bytes)", span)
        with open(path, "rb") as f:
            data = f.read()
    except IsADirectoryError:
        return None, error("E101", f"`{path}` is a directory, not a .mix file", span)
    except OSError as e:
        return None, error("E101", f"cannot read `{path}`: {e.strerror or e}", span,
                           help="check the path; import paths are relative to the importing file")
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as e:
        raw = e.object  # the bytes after any BOM: `e.start` counts from there
        line = raw.count(b"\n", 0, e.start) + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        col = len(raw[line_start:e.start].decode("utf-8", errors="replace")) + 1
        where = s.Span(path, line, col, line, col + 1)
        return None, error("E103", f"`{path}` is not UTF-8 text (byte 0x{raw[e.start]:02x})", where,
                           help="save the file as UTF-8")


def load(path: str) -> LoadResult:
    loader = _Loader()
    loader.visit(path, s.Span(path, 1, 1, 1, 1), ())
    return LoadResult(tuple(loader.modules), loader.texts, tuple(loader.diagnostics))


class _Loader:
    def __init__(self) -> None:
        self.modules: list[s.Module] = []
        self.texts: dict[str, str] = {}
        self.diagnostics: list[Diagnostic] = []
        self.seen: set[str] = set()

    def visit(self, path: str, at: s.Span | None, stack: tuple[tuple[str, s.Span | None], ...]) -> None:
        key = os.path.realpath(path)
        on_stack = [p for p, _ in stack]
        if key in on_stack:
            self._cycle(path, at, stack, on_stack.index(key))
            return
        if key in self.seen:
            return
        self.seen.add(key)
        text, problem = read_text(path, at)
        if problem:
            self.diagnostics.append(problem)
            return
        self.texts[path] = text
        result = parse(path, text)
        self.diagnostics.extend(result.diagnostics)
        if result.module is None:
            return
        self.modules.append(result.module)
        for stmt in result.module.statements:
            if isinstance(stmt, s.Import):
                target = os.path.normpath(os.path.join(os.path.dirname(path), stmt.path.value))
                self.visit(target, stmt.path.span, stack + ((key, at),))

    def _cycle(self, path: str, at: s.Span | None, stack: tuple, start: int) -> None:
        chain = [os.path.basename(p) for p, _ in stack[start:]] + [os.path.basename(path)]
        labels = tuple(Label(span, "imported here") for _, span in stack[start + 1:] if span)
        self.diagnostics.append(error(
            "E104", f"import cycle: {' -> '.join(chain)}", at, labels=labels,
            help="move the shared declarations into a file that both can import"))
