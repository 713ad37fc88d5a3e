"""The syntax tree of a `.mix` file: frozen dataclasses that carry source spans.

Produced by `mixlang.parser` from text; read by `mixlang.check` (which turns it into typed
specs) and by `mixlang.fmt` (which prints it back in canonical layout). The tree is faithful
to the text: block bodies are kept as written (an attribute is a key with its values), and the
checker decides what a key means. Spans never take part in `==`, so two trees compare equal
when they say the same thing, however they were laid out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Union


@dataclass(frozen=True)
class Span:
    """A region of one file: 1-based line and column, 0-based character offsets [start, end)."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int
    start: int = 0
    end: int = 0


def _span() -> Span | None:
    return field(default=None, compare=False, repr=False)


# ---- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Str:
    value: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Num:
    """A number as written (`1_000`, `2.5B`, `75%`, `1e-5`) and its exact value."""

    text: str
    value: Fraction
    span: Span | None = _span()

    @property
    def is_percent(self) -> bool:
        return self.text.endswith("%")

    @property
    def is_integer(self) -> bool:
        return self.value.denominator == 1


@dataclass(frozen=True)
class Size:
    """`40M tokens`, `100K samples`."""

    amount: Num
    unit: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Word:
    """A bare name: a reference (`general`), an option (`exact`, `macro`, `bf16`) or a unit."""

    name: str
    span: Span | None = _span()


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span | None = _span()


@dataclass(frozen=True)
class ListVal:
    items: tuple[Value, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class KwArg:
    name: str
    value: Value
    span: Span | None = _span()


@dataclass(frozen=True)
class Call:
    """`chat(messages = "messages")`, `classify(data = ..., label = ...)`."""

    name: str
    args: tuple[KwArg, ...]
    span: Span | None = _span()


Value = Union[Str, Num, Size, Word, Bool, ListVal, Call]


# ---- block items --------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    """`key value...` inside a block, or one `key value` pair of a `resources` block."""

    key: str
    values: tuple[Value, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class Rest:
    span: Span | None = _span()


@dataclass(frozen=True)
class Take:
    """`take SOURCE [SHARE | rest] [max_epochs N]`."""

    source: Word
    share: Num | Rest | None
    max_epochs: Num | None
    span: Span | None = _span()


@dataclass(frozen=True)
class Metric:
    """`metric NAME = KIND(args)`."""

    name: Word
    call: Call
    span: Span | None = _span()


@dataclass(frozen=True)
class Base:
    """The `base` of a gate: the metric's value on the base model."""

    span: Span | None = _span()


@dataclass(frozen=True)
class BaseExpr:
    """`base + x`, `base - x`, `base * x`."""

    op: str
    operand: Num
    span: Span | None = _span()


@dataclass(frozen=True)
class Gate:
    """`gate METRIC CMP (number | base | base OP number)`."""

    metric: Word
    comparator: str
    rhs: Num | Base | BaseExpr
    span: Span | None = _span()


@dataclass(frozen=True)
class Vary:
    """`vary MIX.TAKE in [values]`."""

    mix: Word
    take: Word
    values: ListVal
    span: Span | None = _span()


@dataclass(frozen=True)
class Resources:
    """`resources { key value ... }`: pairs, on one line or several."""

    entries: tuple[Attribute, ...]
    span: Span | None = _span()


Item = Union[Attribute, Take, Metric, Gate, Vary, Resources]


# ---- top level ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    path: Str
    span: Span | None = _span()


@dataclass(frozen=True)
class Block:
    """`KIND NAME { items }` with KIND one of source, mix, train, eval, sweep (the checker
    rejects others)."""

    kind: Word
    name: Word
    items: tuple[Item, ...]
    span: Span | None = _span()


Statement = Union[Import, Block]


@dataclass(frozen=True)
class Comment:
    """`# ...` with its position; kept beside the tree so the formatter can put it back."""

    text: str
    line: int
    col: int
    own_line: bool


@dataclass(frozen=True)
class Module:
    """One parsed file."""

    path: str
    statements: tuple[Statement, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False)
