"""Checking `source` and `mix` blocks: syntax blocks in, `SourceSpec` / `MixSpec` out.

Part of the checker (see `mixlang.check`): each function reports what is wrong through the
shared `BlockReader` and returns the spec, or None when the block has errors.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping

from mixlang import syntax as s
from mixlang import values as v
from mixlang.check_blocks import BlockReader, Fields, get, resolve_model, resolve_path, span_of
from mixlang.diagnostics import Label, did_you_mean, error, warning
from mixlang.program import ChatFormat, FormatSpec, MixSpec, PromptFormat, SourceSpec, TakeSpec, TextFormat

Blocks = Mapping[str, Mapping[str, s.Block]]

FORMATS = {"chat": {"messages": "messages"}, "prompt": {"prompt": None, "response": None},
           "text": {"field": "text"}}


def read_format(value: s.Value, key: str) -> FormatSpec:
    if not isinstance(value, s.Call):
        raise v.BadValue(f"`{key}` expects chat(...), prompt(...) or text(...), found {v.describe(value)}",
                         'e.g. `format chat(messages = "messages")`')
    if value.name not in FORMATS:
        raise v.BadValue(f"unknown format `{value.name}`; expected `chat`, `prompt` or `text`",
                         did_you_mean(value.name, FORMATS))
    args = call_args(value, {k: v.string for k in FORMATS[value.name]})
    params = {k: args.get(k, default) for k, default in FORMATS[value.name].items()}
    missing = [k for k, val in params.items() if val is None]
    if missing:
        raise v.BadValue(f"`{value.name}(...)` needs `{missing[0]}`",
                         f'write `{value.name}(' + ", ".join(f'{k} = "..."' for k in params) + ")`")
    if value.name == "prompt":
        for k in ("prompt", "response"):
            template_syntax(params[k], k)
        return PromptFormat(params["prompt"], params["response"])
    return ChatFormat(params["messages"]) if value.name == "chat" else TextFormat(params["field"])


def call_args(call: s.Call, schema: Mapping[str, v.Reader]) -> dict[str, object]:
    """A call's keyword arguments, read against `schema`; raises BadValue on the first problem."""
    args: dict[str, object] = {}
    for arg in call.args:
        if arg.name not in schema:
            raise v.BadValue(f"`{call.name}(...)` has no argument `{arg.name}`",
                             did_you_mean(arg.name, schema) or "it accepts " + ", ".join(f"`{k}`" for k in schema))
        if arg.name in args:
            raise v.BadValue(f"argument `{arg.name}` is given twice")
        args[arg.name] = schema[arg.name](arg.value, arg.name)
    return args


def template_syntax(template: str, key: str) -> None:
    import jinja2

    try:
        jinja2.Environment().parse(template)
    except jinja2.TemplateSyntaxError as e:
        raise v.BadValue(f"the `{key}` template is not valid Jinja: {e.message}") from e
    except RecursionError as e:  # jinja2's parser recurses once per level of nesting
        raise v.BadValue(f"the `{key}` template is nested too deeply") from e


SOURCE_SCHEMA: dict[str, v.Reader] = {
    "path": v.string, "split": v.string, "format": read_format, "dedup": v.choice("exact"),
    "holdout": v.fraction, "limit": v.size("samples"), "on_error": v.choice("fail", "skip"),
    "overlong": v.choice("drop", "truncate"), "seed": v.natural,
}


def check_source(block: s.Block, reader: BlockReader) -> SourceSpec | None:
    errors_before = reader.errors
    fields = reader.read(block, SOURCE_SCHEMA, required=("path", "format"))
    if reader.errors > errors_before:
        return None
    limit = get(fields, "limit")
    return SourceSpec(
        name=block.name.name, path=resolve_path(get(fields, "path"), span_of(fields, "path")),
        format=get(fields, "format"), split=get(fields, "split"), dedup="dedup" in fields,
        holdout=get(fields, "holdout", Fraction(0)), limit=limit.amount if limit else None,
        on_error=get(fields, "on_error", "fail"), overlong=get(fields, "overlong", "drop"),
        seed=get(fields, "seed", 0), span=block.span,
    )


MIX_SCHEMA: dict[str, v.Reader] = {
    "tokenizer": v.string, "seq_len": v.positive_integer, "packing": v.boolean, "seed": v.natural,
    "total": v.size("samples", "tokens"), "by": v.choice("samples", "tokens"), "temperature": v.positive,
}


