"""Tests for mixlang.check (and check_blocks, check_sources, check_runs, values).

Chunked data files first (starlark-go style): `testdata/check/*.mix` hold snippets separated by a
line `---`; a line `### CODE "substring" ["substring"...]` expects one diagnostic with that code,
whose message (with its help) contains every substring, on the nearest line above it that is not
a `###` line. Each chunk must report exactly its expectations, errors and warnings alike. Then typed values of valid
programs, and checks across imported files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest

from mixlang.check import CheckResult, check
from mixlang.loader import load
from mixlang.parser import parse
from mixlang.program import (ChatFormat, CheckedProgram, GateSpec, PromptFormat, ResourcesSpec,
                             SizeSpec, TakeSpec, TextFormat)

F = Fraction
CHECK_DATA = Path(__file__).parent / "testdata" / "check"
_EXPECT = re.compile(r'^\s*###\s+([EW]\d{3})((?:\s+"[^"]*")+)\s*$')


# -- chunked data files ---------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    path: Path
    first_line: int
    text: str  # the whole file's line numbering: earlier lines and `###` lines are blank
    expected: tuple[tuple[int, str, tuple[str, ...]], ...]  # (line, code, substrings)

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.first_line}"


def read_chunks(path: Path) -> list[Chunk]:
    lines = path.read_text(encoding="utf-8").split("\n")
    chunks, start = [], 0
    for i, line in enumerate(lines + ["---"]):
        if line.strip() == "---":
            chunks.append(_chunk(path, lines, start, i))
            start = i + 1
    return [c for c in chunks if c.text.strip()]


def _chunk(path: Path, lines: list[str], start: int, stop: int) -> Chunk:
    text = [""] * start
    expected = []
    for number in range(start, stop):
        match = _EXPECT.match(lines[number])
        if match is None:
            assert not lines[number].lstrip().startswith("###"), f"{path.name}:{number + 1}: malformed expectation"
            text.append(lines[number])
            continue
        text.append("")
        target = next((n for n in range(number - 1, start - 1, -1) if not _EXPECT.match(lines[n])), None)
        assert target is not None, f"{path.name}:{number + 1}: expectation before any line"
        expected.append((target + 1, match.group(1), tuple(re.findall(r'"([^"]*)"', match.group(2)))))
    return Chunk(path, start + 1, "\n".join(text), tuple(expected))


def reported(chunk: Chunk) -> list[tuple[int, str, str]]:
    """What the parser and checker say about a chunk: (line, code, message and help)."""
    parsed = parse(str(chunk.path), chunk.text)
    diagnostics = list(parsed.diagnostics)
    if parsed.module is not None:
        diagnostics += check([parsed.module]).diagnostics
    out = []
    for d in diagnostics:
        assert d.span is not None, f"{d.code} {d.message!r} has no location"
        assert d.span.path == str(chunk.path)
        out.append((d.span.line, d.code, d.message + (f" (help: {d.help})" if d.help else "")))
    return out


def unmatched(expected: tuple, found: list) -> tuple[list, list]:
    missing, extra = list(expected), []
    for line, code, text in found:
        hit = next((e for e in missing if e[:2] == (line, code) and all(x in text for x in e[2])), None)
        if hit is None:
            extra.append((line, code, text))
        else:
            missing.remove(hit)
    return missing, extra


ALL_CHUNKS = [c for p in sorted(CHECK_DATA.glob("*.mix")) for c in read_chunks(p)]


@pytest.mark.parametrize("chunk", ALL_CHUNKS, ids=[c.id for c in ALL_CHUNKS])
def test_chunk(chunk: Chunk) -> None:
    missing, extra = unmatched(chunk.expected, reported(chunk))
    where = f"{chunk.path.name}:"
    report = [f"{where}{ln}: missing {code} containing {' and '.join(map(repr, text))}"
              for ln, code, text in missing]
    report += [f"{where}{ln}: unexpected {code}: {text}" for ln, code, text in extra]
    assert not report, "\n".join(report)


def test_the_chunk_files_cover_every_code_the_checker_reports() -> None:
    package = Path(__file__).parents[2] / "mixlang"
    source = "".join((package / f).read_text() for f in
                     ("check.py", "check_blocks.py", "check_sources.py", "check_runs.py", "values.py"))
    known = set(re.findall(r'"([EW]\d{3})"', source))
    covered = {code for c in ALL_CHUNKS for _, code, _ in c.expected}
    assert known - covered == set()


def test_chunk_reader_keeps_line_numbers() -> None:
    text = 'mix m {\n  seed "x"\n### E201 "expects"\n}\n---\nsource a {\n\n  bad 1\n### E202 "x"\n### E203 "y" "z"\n}\n'
    path = CHECK_DATA / "inline.mix"
    first, second = (_chunk(path, text.split("\n"), a, b) for a, b in ((0, 4), (5, 11)))
    assert first.expected == ((2, "E201", ("expects",)),)
    assert second.expected == ((8, "E202", ("x",)), (8, "E203", ("y", "z")))
    assert second.text.split("\n")[7] == "  bad 1" and second.text.split("\n")[8] == ""


# -- valid programs -------------------------------------------------------------------------


def checked(text: str, path: str = "/proj/main.mix") -> CheckedProgram:
    parsed = parse(path, text)
    assert parsed.module is not None, parsed.diagnostics
    result = check([parsed.module])
    assert [d for d in result.diagnostics if d.is_error] == [], result.diagnostics
    assert result.program is not None
    return result.program


FULL = '''
source voc {
  path     "data/voc/train-*.jsonl"
  split    "train"
  format   chat(messages = "turns")
  dedup    exact
  holdout  2%
  limit    50K samples
  on_error skip
  overlong truncate
  seed     3
}
source general {
  path    "hf:org/general"
  format  prompt(prompt = "Q: {{ question }}\\nA:", response = " {{ answer }}")
  holdout 0.1
}
source plain {
  path   "../plain"
  format text()
}
mix blend {
  tokenizer "Qwen/Qwen3-0.6B"
  seq_len   4K
  packing   true
  seed      17
  total     40M tokens
  by        tokens
  take voc     75%
  take general rest max_epochs 2
  take plain   0
}
mix tempered {
  tokenizer   "tok"
  seq_len     512
  temperature 0.5
  take voc 10%
  take general
  take plain max_epochs 1.5
}
train sft {
  data        blend
  model       "Qwen/Qwen3-0.6B"
  epochs      2
  lr          1e-5
  batch       64
  micro_batch 4
  warmup      3%
  precision   fp16
  resources {
    nodes 2
    gpus_per_node 8
    cpus_per_task 16
    mem "512G"
    time "1-12:00:00"
    partition "gpu"
    account "research"
    exclusive true
  }
}
train small {
  data  tempered
  model "models/tiny"
}
eval sft {
  metric f1   = classify(data = "data/test.jsonl", prompt = "{{ text }}", label = "category", average = macro, labels = ["a", "b"])
  metric mmlu = choice(data = "/abs/mmlu.jsonl")
  metric gl   = loss(source = general)
  gate f1 >= 0.50
  gate mmlu >= base - 0.02
  gate gl <= base * 1.10
  gate gl < base
  gate f1 > base + 1%
  gate mmlu >= base -0.5
  resources { gpus_per_node 1 time 60 }
}
sweep share {
  vary blend.voc in [100%, 75%, 0.5]
  vary tempered.voc in [0%]
}
'''


@pytest.fixture(scope="module")
def program() -> CheckedProgram:
    return checked(FULL)


def test_sources_are_typed(program: CheckedProgram) -> None:
    voc, general, plain = program.sources
    assert voc.name == "voc" and voc.path == "/proj/data/voc/train-*.jsonl"
    assert voc.format == ChatFormat("turns") and voc.split == "train" and voc.dedup
    assert voc.holdout == F(1, 50) and isinstance(voc.holdout, Fraction)
    assert (voc.limit, voc.on_error, voc.overlong, voc.seed) == (50_000, "skip", "truncate", 3)
    assert general.path == "hf:org/general" and general.is_hub
    assert general.format == PromptFormat("Q: {{ question }}\nA:", " {{ answer }}")
    assert general.holdout == F(1, 10)
    assert plain.path == "/plain" and plain.format == TextFormat("text")
    assert (plain.split, plain.dedup, plain.holdout, plain.limit, plain.on_error, plain.overlong,
            plain.seed) == (None, False, 0, None, "fail", "drop", 0)
    assert voc.span.line == 2


def test_mixes_are_typed(program: CheckedProgram) -> None:
    blend = program.mix("blend")
    assert blend.takes == (TakeSpec("voc", F(3, 4)), TakeSpec("general", None, True, F(2)),
                           TakeSpec("plain", F(0)))
    assert isinstance(blend.takes[0].share, Fraction)
    assert (blend.tokenizer, blend.seq_len, blend.packing, blend.seed) == ("Qwen/Qwen3-0.6B", 4000, True, 17)
    assert blend.total == SizeSpec(40_000_000, "tokens") and blend.by == "tokens"
    assert blend.temperature is None
    tempered = program.mix("tempered")
    assert tempered.takes == (TakeSpec("voc", F(1, 10)), TakeSpec("general"), TakeSpec("plain", max_epochs=F(3, 2)))
    assert tempered.temperature == F(1, 2)
    assert (tempered.tokenizer, tempered.packing, tempered.seed, tempered.total, tempered.by) == (
        "tok", False, 0, None, "samples")


def test_trains_are_typed(program: CheckedProgram) -> None:
    sft, small = program.trains
    assert (sft.name, sft.data, sft.model) == ("sft", "blend", "Qwen/Qwen3-0.6B")
    assert (sft.epochs, sft.lr, sft.batch, sft.micro_batch, sft.warmup, sft.precision) == (
        2, F(1, 100_000), 64, 4, F(3, 100), "fp16")
    assert sft.resources == ResourcesSpec((
        ("nodes", 2), ("gpus_per_node", 8), ("cpus_per_task", 16), ("mem", "512G"),
        ("time", "1-12:00:00"), ("partition", "gpu"), ("account", "research"), ("exclusive", True)))
    assert sft.resources.get("nodes") == 2 and sft.resources.get("qos") is None
    assert (small.epochs, small.lr, small.batch, small.micro_batch, small.warmup, small.precision) == (
        1, F(1, 100_000), 8, 1, 0, "bf16")
    assert small.resources == ResourcesSpec()
    assert small.model == "models/tiny"  # no such directory: a hub name, as written


def test_evals_are_typed(program: CheckedProgram) -> None:
    (ev,) = program.evals
    assert ev.name == "sft"
    f1, mmlu, gl = ev.metrics
    assert (f1.name, f1.kind) == ("f1", "classify")
    assert dict(f1.args) == {"data": "/proj/data/test.jsonl", "prompt": "{{ text }}", "label": "category",
                             "average": "macro", "labels": ("a", "b")}
    assert mmlu.arg("data") == "/abs/mmlu.jsonl" and gl.args == (("source", "general"),)
    assert ev.gates == (
        GateSpec("f1", ">=", F(1, 2)),
        GateSpec("mmlu", ">=", F(1, 50), "-", True),
        GateSpec("gl", "<=", F(11, 10), "*", True),
        GateSpec("gl", "<", None, None, True),
        GateSpec("f1", ">", F(1, 100), "+", True),
        GateSpec("mmlu", ">=", F(1, 2), "-", True),
    )
    assert [g.threshold(0.5) for g in ev.gates] == pytest.approx([0.5, 0.48, 0.55, 0.5, 0.51, 0.0])
    assert ev.resources == ResourcesSpec((("gpus_per_node", 1), ("time", 60)))


def test_sweeps_are_typed(program: CheckedProgram) -> None:
    (sweep,) = program.sweeps
    assert sweep.name == "share"
    assert [(v.mix, v.take, v.values) for v in sweep.varies] == [
        ("blend", "voc", (F(1), F(3, 4), F(1, 2))), ("tempered", "voc", (F(0),))]


def test_program_path_is_the_root_file(program: CheckedProgram) -> None:
    assert program.path == "/proj/main.mix"


def test_an_empty_program() -> None:
    assert check([]).program == CheckedProgram("")
    assert checked("") == CheckedProgram("/proj/main.mix")


def test_an_eval_shares_its_trains_name() -> None:
    program = checked('source s {\n  path "x"\n  format text()\n}\nmix m {\n  tokenizer "t"\n  seq_len 8\n'
                      "  take s 100%\n}\ntrain m2 {\n  data m\n  model \"x\"\n}\neval m2 {\n}\n")
    assert [e.name for e in program.evals] == ["m2"]


def test_shares_within_a_billionth_of_100_percent_are_accepted() -> None:
    program = checked('source a {\n  path "a"\n  format text()\n}\nsource b {\n  path "b"\n  format text()\n}\n'
                      "mix m {\n  tokenizer \"t\"\n  seq_len 8\n  take a 0.3333333333\n  take b 0.6666666666\n}\n")
    assert sum(t.share for t in program.mix("m").takes) == F(9999999999, 10**10)


def test_a_warning_does_not_stop_the_program() -> None:
    parsed = parse("/p/m.mix", 'source a {\n  path "a"\n  format text()\n}\n'
                   'mix m {\n  tokenizer "t"\n  seq_len 8\n  temperature 2\n  take a rest\n}\n')
    result = check([parsed.module])
    assert [(d.code, d.severity) for d in result.diagnostics] == [("W301", "warning")]
    assert result.program is not None and result.program.mix("m").temperature == 2


def test_errors_give_no_program() -> None:
    result = check([parse("/p/m.mix", "mix m {\n}\n").module])
    assert result.program is None and result.diagnostics


# -- across files ---------------------------------------------------------------------------


def load_and_check(root: Path, files: dict[str, str], main: str = "main.mix") -> CheckResult:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    loaded = load(str(root / main))
    assert loaded.ok, loaded.diagnostics
    return check(loaded.modules)


LIB = 'source voc {\n  path "data/voc.jsonl"\n  format chat()\n  holdout 5%\n}\n'


def test_paths_are_resolved_against_the_file_that_wrote_them(tmp_path: Path) -> None:
    (tmp_path / "lib" / "tok").mkdir(parents=True)
    result = load_and_check(tmp_path, {
        "lib/sources.mix": LIB + 'mix blend {\n  tokenizer "tok"\n  seq_len 16\n  take voc 100%\n}\n',
        "main.mix": 'import "lib/sources.mix"\ntrain t {\n  data blend\n  model "lib/tok"\n}\n'
                    'eval t {\n  metric m = choice(data = "eval/x.jsonl")\n}\n',
    })
    program = result.program
    assert program.source("voc").path == str(tmp_path / "lib" / "data" / "voc.jsonl")
    assert program.mix("blend").tokenizer == str(tmp_path / "lib" / "tok")  # an existing directory
    assert program.trains[0].model == str(tmp_path / "lib" / "tok")
    assert program.evals[0].metrics[0].arg("data") == str(tmp_path / "eval" / "x.jsonl")
    assert program.path == str(tmp_path / "main.mix")


def test_a_relative_root_still_gives_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "main.mix").write_text(LIB, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    loaded = load(os.path.join("sub", "main.mix"))
    program = check(loaded.modules).program
    assert program.source("voc").path == str(tmp_path / "sub" / "data" / "voc.jsonl")


def test_names_resolve_across_imports(tmp_path: Path) -> None:
    result = load_and_check(tmp_path, {
        "lib.mix": LIB,
        "main.mix": 'import "lib.mix"\nmix m {\n  tokenizer "t"\n  seq_len 16\n  take vco 100%\n}\n',
    })
    (d,) = result.diagnostics
    assert (d.code, d.span.line, os.path.basename(d.span.path)) == ("E107", 5, "main.mix")
    assert d.help == "did you mean `voc`?"


def test_a_name_defined_in_two_files(tmp_path: Path) -> None:
    result = load_and_check(tmp_path, {"lib.mix": LIB, "main.mix": 'import "lib.mix"\n\n' + LIB})
    (d,) = result.diagnostics
    assert (d.code, d.span.line, d.span.col, os.path.basename(d.span.path)) == ("E106", 1, 8, "lib.mix")
    (label,) = d.labels
    assert (label.message, label.span.line, os.path.basename(label.span.path)) == (
        "first defined here", 3, "main.mix")
    assert result.program is None


def test_an_unreadable_source_elsewhere_is_not_blamed_on_the_eval(tmp_path: Path) -> None:
    result = load_and_check(tmp_path, {
        "main.mix": 'source s {\n  path 1\n  format text()\n  holdout 1%\n}\n'
                    'eval t {\n  metric l = loss(source = s)\n}\n',
    })
    assert sorted(d.code for d in result.diagnostics) == ["E201", "E404"]


# -- robustness -----------------------------------------------------------------------------


def codes_of(text: str) -> list[tuple[int, str]]:
    parsed = parse("/p/m.mix", text)
    assert parsed.module is not None, parsed.diagnostics
    return [(d.span.line, d.code) for d in check([parsed.module]).diagnostics]


@pytest.mark.parametrize("depth", [2000, 20_000])
def test_a_deeply_nested_template_is_an_error_not_a_crash(depth: int) -> None:
    template = "{{ " + "(" * depth + "x" + ")" * depth + " }}"
    text = (f'source a {{\n  path "a"\n  format prompt(prompt = "{template}", response = "r")\n}}\n'
            f'eval t {{\n  metric m = classify(data = "d", prompt = "{template}", label = "y")\n}}\n')
    assert codes_of(text) == [(3, "E201"), (5, "E404"), (6, "E407")]
