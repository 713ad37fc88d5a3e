"""Reading a block's body against a schema, for the checker.

Takes a syntax block and a schema (key -> value reader); produces the typed values of its
attributes, and reports to a shared diagnostics list every unknown or repeated key, wrong
arity, wrong type and missing required key. Also: resolving relative paths.
"""

from __future__ import annotations

import os
from typing import Mapping

from mixlang import syntax as s
from mixlang import values as v
from mixlang.diagnostics import Diagnostic, Label, did_you_mean, error

Fields = dict[str, tuple[object, s.Attribute]]

_ITEM_NAMES = {s.Take: "take", s.Metric: "metric", s.Gate: "gate", s.Vary: "vary",
               s.Resources: "resources"}


class BlockReader:
    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics

    def report(self, d: Diagnostic) -> None:
        self.diagnostics.append(d)

    @property
    def errors(self) -> int:
        """Errors reported so far; a block is good when this did not grow while reading it."""
        return sum(1 for d in self.diagnostics if d.is_error)

    def value(self, reader: v.Reader, value: s.Value, key: str) -> object:
        """The typed value, or None after reporting why it is wrong."""
        try:
            return reader(value, key)
        except v.BadValue as e:
            self.report(error("E201", e.message, value.span, help=e.help))
            return None

    def read(self, block: s.Block, schema: Mapping[str, v.Reader], items: tuple[type, ...] = (),
             required: tuple[str, ...] = ()) -> Fields:
        fields: Fields = {}
        for item in block.items:
            if isinstance(item, s.Attribute):
                self._attribute(block, item, schema, fields)
            elif not isinstance(item, items):
                self._misplaced(block, item)
        for key in required:
            if key not in fields and not any(isinstance(i, s.Attribute) and i.key == key for i in block.items):
                self.report(error("E203", f"{block.kind.name} `{block.name.name}` has no `{key}`",
                                  block.name.span, help=f"add a `{key}` line to the block"))
        return fields

    def pairs(self, entries: tuple[s.Attribute, ...], schema: Mapping[str, v.Reader], where: str) -> Fields:
        fields: Fields = {}
        for entry in entries:
            self._attribute_in(where, entry, schema, fields)
        return fields

    def _attribute(self, block: s.Block, attr: s.Attribute, schema: Mapping[str, v.Reader],
                   fields: Fields) -> None:
        self._attribute_in(_a_block(block), attr, schema, fields)

    def _attribute_in(self, where: str, attr: s.Attribute, schema: Mapping[str, v.Reader],
                      fields: Fields) -> None:
        key = attr.key
        if key not in schema:
            self.report(error("E202", f"unknown key `{key}` in {where}", _key_span(attr),
                              help=did_you_mean(key, schema) or (f"{where} accepts " + _listing(schema) if schema
                                                                 else f"{where} takes no `key value` settings")))
            return
        if key in fields:
            first = fields[key][1].span
            self.report(error("E204", f"`{key}` is set twice", _key_span(attr),
                              labels=(Label(first, "first set here"),) if first else ()))
            return
        if len(attr.values) != 1:
            found = "nothing" if not attr.values else f"{len(attr.values)} values"
            self.report(error("E205", f"`{key}` takes one value, found {found}", attr.span))
            return
        value = self.value(schema[key], attr.values[0], key)
        if value is not None:
            fields[key] = (value, attr)

    def _misplaced(self, block: s.Block, item: s.Item) -> None:
        what = _ITEM_NAMES.get(type(item), "this statement")
        self.report(error("E206", f"`{what}` is not allowed in {_a_block(block)}", item.span))


def _a_block(block: s.Block) -> str:
    kind = block.kind.name
    return f"{'an' if kind[0] in 'aeiou' else 'a'} `{kind}` block"


def _key_span(attr: s.Attribute) -> s.Span | None:
    sp = attr.span
    if sp is None:
        return None
    return s.Span(sp.path, sp.line, sp.col, sp.line, sp.col + len(attr.key), sp.start, sp.start + len(attr.key))


def _listing(schema: Mapping[str, object]) -> str:
    return ", ".join(f"`{k}`" for k in schema)


def get(fields: Fields, key: str, default: object = None) -> object:
    return fields[key][0] if key in fields else default


def span_of(fields: Fields, key: str) -> s.Span | None:
    """The span of the value given for `key` (None when the key is absent)."""
    return fields[key][1].values[0].span if key in fields else None


def resolve_path(value: str, span: s.Span | None) -> str:
    """A path relative to the file that wrote it, made absolute (`hf:` names stay as written)."""
    if value.startswith("hf:") or span is None:
        return value
    return os.path.abspath(os.path.join(os.path.dirname(span.path), value))


def resolve_model(value: str, span: s.Span | None) -> str:
    """A `tokenizer` or `model`: an existing directory (relative to the file) or a hub name."""
    local = resolve_path(value, span)
    return local if os.path.isdir(local) else value