def check_mix(block: s.Block, reader: BlockReader, blocks: Blocks) -> MixSpec | None:
    errors_before = reader.errors
    fields = reader.read(block, MIX_SCHEMA, items=(s.Take,), required=("tokenizer", "seq_len"))
    takes = _takes(block, reader, blocks)
    _check_total(fields, reader)
    written = [i for i in block.items if isinstance(i, s.Take)]
    if not written:
        reader.report(error("E301", f"mix `{block.name.name}` takes no source", block.name.span,
                            help="add `take SOURCE SHARE` lines"))
    elif len(takes) == len(written):  # with a take dropped for its own error, the sums would mislead
        check_shares(block.name.name, takes, reader, block.name.span)
        _check_temperature(fields, takes, reader)
    if reader.errors > errors_before:
        return None
    total = get(fields, "total")
    return MixSpec(
        name=block.name.name, takes=tuple(takes),
        tokenizer=resolve_model(get(fields, "tokenizer"), span_of(fields, "tokenizer")),
        seq_len=get(fields, "seq_len"), packing=get(fields, "packing", False),
        seed=get(fields, "seed", 0), total=total, by=get(fields, "by", "samples"),
        temperature=get(fields, "temperature"), span=block.span,
    )


def _takes(block: s.Block, reader: BlockReader, blocks: Blocks) -> list[TakeSpec]:
    takes: list[TakeSpec] = []
    seen: dict[str, s.Take] = {}
    for take in (i for i in block.items if isinstance(i, s.Take)):
        name = take.source.name
        if name in seen:
            reader.report(error("E302", f"source `{name}` is taken twice in mix `{block.name.name}`",
                                take.source.span, labels=_first(seen[name].source.span)))
            continue
        seen[name] = take
        _known_source(take.source, reader, blocks)
        spec = _take(take, reader)
        if spec is not None:
            takes.append(spec)
    return takes


def _known_source(word: s.Word, reader: BlockReader, blocks: Blocks) -> None:
    if word.name in blocks["source"]:
        return
    other = next((k for k in ("mix", "train", "sweep") if word.name in blocks[k]), None)
    message = (f"`{word.name}` is a {other}, not a source" if other else f"unknown source `{word.name}`")
    reader.report(error("E107", message, word.span, help=did_you_mean(word.name, blocks["source"])))


def _take(take: s.Take, reader: BlockReader) -> TakeSpec | None:
    share = None
    if isinstance(take.share, s.Num):
        share = reader.value(v.fraction, take.share, "share")
        if share is None:
            return None
    epochs = None
    if take.max_epochs is not None:
        epochs = reader.value(v.positive, take.max_epochs, "max_epochs")
        if epochs is None:
            return None
    return TakeSpec(take.source.name, share, isinstance(take.share, s.Rest), epochs, take.span)


def check_shares(mix: str, takes: list[TakeSpec], reader: BlockReader, at: s.Span | None) -> None:
    """The share rules of MIXLANG.md; also used for each point of a sweep."""
    rests = [t for t in takes if t.rest]
    unshared = [t for t in takes if t.share is None and not t.rest]
    explicit = sum((t.share for t in takes if t.share is not None), Fraction(0))
    for extra in rests[1:]:
        reader.report(error("E303", f"mix `{mix}` has more than one `rest` take", extra.span,
                            labels=_first(rests[0].span), help="keep one `rest`; give the others a share"))
    if rests and unshared:
        reader.report(error("E304", f"mix `{mix}` has a `rest` take beside unshared takes", rests[0].span,
                            labels=tuple(Label(t.span, "unshared") for t in unshared if t.span),
                            help="either give every take a share and one `rest`, or use no `rest`"))
    if explicit > 1:
        reader.report(error("E305", f"the shares of mix `{mix}` add up to {_pct(explicit)}, above 100%",
                            at, help="lower the shares so they sum to at most 100%"))
    elif not rests and not unshared and abs(explicit - 1) > Fraction(1, 10**9):
        reader.report(error("E306", f"the shares of mix `{mix}` add up to {_pct(explicit)}, not 100%",
                            at, help="make them sum to 100%, or let one take have `rest`"))


def _check_total(fields: Fields, reader: BlockReader) -> None:
    total, by = get(fields, "total"), get(fields, "by", "samples")
    if total is not None and total.unit != by:
        reader.report(error("E307", f"`total` is in {total.unit} but the mix counts shares by {by}",
                            span_of(fields, "total"),
                            help=f"write `by {total.unit}`, or give `total` in {by}"))


def _check_temperature(fields: Fields, takes: list[TakeSpec], reader: BlockReader) -> None:
    if "temperature" in fields and all(t.share is not None or t.rest for t in takes):
        reader.report(warning("W301", "`temperature` has no effect: every take has a share",
                              span_of(fields, "temperature"),
                              help="temperature weighs only takes written without a share"))


def _first(span: s.Span | None) -> tuple[Label, ...]:
    return (Label(span, "first here"),) if span else ()


def _pct(x: Fraction) -> str:
    return f"{float(x) * 100:.6g}%"

