"""Tests for mixlang.parser: every construct of the language into its syntax nodes, exact number
values, string escapes, spans, comments, and syntax errors (located, all reported, never a hang)."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest

from mixlang import syntax as s
from mixlang.parser import parse

F = Fraction


def module(text: str, path: str = "f.mix") -> s.Module:
    result = parse(path, text)
    assert result.diagnostics == ()
    assert result.module is not None
    return result.module


def block(text: str) -> s.Block:
    (statement,) = module(text).statements
    assert isinstance(statement, s.Block)
    return statement


def items(kind: str, body: str) -> tuple[s.Item, ...]:
    return block(f"{kind} b {{\n{body}\n}}\n").items


def item(kind: str, line: str) -> s.Item:
    (only,) = items(kind, line)
    return only


def errors(text: str) -> list[tuple[int, int, str]]:
    result = parse("f.mix", text)
    assert result.module is None
    return [(d.span.line, d.span.col, d.code) for d in result.diagnostics]


def num(text: str, value: object) -> s.Num:
    return s.Num(text, F(value))


def w(name: str) -> s.Word:
    return s.Word(name)


def attr(key: str, *values: s.Value) -> s.Attribute:
    return s.Attribute(key, values)


# -- top level ------------------------------------------------------------------------------


def test_empty_file_is_an_empty_module() -> None:
    for text in ("", "\n\n", "   \n\t\n", "# only a comment\n"):
        assert module(text).statements == ()


def test_module_keeps_its_path() -> None:
    assert module("", "dir/x.mix").path == "dir/x.mix"


def test_import() -> None:
    (statement,) = module('import "lib/common.mix"\n').statements
    assert statement == s.Import(s.Str("lib/common.mix"))


def test_every_block_kind_and_empty_bodies() -> None:
    text = "source a {\n}\nmix b {}\ntrain c {\n\n}\neval c { }\nsweep d {\n}\n"
    kinds = [(b.kind.name, b.name.name, b.items) for b in module(text).statements]
    assert kinds == [("source", "a", ()), ("mix", "b", ()), ("train", "c", ()), ("eval", "c", ()),
                     ("sweep", "d", ())]


def test_unknown_block_kind_is_left_to_the_checker() -> None:
    assert block("souce a {\n}\n").kind == w("souce")


def test_statements_in_order_with_blank_lines_and_no_final_newline() -> None:
    statements = module('\n\nimport "a.mix"\n\n\nsource s {\n  path "x"\n}').statements
    assert [type(st) for st in statements] == [s.Import, s.Block]


# -- source ---------------------------------------------------------------------------------


SOURCE = '''
source voc {
  path    "data/voc/train-*.jsonl"
  split   "train"
  format  chat(messages = "messages")
  dedup   exact
  holdout 2%
  limit   50K samples
  on_error skip
}
'''


def test_source_with_every_option() -> None:
    assert block(SOURCE) == s.Block(w("source"), w("voc"), (
        attr("path", s.Str("data/voc/train-*.jsonl")),
        attr("split", s.Str("train")),
        attr("format", s.Call("chat", (s.KwArg("messages", s.Str("messages")),))),
        attr("dedup", w("exact")),
        attr("holdout", num("2%", "1/50")),
        attr("limit", s.Size(num("50K", 50_000), "samples")),
        attr("on_error", w("skip")),
    ))


@pytest.mark.parametrize("line, call", [
    ('format chat(messages = "messages")', s.Call("chat", (s.KwArg("messages", s.Str("messages")),))),
    ('format prompt(prompt = "Q: {{ question }}\\nA:", response = " {{ answer }}")',
     s.Call("prompt", (s.KwArg("prompt", s.Str("Q: {{ question }}\nA:")),
                       s.KwArg("response", s.Str(" {{ answer }}"))))),
    ('format text(field = "text")', s.Call("text", (s.KwArg("field", s.Str("text")),))),
    ("format text()", s.Call("text", ())),
])
def test_each_format(line: str, call: s.Call) -> None:
    assert item("source", line) == attr("format", call)


def test_hub_path() -> None:
    assert item("source", 'path "hf:org/name"') == attr("path", s.Str("hf:org/name"))


# -- mix ------------------------------------------------------------------------------------


MIX = '''
mix voc_blend {
  tokenizer  "Qwen/Qwen3-0.6B"
  seq_len    4096
  packing    true
  seed       17
  total      40M tokens
  by         tokens
  temperature 2.5

  take voc      75%
  take general  rest   max_epochs 1
  take wiki
  take code     0.1 max_epochs 2.5
  take web      max_epochs 3
}
'''


def test_mix_with_every_option() -> None:
    assert block(MIX) == s.Block(w("mix"), w("voc_blend"), (
        attr("tokenizer", s.Str("Qwen/Qwen3-0.6B")),
        attr("seq_len", num("4096", 4096)),
        attr("packing", s.Bool(True)),
        attr("seed", num("17", 17)),
        attr("total", s.Size(num("40M", 40_000_000), "tokens")),
        attr("by", w("tokens")),
        attr("temperature", num("2.5", "5/2")),
        s.Take(w("voc"), num("75%", "3/4"), None),
        s.Take(w("general"), s.Rest(), num("1", 1)),
        s.Take(w("wiki"), None, None),
        s.Take(w("code"), num("0.1", "1/10"), num("2.5", "5/2")),
        s.Take(w("web"), None, num("3", 3)),
    ))


@pytest.mark.parametrize("line, size", [
    ("total 40M tokens", s.Size(num("40M", 40 * 10**6), "tokens")),
    ("total 100K samples", s.Size(num("100K", 100_000), "samples")),
    ("total 2.5B tokens", s.Size(num("2.5B", 25 * 10**8), "tokens")),
    ("total 1_000 samples", s.Size(num("1_000", 1000), "samples")),
])
def test_total_sizes(line: str, size: s.Size) -> None:
    assert item("mix", line) == attr("total", size)


@pytest.mark.parametrize("line, value", [
    ("by samples", w("samples")), ("by tokens", w("tokens")), ("packing false", s.Bool(False)),
])
def test_words_and_booleans(line: str, value: s.Value) -> None:
    assert item("mix", line).values == (value,)


def test_a_number_without_unit_and_a_unit_without_number_stay_apart() -> None:
    assert item("mix", "total 40M").values == (num("40M", 40_000_000),)
    assert item("mix", "total tokens 40M").values == (w("tokens"), num("40M", 40_000_000))


# -- train ----------------------------------------------------------------------------------


TRAIN = '''
train voc_sft {
  data        voc_blend
  model       "Qwen/Qwen3-0.6B"
  epochs      2
  lr          1e-5
  batch       64
  micro_batch 4
  warmup      3%
  precision   bf16
  resources {
    nodes 1
    gpus_per_node 8
    cpus_per_task 16
    mem "512G"
    time "12:00:00"
    partition "gpu"
    account "research"
  }
}
'''


def test_train_with_resources() -> None:
    assert block(TRAIN) == s.Block(w("train"), w("voc_sft"), (
        attr("data", w("voc_blend")),
        attr("model", s.Str("Qwen/Qwen3-0.6B")),
        attr("epochs", num("2", 2)),
        attr("lr", num("1e-5", "1/100000")),
        attr("batch", num("64", 64)),
        attr("micro_batch", num("4", 4)),
        attr("warmup", num("3%", "3/100")),
        attr("precision", w("bf16")),
        s.Resources((
            attr("nodes", num("1", 1)), attr("gpus_per_node", num("8", 8)),
            attr("cpus_per_task", num("16", 16)), attr("mem", s.Str("512G")),
            attr("time", s.Str("12:00:00")), attr("partition", s.Str("gpu")),
            attr("account", s.Str("research")),
        )),
    ))


@pytest.mark.parametrize("text", [
    'resources { a 1 b "x" }',
    'resources {\n a 1 b "x"\n}',
    'resources {\n  a 1\n\n  b "x"\n}',
    'resources {a 1\nb "x"}',
])
def test_resources_on_one_line_or_several(text: str) -> None:
    assert item("train", text) == s.Resources((attr("a", num("1", 1)), attr("b", s.Str("x"))))


def test_empty_resources() -> None:
    assert item("train", "resources { }") == s.Resources(())


# -- eval -----------------------------------------------------------------------------------


EVAL = '''
eval voc_sft {
  metric voc_f1 = classify(data = "data/voc/test.jsonl", prompt = "{{ text }}", label = "category", average = macro)
  metric mmlu   = choice(data = "data/mmlu/test.jsonl")
  metric general_loss = loss(source = general)
  metric few = classify(labels = ["a", "b"], n = 3)

  gate voc_f1 >= 0.50
  gate mmlu   >= base - 0.02
  gate general_loss <= base * 1.10
  resources { gpus_per_node 1 time "01:00:00" }
}
'''


def test_eval_with_metrics_gates_and_resources() -> None:
    assert block(EVAL) == s.Block(w("eval"), w("voc_sft"), (
        s.Metric(w("voc_f1"), s.Call("classify", (
            s.KwArg("data", s.Str("data/voc/test.jsonl")), s.KwArg("prompt", s.Str("{{ text }}")),
            s.KwArg("label", s.Str("category")), s.KwArg("average", w("macro"))))),
        s.Metric(w("mmlu"), s.Call("choice", (s.KwArg("data", s.Str("data/mmlu/test.jsonl")),))),
        s.Metric(w("general_loss"), s.Call("loss", (s.KwArg("source", w("general")),))),
        s.Metric(w("few"), s.Call("classify", (
            s.KwArg("labels", s.ListVal((s.Str("a"), s.Str("b")))), s.KwArg("n", num("3", 3))))),
        s.Gate(w("voc_f1"), ">=", num("0.50", "1/2")),
        s.Gate(w("mmlu"), ">=", s.BaseExpr("-", num("0.02", "1/50"))),
        s.Gate(w("general_loss"), "<=", s.BaseExpr("*", num("1.10", "11/10"))),
        s.Resources((attr("gpus_per_node", num("1", 1)), attr("time", s.Str("01:00:00")))),
    ))


@pytest.mark.parametrize("line, comparator, rhs", [
    ("gate m >= 0.5", ">=", num("0.5", "1/2")),
    ("gate m > 50%", ">", num("50%", "1/2")),
    ("gate m <= -3", "<=", num("-3", -3)),
    ("gate m < 1e-5", "<", num("1e-5", "1/100000")),
    ("gate m >= base", ">=", s.Base()),
    ("gate m >= base + 0.01", ">=", s.BaseExpr("+", num("0.01", "1/100"))),
    ("gate m >= base - 0.02", ">=", s.BaseExpr("-", num("0.02", "1/50"))),
    ("gate m <= base * 1.1", "<=", s.BaseExpr("*", num("1.1", "11/10"))),
    ("gate m >= base -0.02", ">=", s.BaseExpr("-", num("0.02", "1/50"))),
    ("gate m >= base - 2%", ">=", s.BaseExpr("-", num("2%", "1/50"))),
    ("gate m>=base+1", ">=", s.BaseExpr("+", num("1", 1))),
])
def test_gate_forms(line: str, comparator: str, rhs: object) -> None:
    assert item("eval", line) == s.Gate(w("m"), comparator, rhs)


def test_base_followed_by_a_positive_number_is_an_error() -> None:
    result = parse("f.mix", "eval t {\n  gate m >= base 0.02\n}\n")
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("E004", 2, 18)
    assert "base + 0.02" in d.help


def test_metric_call_without_arguments() -> None:
    assert item("eval", "metric m = choice()") == s.Metric(w("m"), s.Call("choice", ()))


# -- sweep ----------------------------------------------------------------------------------


def test_sweep_vary() -> None:
    text = "sweep voc_share {\n  vary voc_blend.voc in [100%, 75%, 0.5]\n  vary b.c in []\n}\n"
    assert block(text) == s.Block(w("sweep"), w("voc_share"), (
        s.Vary(w("voc_blend"), w("voc"), s.ListVal((num("100%", 1), num("75%", "3/4"), num("0.5", "1/2")))),
        s.Vary(w("b"), w("c"), s.ListVal(())),
    ))


# -- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("17", 17), ("0", 0), ("-3", -3), ("1_000_000", 1_000_000), ("0.5", "1/2"), ("1e-5", "1/100000"),
    ("1E3", 1000), ("2.5e+2", 250), ("-0.25", "-1/4"), ("40M", 40_000_000), ("2.5B", 2_500_000_000),
    ("100K", 100_000), ("75%", "3/4"), ("0.5%", "1/200"), ("100%", 1), ("1_0.0_5", "201/20"),
    ("0.1", "1/10"), ("0.3", "3/10"), ("-2%", "-1/50"), ("1e30", 10**30), ("1e-30", F(1, 10**30)),
])
def test_numbers_have_exact_values(text: str, value: object) -> None:
    (number,) = item("mix", f"x {text}").values
    assert number == num(text, value)
    assert isinstance(number.value, Fraction)
    assert number.value == F(value)


def test_number_properties() -> None:
    assert num("75%", "3/4").is_percent and not num("0.75", "3/4").is_percent
    assert num("40M", 40_000_000).is_integer and not num("0.5", "1/2").is_integer


@pytest.mark.parametrize("literal, value", [
    (r'"plain"', "plain"), (r'"a\"b"', 'a"b'), (r'"a\\b"', "a\\b"), (r'"a\nb"', "a\nb"),
    (r'"a\tb"', "a\tb"), (r'""', ""), (r'"\\n"', "\\n"), (r'"ünï {{ x }}"', "ünï {{ x }}"),
])
def test_string_escapes(literal: str, value: str) -> None:
    assert item("source", f"x {literal}").values == (s.Str(value),)


@pytest.mark.parametrize("literal", [r'"\q"', r'"a\0"', r'"\u00e9"', r'"\r"'])
def test_unknown_escape_is_e006(literal: str) -> None:
    result = parse("f.mix", f"source s {{\n  path {literal}\n}}\n")
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("E006", 2, 8)
    assert "unknown escape" in d.message


def test_lists() -> None:
    (value,) = item("mix", 'x [a, "b", 1, true, 2M, tokens]').values
    assert value == s.ListVal((w("a"), s.Str("b"), num("1", 1), s.Bool(True), num("2M", 2_000_000),
                               w("tokens")))
    assert item("mix", "x []").values == (s.ListVal(()),)


def test_attribute_with_several_values_or_none_is_kept_for_the_checker() -> None:
    assert item("mix", "x 1 2 a") == attr("x", num("1", 1), num("2", 2), w("a"))
    assert item("mix", "x") == attr("x")


@pytest.mark.parametrize("text", [
    "1" + "0" * 1000,                      # 1001 digits
    "0." + "0" * 1000 + "1",
    "1e999999999", "1e-999999999", "9" * 41, "1e31", "1e-31", "-1e31", "1" * 32 + "M",
    "1" * 5000 + "e5",
])
def test_out_of_range_numbers_are_e005_and_fast(text: str) -> None:
    started = time.perf_counter()
    result = parse("f.mix", f"mix m {{\n  seed {text}\n}}\n")
    assert time.perf_counter() - started < 1
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.col) == ("E005", 2, 8)


def test_long_but_representable_numbers_are_exact() -> None:
    assert item("mix", "x " + "9" * 31).values == (num("9" * 31, int("9" * 31)),)
    forty = "1234567890.123456789012345678901234567890"
    assert item("mix", "x " + forty).values == (num(forty, F(forty)),)
    assert item("mix", "x 1e30B").values == (num("1e30B", 10**39),)  # the suffix is not counted
    assert item("mix", "x 0e999999999").values[0].value == 0
    assert item("mix", "x " + "0" * 1000 + "7").values[0].value == 7


# -- spans ----------------------------------------------------------------------------------


SPANNED = '''import "a.mix"
mix m {
  total 40M tokens
  take voc 75% max_epochs 2
  take general rest
}
eval t {
  gate f1 >= base - 0.02
  resources { gpus_per_node 1 time "01:00:00" }
}
'''


def where(node: object) -> tuple[int, int, int, int]:
    span = node.span  # type: ignore[attr-defined]
    assert span is not None and span.path == "f.mix"
    return (span.line, span.col, span.end_line, span.end_col)


def test_spans_are_one_based_and_end_exclusive() -> None:
    imp, mix, ev = module(SPANNED).statements
    assert where(imp) == (1, 1, 1, 15) and where(imp.path) == (1, 8, 1, 15)
    assert where(mix) == (2, 1, 6, 2)
    assert where(mix.kind) == (2, 1, 2, 4) and where(mix.name) == (2, 5, 2, 6)
    total, take, rest = mix.items
    assert where(total) == (3, 3, 3, 19)
    assert where(total.values[0]) == (3, 9, 3, 19) and where(total.values[0].amount) == (3, 9, 3, 12)
    assert where(take) == (4, 3, 4, 28)
    assert where(take.source) == (4, 8, 4, 11) and where(take.share) == (4, 12, 4, 15)
    assert where(take.max_epochs) == (4, 27, 4, 28)
    assert where(rest.share) == (5, 16, 5, 20)
    gate, resources = ev.items
    assert where(gate) == (8, 3, 8, 25) and where(gate.metric) == (8, 8, 8, 10)
    assert where(gate.rhs) == (8, 14, 8, 25)
    assert where(resources) == (9, 3, 9, 48)
    assert [where(e) for e in resources.entries] == [(9, 15, 9, 30), (9, 31, 9, 46)]


def test_span_offsets_slice_the_text() -> None:
    text = SPANNED
    mix = module(text).statements[1]
    take = mix.items[1]
    assert text[take.span.start:take.span.end] == "take voc 75% max_epochs 2"
    assert text[mix.span.start:mix.span.end].startswith("mix m {") and text[mix.span.end - 1] == "}"


def test_spans_do_not_take_part_in_equality() -> None:
    a = module("mix m {\n  seed 1\n}\n")
    b = module("\n\n\nmix   m {   seed 1 }")
    assert a == b
    assert a.statements[0].span != b.statements[0].span


def test_crlf_line_endings() -> None:
    mix = block("mix m {\r\n  seed 1\r\n  take a 50%\r\n}\r\n")
    assert mix.items == (attr("seed", num("1", 1)), s.Take(w("a"), num("50%", "1/2"), None))
    assert where(mix.items[1]) == (3, 3, 3, 13)


# -- comments -------------------------------------------------------------------------------


def test_comments_are_collected_with_own_line() -> None:
    text = '# head\nmix m {   # after brace\n  x "a # not a comment" # trailing\n    # indented own\n}\n'
    m = module(text)
    assert [(c.text, c.line, c.col, c.own_line) for c in m.comments] == [
        ("# head", 1, 1, True), ("# after brace", 2, 11, False), ("# trailing", 3, 25, False),
        ("# indented own", 4, 5, True),
    ]
    assert m.statements[0].items == (attr("x", s.Str("a # not a comment")),)


def test_hash_after_escaped_quote_is_still_inside_the_string() -> None:
    m = module('mix m {\n  x "a \\" # b" # c\n}\n')
    assert m.statements[0].items == (attr("x", s.Str('a " # b')),)
    assert [(c.text, c.col) for c in m.comments] == [("# c", 16)]


def test_comments_do_not_change_the_tree() -> None:
    plain = module("mix m {\n  seed 1\n}\n")
    commented = module("# a\nmix m { # b\n  # c\n  seed 1 # d\n} # e\n# f")
    assert plain == commented
    assert len(commented.comments) == 6


def test_comment_text_drops_carriage_return() -> None:
    assert module("# a\r\nmix m {\r\n}\r\n").comments[0].text == "# a"


# -- syntax errors --------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("mix m {\n  x = 1\n}\n", [(2, 5, "E003")]),
    ("mix m {\n  x @\n}\n", [(2, 5, "E001")]),
    ("mix m {\n  x 1x\n}\n", [(2, 5, "E007")]),
    ("mix m {\n  x 1..2\n}\n", [(2, 6, "E003")]),
    ('mix m {\n  x "open\n}\n', [(2, 5, "E001")]),
    ("mix m {\n  take a 10% max_epochs\n}\n", [(2, 24, "E003")]),
    ("mix m {\n  take\n}\n", [(2, 7, "E003")]),
    ("sweep s {\n  vary m.a in [1, 2,]\n}\n", [(2, 21, "E003")]),
    ("mix m {\n  seed 1\n}\n}\n", [(4, 1, "E003")]),
    ("import\n", [(1, 7, "E003")]),
    ("mix m {\n  seed 1\n", [(2, 9, "E002")]),
    ("mix m { seed 1 b 2 }\nmix", [(2, 1, "E002")]),
])
def test_syntax_errors_are_located(text: str, expected: list) -> None:
    assert errors(text) == expected


def test_syntax_error_message_and_help() -> None:
    (d,) = parse("f.mix", "mix m {\n  x = 1\n}\n").diagnostics
    assert d.severity == "error" and d.span.path == "f.mix"
    assert d.message == "unexpected `=`"
    assert d.help.startswith("expected ")


def test_several_independent_syntax_errors_are_all_reported() -> None:
    text = ("source s {\n  path = \"x\"\n  format chat()\n}\n"
            "mix m {\n  seed 1\n  take a ) 50%\n  total @ samples\n}\n"
            "train t {\n  lr 1e\n}\n")
    assert errors(text) == [(2, 8, "E003"), (7, 10, "E003"), (8, 9, "E001"), (11, 6, "E007")]


def test_an_early_end_of_file_is_reported_once() -> None:
    assert errors("mix m {\n  x = 1\n  seed 1\n") == [(2, 5, "E003"), (3, 9, "E002")]


def test_many_errors_are_capped() -> None:
    text = "mix m {\n" + "  x = 1\n" * 100 + "}\n"
    result = parse("f.mix", text)
    assert 1 < len(result.diagnostics) <= 20
    assert [d.span.line for d in result.diagnostics] == list(range(2, 2 + len(result.diagnostics)))


@pytest.mark.parametrize("text", [
    "{", "}", "mix {", '"', "mix m { take }", "\x00", "\ufeffmix m {}", "mix m {\n  x [\n}\n",
    "gate a >= base", "mix m {\n  metric = x()\n}\n", "eval e {\n  gate a >= base base\n}\n",
    "a" * 10_000, "mix m {\n" * 300, "[" * 1000, "-" * 1000, "mix m {\n  x " + "1" * 100_000 + "y\n}\n",
])
def test_malformed_input_gives_diagnostics_not_exceptions(text: str) -> None:
    started = time.perf_counter()
    result = parse("f.mix", text)
    assert time.perf_counter() - started < 2
    assert result.module is None and result.diagnostics
    for d in result.diagnostics:
        assert d.code.startswith("E0") and d.span.line >= 1 and d.span.col >= 1


def test_the_parser_is_saved_once_and_a_bad_copy_is_rebuilt(tmp_path, monkeypatch) -> None:
    """The parser is saved under $MIXLANG_CACHE/grammar and loaded from there; a damaged copy
    is rebuilt and replaced; each way parses the same."""
    from mixlang import parser as p

    import pathlib

    text = (pathlib.Path(__file__).parents[2] / "examples" / "customer_blend.mix").read_text(encoding="utf-8")
    expected = parse("x.mix", text)
    monkeypatch.setenv("MIXLANG_CACHE", str(tmp_path))
    for damage in (None, b"not a parser"):
        if damage is not None:
            saved.write_bytes(damage)
        p._lark.cache_clear()
        assert parse("x.mix", text) == expected
        (saved,) = (tmp_path / "grammar").iterdir()
        assert saved.stat().st_size > 1000
    p._lark.cache_clear()
    loaded = p._lark()
    assert parse("x.mix", text) == expected and loaded is p._lark()
    p._lark.cache_clear()
