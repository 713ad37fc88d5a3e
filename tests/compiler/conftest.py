"""Fixtures for the compiler tests."""

from __future__ import annotations

import pathlib

import pytest

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


@pytest.fixture(scope="session")
def templated(tiny_model: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """The tiny model's tokenizer with TEMPLATE as its chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.chat_template = TEMPLATE
    out = tmp_path_factory.mktemp("templated")
    tok.save_pretrained(out)
    return out
