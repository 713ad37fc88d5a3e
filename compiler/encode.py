"""Tokenizing records: the hot path of a compile.

Takes batches of raw records (JSONL lines as bytes, or dicts from other formats) and produces
`EncodedBatch`es: token ids, loss masks, and per record its length, loss-token count, content
digest, status and line. It runs in worker processes, each with one single-threaded
`tokenizers.Tokenizer` built from the setup the main process loaded once (`load_tokenizer`).
Each record is rendered into segments (`compiler.render`), all segments of a batch are encoded
in one `encode_batch_fast` call without special tokens, and the ids are laid out with numpy.
A sample is: the tokenizer's leading special tokens (no loss; none for chat, whose template
writes its own), the segments, then the end-of-sequence token, which carries loss.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from compiler.records import RecordError, RecordRef
from compiler.render import ChatTemplate, Renderer
from compiler.sources import record_digest, record_key
from mixlang.diagnostics import MixError, error
from mixlang.program import ChatFormat, FormatSpec

STATUS_OK, STATUS_BROKEN = 0, 1
RECORD_DTYPE = np.dtype([("offset", "<i8"), ("length", "<i4"), ("loss", "<i4"), ("line", "<i8"),
                         ("status", "i1"), ("digest", "V16")])


@dataclass(frozen=True)
class TokenizerSetup:
    """Everything a worker needs to tokenize as the named tokenizer does, and its identity."""

    name: str
    backend_json: str = field(repr=False)
    chat_template: str | None
    variables: tuple[tuple[str, str], ...]
    eos_id: int
    prefix_ids: tuple[int, ...]
    vocab_size: int

    @property
    def identity(self) -> str:
        """sha256 over what decides the token ids: the tokenizer model and chat template."""
        payload = json.dumps([self.backend_json, self.chat_template, self.variables, self.eos_id,
                              self.prefix_ids], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    @property
    def chat_template_sha256(self) -> str | None:
        return hashlib.sha256(self.chat_template.encode()).hexdigest() if self.chat_template else None


def load_tokenizer(name: str) -> TokenizerSetup:
    """Load a tokenizer as transformers does (`AutoTokenizer`); a directory or a hub name."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the user's to fix
        raise MixError(error("E701", f"cannot load tokenizer `{name}`: {str(exc).splitlines()[0][:300]}",
                             help="give a local tokenizer directory, or a hub name with network access")) from None
    if not getattr(tok, "is_fast", False) or tok.eos_token_id is None:
        raise MixError(error("E702", f"tokenizer `{name}` needs a fast (tokenizers) backend and an "
                                     "end-of-sequence token"))
    with_special = tok("x", add_special_tokens=True)["input_ids"]
    plain = tok("x", add_special_tokens=False)["input_ids"]
    prefix = tuple(with_special[: max(len(with_special) - len(plain), 0)]) if with_special[-len(plain):] == plain else ()
    variables = tuple(sorted((k, str(v)) for k, v in tok.special_tokens_map.items() if isinstance(v, str)))
    return TokenizerSetup(name, tok.backend_tokenizer.to_str(), tok.chat_template, variables,
                          int(tok.eos_token_id), prefix, len(tok))


@dataclass(frozen=True)
class EncodedBatch:
    ids: np.ndarray  # uint32, every ok record's tokens back to back
    mask: np.ndarray  # uint8, 1 where the token carries loss
    records: np.ndarray  # RECORD_DTYPE, one per record (offset relative to this batch)
    errors: tuple[str, ...]  # "file:line: field `x`: message" for broken records


class Encoder:
    """One per worker process and source."""

    def __init__(self, setup: TokenizerSetup, fmt: FormatSpec) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(setup.backend_json)
        chat = ChatTemplate(setup.chat_template, setup.variables) if setup.chat_template else None
        self.renderer = Renderer(fmt, chat)
        self.fmt = fmt
        self.eos = setup.eos_id
        self.prefix = () if isinstance(fmt, ChatFormat) else setup.prefix_ids

    def encode(self, batch: Sequence[tuple[RecordRef, Any]]) -> EncodedBatch:
        rendered, records, errors = [], np.zeros(len(batch), RECORD_DTYPE), []
        for i, (ref, raw) in enumerate(batch):
            records[i]["line"] = ref.line
            try:
                record = _parse(raw)
                records[i]["digest"] = record_digest(record_key(record, self.fmt, self.renderer.templates))
                rendered.append((i, self.renderer.segments(record)))
            except RecordError as exc:
                records[i]["status"] = STATUS_BROKEN
                errors.append(f"{ref}: {exc}")
        ids, mask = self._tokenize(rendered, records)
        return EncodedBatch(ids, mask, records, tuple(errors))

    def _tokenize(self, rendered: list[tuple[int, list]], records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = [text for _, segments in rendered for text, _ in segments]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False) if texts else []
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        flags = np.fromiter((loss for _, segments in rendered for _, loss in segments), np.uint8, len(texts))
        seg_ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), np.uint32, int(lengths.sum()))
        seg_mask = np.repeat(flags, lengths)
        return self._assemble(rendered, records, seg_ids, seg_mask, lengths)

    def _assemble(self, rendered: list, records: np.ndarray, seg_ids: np.ndarray, seg_mask: np.ndarray,
                  lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pieces_ids, pieces_mask, prefix = [], [], np.asarray(self.prefix, np.uint32)
        position = offset = segment = 0
        for i, segments in rendered:
            n = int(lengths[segment:segment + len(segments)].sum())
            segment += len(segments)
            body_ids, body_mask = seg_ids[position:position + n], seg_mask[position:position + n]
            position += n
            eos_loss = np.uint8(1 if body_mask.any() else 0)
            ids = np.concatenate([prefix, body_ids, np.asarray([self.eos], np.uint32)])
            mask = np.concatenate([np.zeros(len(prefix), np.uint8), body_mask, np.asarray([eos_loss], np.uint8)])
            pieces_ids.append(ids)
            pieces_mask.append(mask)
            records[i]["offset"], records[i]["length"], records[i]["loss"] = offset, len(ids), int(mask.sum())
            offset += len(ids)
        if not pieces_ids:
            return np.zeros(0, np.uint32), np.zeros(0, np.uint8)
        return np.concatenate(pieces_ids), np.concatenate(pieces_mask)


def _parse(raw: Any) -> dict:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, Exception):
        raise raw if isinstance(raw, RecordError) else RecordError(None, str(raw))
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise RecordError(None, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RecordError(None, f"expected a JSON object, found {type(value).__name__}")
    return value


# ---- worker processes ---------------------------------------------------------------------

_ENCODER: Encoder | None = None


def init_worker(setup: TokenizerSetup, fmt: FormatSpec) -> None:
    global _ENCODER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _ENCODER = Encoder(setup, fmt)


def encode_in_worker(batch: Sequence[tuple[RecordRef, Any]]) -> EncodedBatch:
    assert _ENCODER is not None, "init_worker was not called"
    return _ENCODER.encode(batch)
