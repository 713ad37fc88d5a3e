"""Tests for compiler.sources and compiler.records, on small real files under tmp_path."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.records import count_lines
from compiler.sources import (
    RecordError, RecordRef, Templates, count_records_fast, count_source, in_holdout, iter_records,
    canonical_bytes, record_key, resolve_files,
)
from mixlang.diagnostics import MixError
from mixlang.program import ChatFormat, PromptFormat, SourceSpec, TextFormat


def chat(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def spec(path: object, **kw: object) -> SourceSpec:
    kw.setdefault("format", ChatFormat())
    return SourceSpec(name="src", path=str(path), **kw)


def write_jsonl(path: Path, records: list, trailing_newline: bool = True) -> Path:
    text = "\n".join(json.dumps(r) for r in records)
    path.write_text(text + ("\n" if trailing_newline else ""), encoding="utf-8")
    return path


def records_of(s: SourceSpec) -> list:
    return [r for _, r in iter_records(s)]


def code_of(exc: pytest.ExceptionInfo) -> str:
    return exc.value.diagnostics[0].code


# Formats --------------------------------------------------------------------------------------

def test_jsonl_skips_blank_lines_and_keeps_physical_line_numbers(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps(chat(0)) + "\n\n   \n\t\r\n" + json.dumps(chat(1)) + "\n")
    items = list(iter_records(spec(f)))
    assert [ref for ref, _ in items] == [RecordRef(str(f), 1), RecordRef(str(f), 5)]
    assert [r for _, r in items] == [chat(0), chat(1)]
    assert count_records_fast([str(f)]) == 2


def test_json_array_and_json_lines_in_dot_json(tmp_path: Path) -> None:
    array = tmp_path / "array.json"
    array.write_text("  \n[" + ",".join(json.dumps(chat(i)) for i in range(3)) + "]")
    lines = write_jsonl(tmp_path / "lines.json", [chat(i) for i in range(4)])
    assert records_of(spec(array)) == [chat(i) for i in range(3)]
    assert [ref.line for ref, _ in iter_records(spec(array))] == [1, 2, 3]
    assert records_of(spec(lines)) == [chat(i) for i in range(4)]
    assert count_records_fast([str(array), str(lines)]) == 7


def test_invalid_json_array_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text('[{"a": 1},\n {"a": ]')
    with pytest.raises(MixError) as exc:
        list(iter_records(spec(f)))
    assert code_of(exc) == "E506" and str(f) in str(exc.value)


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "a.parquet"
    table = pa.Table.from_pylist([{"text": f"t{i}", "n": i} for i in range(2500)])
    pq.write_table(table, f, row_group_size=1000)
    items = list(iter_records(spec(f, format=TextFormat())))
    assert len(items) == 2500 and items[-1] == (RecordRef(str(f), 2500), {"text": "t2499", "n": 2499})
    assert count_records_fast([str(f)]) == 2500


def test_csv_reads_strings_and_multiline_values(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text('text,label\n"line one\nline two",1\nplain,007\n')
    items = list(iter_records(spec(f, format=TextFormat())))
    assert items == [
        (RecordRef(str(f), 1), {"text": "line one\nline two", "label": "1"}),
        (RecordRef(str(f), 2), {"text": "plain", "label": "007"}),
    ]
    assert count_records_fast([str(f)]) == 2


def test_empty_files_have_no_records(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.json", "e.csv"):
        (tmp_path / name).write_bytes(b"")
        assert records_of(spec(tmp_path / name)) == []
        assert count_records_fast([str(tmp_path / name)]) == 0


def test_save_to_disk_dataset(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": [f"t{i}" for i in range(5)]}).save_to_disk(str(tmp_path / "ds"))
    s = spec(tmp_path / "ds", format=TextFormat())
    files = resolve_files(s)
    assert files and all(f.endswith(".arrow") for f in files)
    assert records_of(s) == [{"text": f"t{i}"} for i in range(5)]
    assert count_source(s).raw == 5 == count_source(s.__class__(**{**s.__dict__, "dedup": True})).raw


def test_dataset_dict_split(tmp_path: Path) -> None:
    import datasets

    d = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a", "b", "c"]}),
        "test": datasets.Dataset.from_dict({"text": ["z"]}),
    })
    d.save_to_disk(str(tmp_path / "dd"))
    assert records_of(spec(tmp_path / "dd", split="test")) == [{"text": "z"}]
    assert len(records_of(spec(tmp_path / "dd"))) == 3  # no split: `train`
    with pytest.raises(MixError) as exc:
        resolve_files(spec(tmp_path / "dd", split="valid"))
    assert code_of(exc) == "E505" and "`train`" in str(exc.value) and "`test`" in str(exc.value)


# Resolution -----------------------------------------------------------------------------------

def test_glob_sorted_and_recursive(tmp_path: Path) -> None:
    for name in ("b.jsonl", "a.jsonl", "sub/c.jsonl"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_jsonl(tmp_path / name, [chat(0)])
    assert resolve_files(spec(tmp_path / "*.jsonl")) == (str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))
    assert len(resolve_files(spec(tmp_path / "**" / "*.jsonl"))) == 3


def test_directory_recursive_sorted_skipping_other_and_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "d" / "x").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").mkdir()
    for name in ("d/b.jsonl", "d/a.csv", "d/x/c.parquet.jsonl", "d/.hidden/h.jsonl", "d/.h.jsonl"):
        write_jsonl(tmp_path / name, [chat(0)])
    (tmp_path / "d" / "README.md").write_text("not data")
    d = tmp_path / "d"
    assert resolve_files(spec(d)) == (str(d / "a.csv"), str(d / "b.jsonl"), str(d / "x" / "c.parquet.jsonl"))


def test_missing_path_empty_glob_bad_extension_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "nope.jsonl": "E501",
        tmp_path / "*.parquet": "E502",
        tmp_path / "notes.txt": "E503",
        tmp_path / "*.txt": "E503",
        tmp_path / "empty": "E504",
    }
    for path, code in cases.items():
        with pytest.raises(MixError) as exc:
            resolve_files(spec(path))
        assert code_of(exc) == code and str(path) in str(exc.value)
        assert exc.value.diagnostics[0].help and exc.value.diagnostics[0].span is None


def test_missing_file_suggests_near_name(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [chat(0)])
    with pytest.raises(MixError) as exc:
        resolve_files(spec(tmp_path / "trian.jsonl"))
    assert "train.jsonl" in exc.value.diagnostics[0].help


def test_corrupt_parquet_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    f = tmp_path / "bad.parquet"
    f.write_bytes(b"not parquet at all")
    for action in (lambda: list(iter_records(spec(f))), lambda: count_records_fast([str(f)])):
        with pytest.raises(MixError) as exc:
            action()
        assert code_of(exc) == "E506" and str(f) in str(exc.value)


def test_hub_source(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("couldn't reach the hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(datasets, "load_dataset_builder", offline)
    s = spec("hf:org/name")
    assert resolve_files(s) == ("hf:org/name",)
    for action in (lambda: list(iter_records(s)), lambda: count_source(s)):
        with pytest.raises(MixError) as exc:
            action()
        assert code_of(exc) == "E509" and "local copy" in exc.value.diagnostics[0].help


# Counting -------------------------------------------------------------------------------------

def test_fast_count_equals_full_count(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(json.dumps(chat(i)) + (" \n\n" if i % 7 == 0 else "") for i in range(300)))
    fast = count_source(spec(f))
    full = count_source(spec(f, on_error="skip"))
    assert (fast.exact_pass, full.exact_pass) == (False, True)
    assert fast.raw == full.raw == fast.size == full.size == 300


def test_fast_count_without_trailing_newline(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(3)], trailing_newline=False)
    assert count_records_fast([str(f)]) == 3
    assert count_records_fast([str(f)], chunk_size=5) == 3


def reference_count(data: bytes) -> int:
    return sum(1 for line in io.BytesIO(data) if line.strip())


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.sampled_from([b"{}", b" {}", b"", b" ", b"\t", b"\r", b"x", b"ab c", b" \r", b"\x0c"]), max_size=30),
    ending=st.sampled_from([b"\n", b"\r\n"]),
    trailing=st.booleans(),
    chunk_size=st.integers(1, 12),
)
def test_count_lines_matches_a_line_by_line_count(
    lines: list[bytes], ending: bytes, trailing: bool, chunk_size: int,
) -> None:
    data = ending.join(lines) + (ending if trailing and lines else b"")
    assert count_lines(data, chunk_size) == reference_count(data)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1 << 20])
def test_chunk_boundaries(tmp_path: Path, chunk_size: int) -> None:
    data = b'{"a":1}\n  \n{"b":2}\n\n\n   {"c":3}\r\n\t\n{"d":4}'
    f = tmp_path / "a.jsonl"
    f.write_bytes(data)
    assert count_records_fast([str(f)], chunk_size=chunk_size) == 4 == len(records_of(spec(f)))


def test_broken_json_line_fails_naming_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps(chat(0)) + "\n{not json\n" + "[1, 2]\n")
    with pytest.raises(MixError) as exc:
        count_source(spec(f, dedup=True))
    assert code_of(exc) == "E507" and f"{f}:2" in str(exc.value)


def test_broken_records_skipped_are_counted_and_reported(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps(chat(0)) + "\n{not json\n[1, 2]\n" + '{"messages": "hi"}\n' * 6)
    c = count_source(spec(f, on_error="skip"))
    assert (c.raw, c.broken, c.size) == (9, 8, 1)
    assert len(c.first_errors) == 5
    assert c.first_errors[0].startswith(f"{f}:2: invalid JSON")
    assert c.first_errors[1].startswith(f"{f}:3: expected a JSON object")
    assert c.first_errors[2] == f"{f}:4: field `messages`: expected a list of messages, found str"


@pytest.mark.parametrize(("fmt", "record", "field"), [
    (ChatFormat(), {"text": "x"}, "messages"),
    (ChatFormat("conv"), {"conv": [{"role": "user"}]}, "conv[0].content"),
    (ChatFormat(), {"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    (TextFormat("body"), {"text": "x"}, "body"),
    (TextFormat(), {"text": ["x"]}, "text"),
    (PromptFormat("Q: {{ question }}", " {{ answer }}"), {"question": "q"}, "answer"),
])
def test_missing_or_mistyped_field_is_named(tmp_path: Path, fmt: object, record: dict, field: str) -> None:
    with pytest.raises(RecordError) as raised:
        record_key(record, fmt)
    assert raised.value.field == field
    f = write_jsonl(tmp_path / "a.jsonl", [record])
    with pytest.raises(MixError) as exc:
        count_source(spec(f, format=fmt, on_error="fail", dedup=True))
    assert f"`{field}`" in str(exc.value) and f"{f}:1" in str(exc.value)


def test_template_syntax_error_names_the_source(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [{"q": "x"}])
    with pytest.raises(MixError) as exc:
        count_source(spec(f, format=PromptFormat("{{ q ", "{{ a }}")))
    assert code_of(exc) == "E508" and "`src`" in str(exc.value)


def test_record_key_is_canonical() -> None:
    a = {"messages": [{"role": "user", "content": "é"}], "id": 1}
    b = {"id": 2, "messages": [{"content": "é", "role": "user"}]}
    assert record_key(a, ChatFormat()) == record_key(b, ChatFormat()) == \
        "l1:d2:s7:contents2:és4:roles4:user".encode()
    fmt = PromptFormat("Q: {{ q }}\n", "{{ a }}")
    templates = Templates.for_spec(spec("x", format=fmt))
    assert record_key({"q": "1", "a": 2}, fmt, templates) == b"l2:s5:Q: 1\ns1:2"


@pytest.mark.parametrize("a, b", [
    ("ab", ["ab"]), (["a", "b"], ["ab"]), ({"a": "b"}, ["a", "b"]), ("1", 1), (1, 1.0), (None, "null"),
    ({"k": ["x"]}, {"k": "x"}), (["s1:a"], ["s1:", "a"]), ("é", "e"), (True, 1),
])
def test_canonical_bytes_tell_apart_what_differs(a: object, b: object) -> None:
    assert canonical_bytes(a) != canonical_bytes(b)
    assert canonical_bytes(a) == canonical_bytes(json.loads(json.dumps(a)))


def test_dedup_keeps_first_occurrence(tmp_path: Path) -> None:
    records = [chat(0), chat(1), chat(0), {**chat(1), "id": 9}, chat(2)]
    f = write_jsonl(tmp_path / "a.jsonl", records)
    c = count_source(spec(f, dedup=True))
    assert (c.raw, c.duplicates, c.size, c.exact_pass) == (5, 2, 3, True)


def test_holdout_fraction_is_roughly_right(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [{"text": f"record {i}"} for i in range(10_000)])
    c = count_source(spec(f, format=TextFormat(), holdout=Fraction(1, 10), seed=3))
    assert 850 <= c.held_out <= 1150 and c.size == 10_000 - c.held_out


def test_in_holdout_extremes_and_seed() -> None:
    keys = [str(i).encode() for i in range(500)]
    assert not any(in_holdout(k, Fraction(0), 1) for k in keys)
    assert all(in_holdout(k, Fraction(1), 1) for k in keys)
    picks = {seed: [in_holdout(k, Fraction(1, 2), seed) for k in keys] for seed in (1, 2)}
    assert picks[1] != picks[2]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    old=st.lists(st.text(max_size=12), min_size=1, max_size=40),
    new=st.lists(st.text(max_size=12), max_size=40),
    seed=st.integers(0, 2**40),
)
def test_appending_records_does_not_move_old_ones_in_or_out(
    tmp_path: Path, old: list[str], new: list[str], seed: int,
) -> None:
    f = tmp_path / "h.jsonl"
    s = spec(f, format=TextFormat(), holdout=Fraction(1, 3), seed=seed)

    def held(n: int) -> list[bool]:
        keys = [record_key(r, s.format) for _, r in iter_records(s)][:n]
        return [in_holdout(k, s.holdout, s.seed) for k in keys]

    write_jsonl(f, [{"text": t} for t in old])
    before = held(len(old))
    write_jsonl(f, [{"text": t} for t in old + new])
    assert held(len(old)) == before


def test_limit(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [chat(i) for i in range(10)])
    fast = count_source(spec(f, limit=4))
    assert (fast.raw, fast.limited, fast.size, fast.exact_pass) == (10, 6, 4, False)
    full = count_source(spec(f, limit=4, holdout=Fraction(1, 2)))
    assert full.size == min(4, 10 - full.held_out) and full.limited == 10 - full.held_out - full.size
    assert count_source(spec(f, limit=50)).size == 10


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())
_message = st.one_of(
    st.fixed_dictionaries({"role": st.text(max_size=9), "content": st.text()}),  # the usual
    st.fixed_dictionaries({"role": st.text(max_size=9), "content": st.one_of(st.none(), st.integers(), st.text())},
                          optional={"name": st.text(max_size=3)}),
    st.fixed_dictionaries({"role": st.text(max_size=9), "contents": st.text()}),
    st.dictionaries(st.text(max_size=8), st.text(), max_size=4),  # strings only
    st.dictionaries(st.text(max_size=8), st.one_of(_json_scalars, st.lists(_json_scalars, max_size=3)), max_size=4),
    st.dictionaries(st.one_of(st.integers(), st.text(max_size=2)), st.text(max_size=3), max_size=4),  # from Arrow
    st.lists(st.text(max_size=3), max_size=2))  # not an object at all


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(_message, max_size=5))
def test_the_chat_key_is_the_canonical_bytes_of_the_messages(messages: list[dict]) -> None:
    """record_key's flat loop for chat messages gives exactly `canonical_bytes(messages)`."""
    from compiler.sources import _canonical_messages

    assert _canonical_messages(messages) == canonical_bytes(messages)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.binary(min_size=16, max_size=16), max_size=30),
       fraction=st.one_of(st.sampled_from([Fraction(0), Fraction(1), Fraction(1, 2**64), Fraction(2**64 - 1, 2**64)]),
                          st.fractions(min_value=0, max_value=1, max_denominator=10**30)),
       seed=st.integers(0, 2**63))
def test_holdout_mask_decides_as_in_holdout(keys: list[bytes], fraction: Fraction, seed: int) -> None:
    from compiler.sources import holdout_mask

    assert holdout_mask(b"".join(keys), 16, fraction, seed).tolist() == [in_holdout(k, fraction, seed) for k in keys]


def test_holdout_mask_at_the_exact_boundary() -> None:
    import hashlib

    from compiler.sources import holdout_mask

    key, seed = bytes(range(16)), 5
    u = int.from_bytes(hashlib.blake2b(b"5:" + key, digest_size=8).digest(), "big")
    for fraction, member in ((Fraction(u, 2**64), False), (Fraction(u + 1, 2**64), True),
                             (Fraction(3 * u, 3 * 2**64 + 1), False), (Fraction(3 * u + 1, 3 * 2**64), True)):
        assert in_holdout(key, fraction, seed) is member
        assert holdout_mask(key, 16, fraction, seed).tolist() == [member]
