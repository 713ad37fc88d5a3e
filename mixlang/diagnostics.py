"""Diagnostics: errors and warnings as values, and their rendering.

Every phase (parse, check, plan, compile) reports user mistakes as `Diagnostic` values: a
stable code, a lowercase message naming identifiers in backticks, a span, optional labels on
other spans, and a `help` line with the fix. `render` turns one into text, either in full
(rustc/ruff style: a header, the source line with a gutter and carets under the span) or
concise (one line). The first line always contains `PATH:LINE:COL`.

Code ranges: E0xx syntax, E1xx names and imports, E2xx values and types, E3xx mixes,
E4xx train/eval/sweep, E5xx sources and their files, E6xx mixing plans.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping

from mixlang.syntax import Span

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Label:
    span: Span
    message: str


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    severity: Severity = "error"
    labels: tuple[Label, ...] = ()
    help: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class MixError(Exception):
    """A user mistake that stops a command. Carries diagnostics; the CLI renders them and
    exits 1. Internal bugs are never raised as MixError, so they keep their traceback."""

    def __init__(self, *diagnostics: Diagnostic) -> None:
        super().__init__("; ".join(d.message for d in diagnostics))
        self.diagnostics: tuple[Diagnostic, ...] = diagnostics


def error(
    code: str, message: str, span: Span | None = None, *, help: str | None = None,
    labels: tuple[Label, ...] = (),
) -> Diagnostic:
    return Diagnostic(code, message, span, "error", labels, help)


def warning(code: str, message: str, span: Span | None = None, *, help: str | None = None) -> Diagnostic:
    return Diagnostic(code, message, span, "warning", (), help)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A `help` line suggesting the nearest candidate, or None."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def sort_key(d: Diagnostic) -> tuple:
    s = d.span
    return (s.path, s.line, s.col, d.code) if s else ("", 0, 0, d.code)


def location(span: Span | None) -> str:
    return f"{span.path}:{span.line}:{span.col}" if span else "<no location>"


def render(d: Diagnostic, texts: Mapping[str, str], style: Literal["full", "concise"] = "full") -> str:
    """Render one diagnostic. `texts` maps a path to its source text (for the snippet)."""
    head = f"{location(d.span)}: {d.severity}[{d.code}]: {d.message}"
    if style == "concise":
        return head + (f" ({d.help})" if d.help else "")
    lines = [head]
    spans = [(d.span, "")] if d.span else []
    spans += [(lb.span, lb.message) for lb in d.labels]
    width = max((len(str(s.line)) for s, _ in spans), default=1)
    for span, message in spans:
        lines += _snippet(span, message, texts.get(span.path), width)
    if d.help:
        lines.append(f"{' ' * width} = help: {d.help}")
    return "\n".join(lines)


def _snippet(span: Span, message: str, text: str | None, width: int) -> list[str]:
    source_lines = text.splitlines() if text is not None else []
    if not 1 <= span.line <= len(source_lines):
        return [f"{' ' * width} --> {location(span)}" + (f": {message}" if message else "")]
    line = source_lines[span.line - 1].expandtabs(1)
    start = max(span.col - 1, 0)
    end = span.end_col - 1 if span.end_line == span.line else len(line)
    carets = "^" * max(end - start, 1)
    gutter = " " * width
    out = [f"{gutter} --> {location(span)}", f"{gutter} |", f"{span.line:>{width}} | {line}"]
    out.append(f"{gutter} | {' ' * start}{carets}" + (f" {message}" if message else ""))
    return out


def render_all(
    diagnostics: Iterable[Diagnostic], texts: Mapping[str, str], style: Literal["full", "concise"] = "full"
) -> str:
    ordered = sorted(diagnostics, key=sort_key)
    sep = "\n" if style == "concise" else "\n\n"
    return sep.join(render(d, texts, style) for d in ordered)
