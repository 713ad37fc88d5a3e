"""The canonical layout of a `.mix` file.

Takes a parsed `Module` and the text it came from; produces the file in canonical layout:
two-space indents, one statement per line, one blank line between top-level blocks, blank
lines inside a block kept (at most one), columns aligned within a run of like statements,
strings re-escaped, numbers exactly as written, and every comment kept where it was (on its
own line before the same statement, or at the end of the same line). The output parses to
the same syntax tree (spans aside), and formatting it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mixlang import syntax as s

INDENT = "  "


@dataclass(frozen=True)
class _Line:
    depth: int
    text: str
    start: int  # source line where the node starts (own-line comments go before it)
    end: int  # source line where it ends (blank lines are measured from here)
    trail: int  # source line whose trailing comment belongs on this line
    sep: str  # "force": blank line before; "keep": blank if the source had one; "none"
    closing: bool = False


def format_module(module: s.Module, text: str) -> str:
    source_lines = text.split("\n")
    lines = [line for i, stmt in enumerate(module.statements)
             for line in _statement(stmt, module.statements[i - 1] if i else None)]
    lines = _trailing_comments(lines, [c for c in module.comments if not c.own_line])
    lines = _own_line_comments(lines, module.comments, source_lines)
    return _render(lines, source_lines)


# ---- statements ---------------------------------------------------------------------------


def _statement(stmt: s.Statement, previous: s.Statement | None) -> list[_Line]:
    if isinstance(stmt, s.Import):
        line = stmt.span.line
        sep = "none" if previous is None else ("keep" if isinstance(previous, s.Import) else "force")
        return [_Line(0, f"import {quote(stmt.path.value)}", line, line, line, sep)]
    sep = "none" if previous is None else "force"
    return _block(f"{stmt.kind.name} {stmt.name.name}", stmt.items, stmt.span, 0, sep)


def _block(head: str, items: tuple, span: s.Span, depth: int, sep: str) -> list[_Line]:
    first, last = span.line, span.end_line
    if not items and first == last:
        return [_Line(depth, head + " {}", first, last, last, sep)]
    out = [_Line(depth, head + " {", first, first, first, sep)]
    for run in _runs(items):
        out += _run(run, depth + 1, first_in_block=not out[1:])
    out.append(_Line(depth, "}", last, last, last, "none", closing=True))
    return out


def _runs(items: tuple) -> list[list]:
    """Consecutive items of one kind, not separated by a blank line: their columns align."""
    runs: list[list] = []
    for item in items:
        same = runs and type(runs[-1][-1]) is type(item) and not isinstance(item, s.Resources)
        if same and item.span.line <= runs[-1][-1].span.end_line + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _run(run: list, depth: int, first_in_block: bool) -> list[_Line]:
    if isinstance(run[0], s.Resources):
        return _block("resources", run[0].entries, run[0].span, depth, "none" if first_in_block else "keep")
    texts = _aligned(run)
    out = []
    for i, (item, text) in enumerate(zip(run, texts)):
        sep = "none" if first_in_block and i == 0 else "keep"
        out.append(_Line(depth, text, item.span.line, item.span.end_line, item.span.end_line, sep))
    return out


def _aligned(run: list) -> list[str]:
    """Each item's text with its columns padded to the widest in the run; a column that is
    empty in every item is left out."""
    rows = [_columns(item) for item in run]
    keep = [i for i in range(len(rows[0])) if any(row[i] for row in rows)]
    rows = [[row[i] for i in keep] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(keep))]
    return [_join(row, widths) for row in rows]


def _join(row: list[str], widths: list[int]) -> str:
    last = max(i for i, col in enumerate(row) if col)
    return " ".join(col if i == last else col.ljust(widths[i]) for i, col in enumerate(row[: last + 1]))


def _columns(item: s.Item) -> list[str]:
    """The columns of one item; items of one kind always have the same number of columns."""
    if isinstance(item, s.Attribute):
        return [item.key, " ".join(value(v) for v in item.values)]
    if isinstance(item, s.Take):
        share = "" if item.share is None else ("rest" if isinstance(item.share, s.Rest) else item.share.text)
        epochs = "" if item.max_epochs is None else f"max_epochs {item.max_epochs.text}"
        return ["take", item.source.name, share, epochs]
    if isinstance(item, s.Metric):
        return ["metric", item.name.name, f"= {value(item.call)}"]
    if isinstance(item, s.Gate):
        return ["gate", item.metric.name, item.comparator, _gate_rhs(item.rhs)]
    assert isinstance(item, s.Vary), item
    return ["vary", f"{item.mix.name}.{item.take.name}", f"in {value(item.values)}"]


def _gate_rhs(rhs: s.Num | s.Base | s.BaseExpr) -> str:
    if isinstance(rhs, s.Num):
        return rhs.text
    return "base" if isinstance(rhs, s.Base) else f"base {rhs.op} {rhs.operand.text}"


# ---- values -------------------------------------------------------------------------------


def quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def value(v: s.Value) -> str:
    if isinstance(v, s.Str):
        return quote(v.value)
    if isinstance(v, s.Num):
        return v.text
    if isinstance(v, s.Size):
        return f"{v.amount.text} {v.unit}"
    if isinstance(v, s.Word):
        return v.name
    if isinstance(v, s.Bool):
        return "true" if v.value else "false"
    if isinstance(v, s.ListVal):
        return "[" + ", ".join(value(i) for i in v.items) + "]"
    args = ", ".join(f"{a.name} = {value(a.value)}" for a in v.args)
    return f"{v.name}({args})"


# ---- comments and blank lines -------------------------------------------------------------


def _trailing_comments(lines: list[_Line], comments: list[s.Comment]) -> list[_Line]:
    """Put each end-of-line comment back on the last output line that ends on its line."""
    lines = list(lines)
    for c in comments:
        at = max((i for i, ln in enumerate(lines) if ln.trail == c.line), default=None)
        if at is not None:
            lines[at] = replace(lines[at], text=f"{lines[at].text}  {c.text}")
    return lines


def _own_line_comments(lines: list[_Line], comments: tuple[s.Comment, ...], source: list[str]) -> list[_Line]:
    """Put each comment standing on its own line before the statement that followed it."""
    attached = {c.line for c in comments if not c.own_line
                if any(ln.trail == c.line for ln in lines)}
    pending = sorted((c for c in comments if c.line not in attached), key=lambda c: c.line)
    out: list[_Line] = []
    for line in lines:
        before = [c for c in pending if c.line < line.start]
        pending = [c for c in pending if c.line >= line.start]
        out += _comment_lines(before, line, first_sep=line.sep)
        out.append(replace(line, sep="keep") if before else line)
    out += _comment_lines(pending, None, first_sep="keep" if out else "none")
    return out


def _comment_lines(comments: list[s.Comment], anchor: _Line | None, first_sep: str) -> list[_Line]:
    depth = 0 if anchor is None else anchor.depth + (1 if anchor.closing else 0)
    seps = [first_sep] + ["keep"] * (len(comments) - 1)
    return [_Line(depth, c.text, c.line, c.line, -1, sep) for c, sep in zip(comments, seps)]


def _render(lines: list[_Line], source: list[str]) -> str:
    out: list[str] = []
    previous_end = 0
    for line in lines:
        if out and _blank_before(line, previous_end, source):
            out.append("")
        out.append(INDENT * line.depth + line.text)
        previous_end = line.end
    return "\n".join(out) + "\n" if out else ""


def _blank_before(line: _Line, previous_end: int, source: list[str]) -> bool:
    if line.sep == "force":
        return True
    if line.sep == "none":
        return False
    return any(not source[i - 1].strip() for i in range(previous_end + 1, line.start)
               if 1 <= i <= len(source))
