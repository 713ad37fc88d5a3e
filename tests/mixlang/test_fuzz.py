"""Fuzz: no input, however malformed, makes `mixc check`, `fmt` or `plan` raise a traceback.

Three generators: mutations of the shipped example specs (deleted, repeated, swapped and
inserted pieces drawn from the language's own tokens and from hostile ones: huge numbers,
deep brackets, stray quotes, NUL and non-UTF-8 bytes), random text, and random bytes. Every
case goes through the real CLI entry point on a real file. When the text parses, the formatter
must also keep its meaning (same syntax tree) and be idempotent.

CI runs a few thousand cases; `scripts/fuzz.py --cases 100000` runs as many as asked.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixlang.fmt import format_module
from mixlang.parser import parse
from runner.cli import main

CASES = int(os.environ.get("MIXLANG_FUZZ_CASES", "2000"))
EXAMPLES = sorted((pathlib.Path(__file__).parents[2] / "examples").glob("*.mix"))
SEEDS = [p.read_text(encoding="utf-8") for p in EXAMPLES]
TOKENS = [
    "source", "mix", "train", "eval", "sweep", "import", "take", "rest", "max_epochs", "metric",
    "gate", "vary", "in", "base", "resources", "true", "false", "tokens", "samples", "{", "}",
    "(", ")", "[", "]", ",", "=", ".", ">=", "<", "+", "-", "*", "%", "#", "\n", " ", '"', "\\",
    "75%", "1e-5", "40M", "2.5B", "1_000", "-3", "0", "1e999999999", "9" * 5000, "0." + "0" * 400 + "1",
    "[" * 2000, "(" * 2000, "{" * 500, '"' + "x" * 100, "\x00", "\ufeff", "\u00e9", "\r\n", "\t",
    "chat(messages = \"m\")", "prompt(prompt = \"{{ q \", response = \"{% if %}\")", "import \"x.mix\"",
    "import \"\"", "import \"/\"", "take a 150", "by bytes", "total 40M tokens", "seq_len \"4096\"",
]


def _mutate(text: str, data: st.DataObject) -> str:
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(text)))
        j = data.draw(st.integers(i, min(len(text), i + 80)))
        op = data.draw(st.sampled_from(["delete", "insert", "repeat", "swap", "truncate"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + data.draw(st.sampled_from(TOKENS)) + text[i:]
        elif op == "repeat":
            text = text[:j] + text[i:j] * data.draw(st.integers(2, 20)) + text[j:]
        elif op == "swap":
            lines = text.split("\n")
            a, b = data.draw(st.integers(0, len(lines) - 1)), data.draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        else:
            text = text[:i]
    return text


def _run(args: list[str]) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    return code


def _exercise(path: pathlib.Path, payload: bytes) -> None:
    path.write_bytes(payload)
    assert _run(["check", str(path)]) in (0, 1)
    assert _run(["check", "--format", "concise", str(path)]) in (0, 1)
    assert _run(["fmt", "--check", str(path)]) in (0, 1)
    assert _run(["plan", str(path)]) in (0, 1)
    try:
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError:
        return
    result = parse(str(path), text)
    if result.module is not None:
        formatted = format_module(result.module, text)
        again = parse(str(path), formatted)
        assert again.module == result.module, formatted
        assert format_module(again.module, formatted) == formatted


_SETTINGS = settings(max_examples=CASES, deadline=None, derandomize=CASES <= 5000,
                     suppress_health_check=list(HealthCheck))


@_SETTINGS
@given(data=st.data())
def test_mutated_specs_never_crash(tmp_path_factory, data: st.DataObject) -> None:
    text = _mutate(data.draw(st.sampled_from(SEEDS)), data)
    directory = tmp_path_factory.mktemp("fuzz", numbered=True)
    _exercise(directory / "spec.mix", text.encode("utf-8", "surrogatepass"))


@settings(_SETTINGS, max_examples=max(CASES // 4, 50))
@given(text=st.lists(st.sampled_from(TOKENS) | st.characters(), max_size=120).map("".join))
def test_random_text_never_crashes(tmp_path_factory, text: str) -> None:
    directory = tmp_path_factory.mktemp("fuzz", numbered=True)
    _exercise(directory / "spec.mix", text.encode("utf-8", "surrogatepass"))


@settings(_SETTINGS, max_examples=max(CASES // 4, 50))
@given(payload=st.binary(max_size=400))
def test_random_bytes_never_crash(tmp_path_factory, payload: bytes) -> None:
    directory = tmp_path_factory.mktemp("fuzz", numbered=True)
    _exercise(directory / "spec.mix", payload)
