"""Parse `.mix` text into a `syntax.Module`, or into syntax diagnostics.

Takes a path and its text; produces a `ParseResult`: the module (None when the text has syntax
errors) and the diagnostics. The grammar is `grammar.lark` (LALR, built once per process). On a
syntax error the offending line is blanked and the text parsed again, so one run reports every
independent syntax error rather than only the first; a line that opens or closes a block is
never blanked, since that would only produce a cascade of follow-on errors.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from importlib import resources

import lark
from lark import Token, Transformer, v_args

from mixlang import syntax as s
from mixlang.diagnostics import Diagnostic, error

MAX_SYNTAX_ERRORS = 20
_SUFFIX = {"K": 10**3, "M": 10**6, "B": 10**9, "%": Fraction(1, 100)}
_UNITS = ("tokens", "samples")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
_MAX_DIGITS = 40
_MAX_MAGNITUDE = 30  # |exponent| of the most significant digit, before the suffix


@dataclass(frozen=True)
class ParseResult:
    module: s.Module | None
    diagnostics: tuple[Diagnostic, ...]


class _ValueError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


@functools.lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    """The parser, built from the grammar (about 0.15 s), or loaded in a few milliseconds from
    the copy lark's own `cache` option keeps under `$MIXLANG_CACHE/grammar/` (checked against a
    hash of the grammar, the options and the lark and Python versions; a copy that does not
    load is rebuilt and replaced)."""
    grammar = resources.files("mixlang").joinpath("grammar.lark").read_text(encoding="utf-8")
    root = os.environ.get("MIXLANG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mixlang")
    cache: str | bool = os.path.join(root, "grammar", "parser.lark-cache")
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
    except OSError:
        cache = False  # an unwritable cache root: build the parser every time
    return lark.Lark(grammar, parser="lalr", lexer="contextual", propagate_positions=True,
                     maybe_placeholders=False, cache=cache)


def parse(path: str, text: str) -> ParseResult:
    """Parse one file. Never raises, whatever the text."""
    diagnostics: list[Diagnostic] = []
    lines = text.split("\n")
    while len(diagnostics) < MAX_SYNTAX_ERRORS:
        try:
            tree = _lark().parse("\n".join(lines))
        except lark.UnexpectedInput as e:
            diagnostics.append(_syntax_diagnostic(path, e))
            line = getattr(e, "line", -1)
            if _at_end(e) or not _blankable(lines, line):  # blanking cannot fix an early end
                break
            lines[line - 1] = " " * len(lines[line - 1])
            continue
        if diagnostics:
            break
        try:
            statements = _Builder(path).transform(tree)
        except lark.exceptions.VisitError as e:
            if isinstance(e.orig_exc, _ValueError):
                return ParseResult(None, (e.orig_exc.diagnostic,))
            raise
        return ParseResult(s.Module(path, tuple(statements), _comments(text)), ())
    return ParseResult(None, tuple(diagnostics))


def _at_end(e: lark.UnexpectedInput) -> bool:
    token = getattr(e, "token", None)
    return isinstance(e, lark.UnexpectedEOF) or (token is not None and token.type == "$END")


def _blankable(lines: list[str], line: int) -> bool:
    if not 1 <= line <= len(lines):
        return False
    text = lines[line - 1]
    return "{" not in text and "}" not in text and text.strip() != ""


# ---- syntax errors ------------------------------------------------------------------------

_TERMINALS = {
    "NAME": "a name", "STRING": "a string", "NUMBER": "a number", "_NL": "a new line",
    "LBRACE": "`{`", "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`", "LSQB": "`[`",
    "RSQB": "`]`", "COMMA": "`,`", "EQUAL": "`=`", "DOT": "`.`", "COMPARATOR": "a comparison",
    "BASE_OP": "`+`, `-` or `*`", "UNIT": "`tokens` or `samples`", "REST": "`rest`",
    "TRUE": "`true`", "FALSE": "`false`", "$END": "the end of the file",
}


def _describe(terminal: str) -> str:
    if terminal in _TERMINALS:
        return _TERMINALS[terminal]
    pattern = _lark().get_terminal(terminal).pattern.value if _has_terminal(terminal) else terminal
    return f"`{pattern}`"


def _has_terminal(name: str) -> bool:
    try:
        _lark().get_terminal(name)
    except KeyError:
        return False
    return True


def _expected(names: set[str]) -> str:
    described = sorted({_describe(n) for n in names})
    if len(described) > 6:
        described = described[:6] + ["..."]
    return ", ".join(described)


def _syntax_diagnostic(path: str, e: lark.UnexpectedInput) -> Diagnostic:
    line, col = max(getattr(e, "line", 1), 1), max(getattr(e, "column", 1), 1)
    if isinstance(e, lark.UnexpectedCharacters):
        span = s.Span(path, line, col, line, col + 1)
        if e.char.isdigit() or e.char == "-":
            return error("E007", "malformed number", span,
                         help="numbers look like `17`, `1_000`, `0.5`, `1e-5`, `40M` or `75%`")
        return error("E001", f"unexpected character `{e.char}`", span,
                     help=f"expected {_expected(set(e.allowed))}" if e.allowed else None)
    token = getattr(e, "token", None)
    expected = _expected(set(getattr(e, "expected", ()) or ()))
    if token is None or token.type == "$END":
        span = s.Span(path, line, col, line, col + 1)
        return error("E002", "unexpected end of file", span, help=f"expected {expected}")
    text = "end of line" if token.type == "_NL" else f"`{token}`"
    end_col = col + max(len(str(token)), 1) if token.type != "_NL" else col + 1
    span = s.Span(path, line, col, line, end_col)
    return error("E003", f"unexpected {text}", span, help=f"expected {expected}")


# ---- comments -----------------------------------------------------------------------------


def _comments(text: str) -> tuple[s.Comment, ...]:
    """Every `#` comment outside a string, with whether it stands on a line of its own."""
    found = []
    for number, line in enumerate(text.split("\n"), start=1):
        col = _comment_start(line)
        if col is not None:
            own = line[:col].strip() == ""
            found.append(s.Comment(line[col:].rstrip("\r"), number, col + 1, own))
    return tuple(found)


def _comment_start(line: str) -> int | None:
    in_string, escaped = False, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = ch == "\\", ch != '"'
        elif ch == '"':
            in_string = True
        elif ch == "#":
            return i
    return None


# ---- tree -> syntax -----------------------------------------------------------------------


def _token_span(path: str, t: Token) -> s.Span:
    return s.Span(path, t.line, t.column, t.end_line, t.end_column, t.start_pos, t.end_pos)


def _meta_span(path: str, meta: object) -> s.Span | None:
    if getattr(meta, "empty", True):
        return None
    return s.Span(path, meta.line, meta.column, meta.end_line, meta.end_column,  # type: ignore[attr-defined]
                  meta.start_pos, meta.end_pos)  # type: ignore[attr-defined]


def unescape(raw: str) -> str:
    """The value of a string literal (quotes included in `raw`)."""
    out, chars = [], iter(raw[1:-1])
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt not in _ESCAPES:
                raise ValueError(f"unknown escape `\\{nxt}` in a string")
            out.append(_ESCAPES[nxt])
        else:
            out.append(ch)
    return "".join(out)


def number_value(text: str) -> Fraction:
    """The exact value of a number literal; raises ValueError when it is out of range."""
    body, mult = (text[:-1], _SUFFIX[text[-1]]) if text[-1] in _SUFFIX else (text, 1)
    body = body.replace("_", "")
    try:
        d = Decimal(body)
    except InvalidOperation as e:  # pragma: no cover - the grammar admits only valid numbers
        raise ValueError(f"`{text}` is not a number") from e
    digits = len(d.as_tuple().digits)
    if digits > _MAX_DIGITS or (d != 0 and abs(d.adjusted()) > _MAX_MAGNITUDE):
        raise ValueError(f"number `{text}` is out of range")
    return Fraction(d) * mult


@v_args(meta=True)
class _Builder(Transformer):
    """One method per grammar rule; each returns a syntax node with its span."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def _span(self, meta: object) -> s.Span | None:
        return _meta_span(self.path, meta)

    def _word(self, t: Token) -> s.Word:
        return s.Word(str(t), _token_span(self.path, t))

    def start(self, meta, children):  # noqa: ANN001, ANN201
        return children

    def import_stmt(self, meta, children) -> s.Import:  # noqa: ANN001
        return s.Import(self._str(children[0]), self._span(meta))

    def block(self, meta, children) -> s.Block:  # noqa: ANN001
        kind, name, *items = children
        return s.Block(self._word(kind), self._word(name), tuple(items), self._span(meta))

    def attribute(self, meta, children) -> s.Attribute:  # noqa: ANN001
        key, *values = children
        return s.Attribute(str(key), _fold_sizes(values), self._span(meta))

    def take(self, meta, children) -> s.Take:  # noqa: ANN001
        source, *rest = children
        share = next((c for c in rest if not isinstance(c, tuple)), None)
        epochs = next((c[1] for c in rest if isinstance(c, tuple)), None)
        return s.Take(self._word(source), share, epochs, self._span(meta))

    def share(self, meta, children):  # noqa: ANN001, ANN201
        (child,) = children
        return s.Rest(_token_span(self.path, child)) if isinstance(child, Token) else child

    def max_epochs(self, meta, children) -> tuple[str, s.Num]:  # noqa: ANN001
        return ("max_epochs", children[0])

    def metric(self, meta, children) -> s.Metric:  # noqa: ANN001
        name, call = children
        return s.Metric(self._word(name), call, self._span(meta))

    def gate(self, meta, children) -> s.Gate:  # noqa: ANN001
        metric, comparator, rhs = children
        return s.Gate(self._word(metric), str(comparator), rhs, self._span(meta))

    def base(self, meta, children) -> s.Base:  # noqa: ANN001
        return s.Base(self._span(meta))

    def base_expr(self, meta, children) -> s.BaseExpr:  # noqa: ANN001
        if len(children) == 2:
            return s.BaseExpr(str(children[0]), children[1], self._span(meta))
        (num,) = children
        if not num.text.startswith("-"):
            raise _ValueError(error("E004", "expected `+`, `-` or `*` after `base`", num.span,
                                    help=f"write `base + {num.text}` or `base * {num.text}`"))
        positive = s.Num(num.text[1:], -num.value, num.span)
        return s.BaseExpr("-", positive, self._span(meta))

    def vary(self, meta, children) -> s.Vary:  # noqa: ANN001
        mix, take, values = children
        return s.Vary(self._word(mix), self._word(take), values, self._span(meta))

    def resources(self, meta, children) -> s.Resources:  # noqa: ANN001
        return s.Resources(tuple(children), self._span(meta))

    def resource_entry(self, meta, children) -> s.Attribute:  # noqa: ANN001
        key, value = children
        return s.Attribute(str(key), (value,), self._span(meta))

    def _str(self, t: Token) -> s.Str:
        span = _token_span(self.path, t)
        try:
            return s.Str(unescape(str(t)), span)
        except ValueError as e:
            raise _ValueError(error("E006", str(e), span,
                                    help='strings know `\\"`, `\\\\`, `\\n` and `\\t`')) from e

    def string(self, meta, children) -> s.Str:  # noqa: ANN001
        return self._str(children[0])

    def number(self, meta, children) -> s.Num:  # noqa: ANN001
        (t,) = children
        span = _token_span(self.path, t)
        try:
            return s.Num(str(t), number_value(str(t)), span)
        except ValueError as e:
            raise _ValueError(error("E005", str(e), span,
                                    help="numbers may have at most 40 digits and exponents within ±30")) from e

    def word(self, meta, children) -> s.Word:  # noqa: ANN001
        return self._word(children[0])

    def true(self, meta, children) -> s.Bool:  # noqa: ANN001
        return s.Bool(True, _token_span(self.path, children[0]))

    def false(self, meta, children) -> s.Bool:  # noqa: ANN001
        return s.Bool(False, _token_span(self.path, children[0]))

    def list(self, meta, children) -> s.ListVal:  # noqa: ANN001
        return s.ListVal(tuple(children), self._span(meta))

    def call(self, meta, children) -> s.Call:  # noqa: ANN001
        name, *args = children
        return s.Call(str(name), tuple(args), self._span(meta))

    def kwarg(self, meta, children) -> s.KwArg:  # noqa: ANN001
        name, value = children
        return s.KwArg(str(name), value, self._span(meta))


def _fold_sizes(values: list) -> tuple:
    """`40M tokens` arrives as a number and a unit word; make it one `Size`."""
    out: list = []
    for v in values:
        if isinstance(v, s.Word) and v.name in _UNITS and out and isinstance(out[-1], s.Num):
            num = out.pop()
            span = s.Span(num.span.path, num.span.line, num.span.col, v.span.end_line,
                          v.span.end_col, num.span.start, v.span.end)
            out.append(s.Size(num, v.name, span))
        else:
            out.append(v)
    return tuple(out)
