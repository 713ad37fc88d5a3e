"""Tests for compiler.render against transformers' own `apply_chat_template`."""

from __future__ import annotations

import pathlib

import pytest

from compiler.encode import load_tokenizer
from compiler.records import RecordError
from compiler.render import ChatTemplate, Renderer
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
