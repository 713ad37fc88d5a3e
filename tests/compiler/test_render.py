"""Tests for compiler.render against transformers' own `apply_chat_template`."""

from __future__ import annotations

import pathlib

import pytest

from compiler.encode import load_tokenizer
from compiler.records import RecordError
from compiler.render import ChatTemplate, Renderer
from mixlang.program import ChatFormat

# Uses what real templates use: a global function (raise_exception), a special-token
# variable (bos_token), loop state, a default system prompt, and a trimmed content.
TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] != 'system' %}<<SYS>>You are helpful.<</SYS>>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}{{ raise_exception('tools are not supported') }}{% endif %}"
    "[{{ loop.index }}:{{ message['role'] }}] "
    "{% if message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ message['content'] | trim }}{% endif %}\n"
    "{% endfor %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "  hi  "}, {"role": "assistant", "content": "hello there"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"},
     {"role": "assistant", "content": "6, twice 3"}],
]


@pytest.fixture(scope="module")
def templated(tiny_model: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = TEMPLATE
    out = tmp_path_factory.mktemp("templated")
    tok.save_pretrained(out)
    return out


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
