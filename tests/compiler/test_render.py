"""Tests for compiler.render against transformers' own `apply_chat_template`."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.encode import load_tokenizer
from compiler.records import RecordError
from compiler.render import _SENTINEL, _SENTINEL_RE, ChatTemplate, Renderer, TemplateMismatch, _split
from mixlang.program import ChatFormat

CONVERSATIONS = [
    [{"role": "user", "content": "  hi  "}, {"role": "assistant", "content": "hello there"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"},
     {"role": "assistant", "content": "6, twice 3"}],
]


def renderer(directory: pathlib.Path) -> Renderer:
    setup = load_tokenizer(str(directory))
    return Renderer(ChatFormat("messages"), ChatTemplate(setup.chat_template, setup.variables))


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_segments_join_to_what_transformers_renders(templated: pathlib.Path, messages: list[dict]) -> None:
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(templated).apply_chat_template(messages, tokenize=False)
    segments = renderer(templated).segments({"messages": messages})
    assert "".join(text for text, _ in segments) == expected
    assert [text for text, loss in segments if loss] == [m["content"] for m in messages if m["role"] == "assistant"]


def test_a_template_that_raises_makes_the_record_broken(templated: pathlib.Path) -> None:
    messages = [{"role": "tool", "content": "{}"}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(RecordError, match="tools are not supported"):
        renderer(templated).segments({"messages": messages})


def _split_by_regex(rendered: str, contents: list[str]) -> list[tuple[str, bool]]:
    """The splitter as it was first written: one regular expression over the whole text."""
    parts = _SENTINEL_RE.split(rendered)
    if parts[1::2] != [str(k) for k in range(len(contents))]:
        raise TemplateMismatch("not once")
    segments = []
    for k, text in enumerate(parts[0::2]):
        if text:
            segments.append((text, False))
        if k < len(contents) and contents[k]:
            segments.append((contents[k], True))
    return segments


_PIECES = st.sampled_from(["", "a", "<|im_start|>", "\n", "\ue000", "\ue001", "7", "\ue0009", "\ue0001\ue001"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_PIECES, max_size=4).map("".join), min_size=1, max_size=5),
       st.lists(st.sampled_from(["", "x", "yz"]), max_size=4), st.permutations(range(4)), st.booleans())
def test_the_splitter_cuts_as_a_regular_expression_would(texts, contents, order, scramble):
    """Templates that show each assistant message once in order, and templates that drop,
    repeat or reorder them; text around them that looks partly like a sentinel."""
    contents = contents[: len(texts) - 1]
    marks = [_SENTINEL.format(k) for k in range(len(contents))]
    if scramble and marks:
        marks = [marks[i % len(marks)] for i in order[: len(marks)]]
    rendered = texts[0] + "".join(m + t for m, t in zip(marks, texts[1:]))
    try:
        expected = _split_by_regex(rendered, contents)
    except TemplateMismatch:
        with pytest.raises(TemplateMismatch):
            _split(rendered, contents)
        return
    assert _split(rendered, contents) == expected


def test_a_template_that_trims_assistant_messages_is_a_clear_error(tmp_path: pathlib.Path, templated: pathlib.Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    import json
    import shutil

    from runner.cli import main

    trimming = tmp_path / "trimming"
    shutil.copytree(templated, trimming)
    config = json.loads((trimming / "tokenizer_config.json").read_text())
    if "chat_template" in config:
        config["chat_template"] = config["chat_template"].replace("{{ message['content'] }}{{ eos_token }}",
                                                                  "{{ message['content'] | trim }}{{ eos_token }}")
        (trimming / "tokenizer_config.json").write_text(json.dumps(config))
    else:
        jinja = trimming / "chat_template.jinja"
        jinja.write_text(jinja.read_text().replace("{{ message['content'] }}{{ eos_token }}",
                                                   "{{ message['content'] | trim }}{{ eos_token }}"))
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": " hello "}]}) + "\n")
    spec = tmp_path / "m.mix"
    spec.write_text(f'source c {{\n  path "chat.jsonl"\n  format chat(messages = "messages")\n}}\n\n'
                    f'mix m {{\n  tokenizer "{trimming}"\n  seq_len 64\n  take c 100%\n}}\n')
    for jobs in ("1", "2"):
        assert main(["compile", str(spec), "--jobs", jobs]) == 1
        err = capsys.readouterr().err
        assert "E703" in err and "changes assistant contents" in err and "Traceback" not in err


def test_a_record_holding_the_sentinel_character_is_broken_not_the_template(templated: pathlib.Path) -> None:
    messages = [{"role": "user", "content": "look: \ue0000\ue001"}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(RecordError, match="U\\+E000"):
        renderer(templated).segments({"messages": messages})
