"""Rendering a record into text segments that carry loss or not.

Takes a source's format and the tokenizer's setup; produces, per record, a list of
`(text, has_loss)` segments. Each segment is tokenized on its own, so the loss mask is exact
even where a tokenizer's merges would cross the prompt/response boundary: the loss-bearing
tokens decode to exactly the response (or assistant) text.

- `text(field)`: one segment with loss.
- `prompt(prompt, response)`: the rendered prompt (no loss), then the rendered response (loss).
- `chat(messages)`: the tokenizer's own chat template, compiled and rendered as transformers
  does (`apply_chat_template`, no generation prompt, the special tokens as variables); assistant
  contents carry loss, everything else does not. A tokenizer without a chat template gets the
  documented default: `<|ROLE|>\n` + content + `\n` per message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from compiler.records import RecordError
from compiler.sources import Templates, _messages, _text
from mixlang.program import ChatFormat, FormatSpec, PromptFormat

Segments = list[tuple[str, bool]]

# Private-use characters stand in for assistant contents while the template renders, so the
# segments can be cut exactly where each content sits in the rendered conversation.
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
_SENTINELS = tuple(_SENTINEL.format(k) for k in range(64))
_SENTINEL_START = "\ue000"


def _sentinel(k: int) -> str:
    """What stands in for the k-th assistant content while the template renders."""
    return _SENTINELS[k] if k < len(_SENTINELS) else _SENTINEL.format(k)
_VERIFY_FIRST = 100  # records per process whose segments are checked against a plain render


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    variables: tuple[tuple[str, str], ...]  # bos_token, eos_token... as transformers passes them


class Renderer:
    """One per source and process; `segments(record)` raises RecordError on a bad record."""

    def __init__(self, fmt: FormatSpec, chat: ChatTemplate | None) -> None:
        self.fmt = fmt
        self.templates = _templates(fmt)
        self.chat = chat
        self._compiled: Any = None
        self._variables: dict[str, Any] = {}
        self._verified = 0

    def segments(self, record: dict) -> Segments:
        if isinstance(self.fmt, PromptFormat):
            prompt, response = self.templates.render(record)
            return [(prompt, False), (response, True)]
        if isinstance(self.fmt, ChatFormat):
            return self._chat(_messages(record, self.fmt.messages))
        return [(_text(record, self.fmt.field), True)]

    def _chat(self, messages: list[dict]) -> Segments:
        if not any(m["role"] == "assistant" for m in messages):
            raise RecordError(self.fmt.messages, "has no assistant message to learn from")
        if self.chat is None:
            return _default_chat(messages)
        contents: list[str] = []
        marked = []
        for m in messages:
            if m["role"] == "assistant":
                k = len(contents)
                marked.append({**m, "content": _sentinel(k)})
                contents.append(m["content"])
            else:
                marked.append(m)
        try:
            segments = _split(self._render(marked), contents)
        except TemplateMismatch:
            if any(_SENTINEL_START in str(m.get("content")) for m in messages):
                raise RecordError(self.fmt.messages, "holds the private-use character U+E000, which marks "
                                                     "assistant messages while the chat template renders") from None
            raise
        if self._verified < _VERIFY_FIRST:
            self._verify(messages, segments)
        return segments

    def _render(self, messages: list[dict]) -> str:
        """The template rendered as `apply_chat_template` renders it, with the same variables;
        the context is made from one prepared dict (the template's globals included, as jinja2
        documents for `new_context(shared=True)`), twice as fast as `Template.render`."""
        if self._compiled is None:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            self._compiled = _compile_jinja_template(self.chat.source)
            self._variables = {**self._compiled.globals, "tools": None, "documents": None,
                               "add_generation_prompt": False, **dict(self.chat.variables)}
        try:
            context = self._compiled.new_context({**self._variables, "messages": messages}, shared=True)
            return "".join(self._compiled.root_render_func(context))
        except Exception as exc:  # noqa: BLE001 - the template is the tokenizer author's code
            raise RecordError(self.fmt.messages, f"the chat template failed: {exc}") from None

    def _verify(self, messages: list[dict], segments: Segments) -> None:
        self._verified += 1
        if "".join(text for text, _ in segments) != self._render(messages):
            raise TemplateMismatch(
                "the tokenizer's chat template changes assistant contents (it trims or rewrites "
                "them), so the loss mask cannot be placed exactly")


class TemplateMismatch(Exception):
    pass


def _templates(fmt: FormatSpec) -> Templates | None:
    from compiler.sources import _compiled

    return _compiled(fmt) if isinstance(fmt, PromptFormat) else None


def _split(rendered: str, contents: list[str]) -> Segments:
    """Cut the rendered conversation where the sentinels stand and put the assistant contents
    there: sentinel k must appear after sentinel k - 1, and nothing else may look like one (a
    template that shows a message twice or not at all is refused). Found with `str.find`, which
    is several times faster than a regular expression over the whole text."""
    segments: Segments = []
    at = 0
    for k, content in enumerate(contents):
        sentinel = _sentinel(k)
        found = rendered.find(sentinel, at)
        if found < 0:
            raise TemplateMismatch(_NOT_ONCE)
        if found > at:
            segments.append((rendered[at:found], False))
        if content:
            segments.append((content, True))
        at = found + len(sentinel)
    if at < len(rendered):
        segments.append((rendered[at:], False))
    if any(_SENTINEL_START in text and _SENTINEL_RE.search(text) for text, loss in segments if not loss):
        raise TemplateMismatch(_NOT_ONCE)
    return segments


_NOT_ONCE = "the tokenizer's chat template does not show every assistant message once, in order"


def _default_chat(messages: list[dict]) -> Segments:
    segments: Segments = []
    for m in messages:
        segments.append((f"<|{m['role']}|>\n", False))
        segments.append((m["content"], m["role"] == "assistant"))
        segments.append(("\n", False))
    return [(text, loss) for text, loss in segments if text]
