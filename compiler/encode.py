"""Tokenizing records: the hot path of a compile.

Takes blocks of whole JSON Lines lines (bytes), or batches of records from other formats, and
produces `EncodedBatch`es: token ids, loss masks, and per record its length, loss-token count,
content digest, status and line. It runs in worker processes, each with one single-threaded
`tokenizers.Tokenizer` built from the setup the main process loaded once (`load_tokenizer`).
Each record is rendered into segments (`compiler.render`), all segments of a batch are encoded
in one `encode_batch_fast` call without special tokens, and the ids are laid out with numpy in
a few whole-batch operations (no per-record arrays).
A sample is: the tokenizer's leading special tokens (no loss; none for chat, whose template
writes its own), the segments, then the end-of-sequence token, which carries loss.
"""

from __future__ import annotations

import array
import dataclasses
import fcntl
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import orjson

from compiler.records import RecordError, RecordRef
from compiler.render import ChatTemplate, Renderer
from compiler.sources import record_digest, record_key
from mixlang.diagnostics import MixError, error
from mixlang.program import ChatFormat, FormatSpec

assert array.array("I").itemsize == 4, "token ids are gathered as C unsigned ints of 4 bytes"

STATUS_OK, STATUS_BROKEN = 0, 1
RECORD_DTYPE = np.dtype([("offset", "<i8"), ("length", "<i4"), ("loss", "<i4"), ("line", "<i8"),
                         ("status", "i1"), ("digest", "V16")])


def cache_dtype(vocab_size: int) -> np.dtype:
    """The token cache's id type: uint16 when every id of the vocabulary fits (most tokenizers
    below 65,536 tokens; half the bytes to write, read back and keep in the page cache), else
    uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class TokenOutOfRange(Exception):
    """The tokenizer gave an id at or beyond its own vocabulary size."""


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
    """Load a tokenizer as transformers does (`AutoTokenizer`); a directory or a hub name. A
    local directory's setup is remembered in the token cache, keyed by the directory's files
    and the library versions, so a recompile need not import transformers (seconds, torch)."""
    from compiler import cache

    signature = cache.directory_signature(name) if os.path.isdir(name) else None
    found = cache.remembered("tokenizer", signature) if signature else None
    setup = _setup_from_json(found) if found else None
    if setup is not None:
        return setup
    fresh = "transformers" not in sys.modules  # else loading here takes a moment
    setup = (_load_without_torch(name) if fresh else None) or _load_tokenizer(name)
    if signature:
        cache.remember("tokenizer", signature, _as_json(setup))
    return setup


def tokenizer_remembered(name: str) -> bool:
    """Whether `load_tokenizer(name)` answers from the cache (a local directory loaded before)."""
    from compiler import cache

    signature = cache.directory_signature(name) if os.path.isdir(name) else None
    return bool(signature) and cache.remembered("tokenizer", signature) is not None


def _load_without_torch(name: str) -> TokenizerSetup | None:
    """`_load_tokenizer` in another process, with torch hidden from transformers
    (`compiler.without_torch`): importing transformers then takes under half the time, and a
    tokenizer does not depend on torch. In a process forked from the workers' fork server when
    it has imported transformers' tokenizer code (a moment), else in a new interpreter (~2 s).
    None when that fails for any reason; the caller then loads in this process, which also
    gives the real error."""
    import subprocess

    from compiler.cache import loader_context

    context = loader_context()
    if context is not None:
        return _load_forked(context, name)
    code = ("import json, sys, compiler.without_torch; "
            "from compiler.encode import _load_tokenizer, _as_json; "
            "print(json.dumps(_as_json(_load_tokenizer(sys.argv[1]))))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-c", code, name], env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        return _setup_from_json(json.loads(done.stdout)) if done.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _load_forked(context: Any, name: str) -> TokenizerSetup | None:
    """`_load_tokenizer(name)` in a process of `context` (a multiprocessing context); None
    when it fails."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=_send_setup, args=(name, writer), daemon=True)
    try:
        process.start()
    except OSError:
        return None
    finally:
        writer.close()
    try:
        value = reader.recv()
    except (EOFError, OSError):  # the process died
        value = None
    finally:
        reader.close()
        process.join()
    return _setup_from_json(value) if isinstance(value, dict) else None


def _send_setup(name: str, writer: Any) -> None:
    import importlib

    importlib.import_module("compiler.without_torch")  # the fork server imported it; a spawned process has not
    try:
        value: Any = _as_json(_load_tokenizer(name))
    except Exception:  # noqa: BLE001 - the caller loads again in its own process for the error
        value = None
    writer.send(value)


def _as_json(setup: TokenizerSetup) -> dict:
    return {**dataclasses.asdict(setup), "identity": setup.identity}


def _load_tokenizer(name: str) -> TokenizerSetup:
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


def _setup_from_json(value: dict) -> TokenizerSetup | None:
    """A remembered setup, or None when it is not whole (its identity must match)."""
    try:
        setup = TokenizerSetup(value["name"], value["backend_json"], value["chat_template"],
                               tuple((str(k), str(v)) for k, v in value["variables"]), int(value["eos_id"]),
                               tuple(int(i) for i in value["prefix_ids"]), int(value["vocab_size"]))
    except (KeyError, TypeError, ValueError):
        return None
    return setup if setup.identity == value.get("identity") else None


@dataclass(frozen=True)
class EncodedBatch:
    ids: np.ndarray  # `cache_dtype`, every ok record's tokens back to back
    mask: np.ndarray  # uint8, 1 where the token carries loss
    records: np.ndarray  # RECORD_DTYPE, one per record (offset relative to this batch until `written`)
    errors: tuple[str, ...]  # "file:line: field `x`: message" for broken records
    written: bool = False  # ids and mask are empty here: a worker wrote them into the cache entry, and
    # the records' offsets are where (`write_into`)

    @property
    def tokens(self) -> int:
        return int(self.records["length"].sum())  # broken records have length 0


# The BPE and Unigram models of `tokenizers` remember the ids of the words (pre-tokens) they
# have seen, up to 10,000 words, and then stop remembering. A corpus has many more words than
# that: on the benchmark's chat corpus the first 10,000 words seen cover 82% of the words read
# and 50,000 cover 99.8%, and a word not remembered is merged again from its bytes. So workers
# let the model remember WORD_CACHE words: the same ids, tokenizing ~10% faster there, and at
# most ~70 MB more per worker (each remembered word costs ~700 bytes).
WORD_CACHE = 100_000


def widen_word_cache(tokenizer: Any, words: int = WORD_CACHE) -> Any:
    """`tokenizer`, its model now remembering up to `words` words (where the model has a word
    cache that can be resized: `_resize_cache`, tokenizers >= 0.20)."""
    resize = getattr(tokenizer.model, "_resize_cache", None)
    if resize is not None:
        resize(words)
    return tokenizer


class SourceChanged(Exception):
    """A source file no longer holds the bytes the compile read from it a moment ago."""


class Encoder:
    """One per worker process and source."""

    def __init__(self, setup: TokenizerSetup, fmt: FormatSpec, tokenizer: Any = None) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = tokenizer or widen_word_cache(Tokenizer.from_str(setup.backend_json))
        chat = ChatTemplate(setup.chat_template, setup.variables) if setup.chat_template else None
        self.renderer = Renderer(fmt, chat)
        self.fmt = fmt
        self.eos = setup.eos_id
        self.prefix = () if isinstance(fmt, ChatFormat) else setup.prefix_ids
        self.vocab_size, self.dtype = setup.vocab_size, cache_dtype(setup.vocab_size)

    def encode(self, batch: Sequence[tuple[RecordRef, Any]]) -> EncodedBatch:
        """Records with where each came from (dicts, or JSON Lines lines as bytes)."""
        return self._encode([ref.line for ref, _ in batch], [raw for _, raw in batch],
                            lambda i: str(batch[i][0]), json.loads)

    def encode_lines(self, path: str, first_line: int, block: bytes) -> EncodedBatch:
        """Whole JSON Lines lines of `path`, the first of them line `first_line`; blank and
        whitespace-only lines are counted but are not records."""
        lines, raws = _split_lines(block, first_line)
        return self._encode(lines, raws, lambda i: f"{path}:{lines[i]}", _loads_for(block))

    def _encode(self, lines: list[int], raws: list[Any], where: Callable[[int], str],
                loads: Callable[[Any], Any]) -> EncodedBatch:
        n = len(raws)
        status, digests, rendered, errors = bytearray(n), [_NO_DIGEST] * n, [], []
        templates, fmt, segments = self.renderer.templates, self.fmt, self.renderer.segments
        for i, raw in enumerate(raws):
            try:
                record = _parse(raw, loads)
                digests[i] = record_digest(record_key(record, fmt, templates))
                rendered.append((i, segments(record)))
            except RecordError as exc:
                status[i] = STATUS_BROKEN
                errors.append(f"{where(i)}: {exc}")
        records = np.zeros(n, RECORD_DTYPE)
        records["line"] = lines
        records["status"] = np.frombuffer(bytes(status), np.int8)
        records["digest"] = np.frombuffer(b"".join(digests), "V16")
        ids, mask = self._tokenize(rendered, records)
        return EncodedBatch(ids, mask, records, tuple(errors))

    def _tokenize(self, rendered: list[tuple[int, list]], records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = [text for _, segments in rendered for text, _ in segments]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False) if texts else []
        flat = array.array("I")  # one buffer for every id: faster than an array per segment
        for e in encodings:
            flat.fromlist(e.ids)  # twice as fast as `extend`, which goes through an iterator
        lengths = np.fromiter(map(len, encodings), np.int64, len(encodings))
        flags = np.fromiter((loss for _, segments in rendered for _, loss in segments), np.uint8, len(texts))
        per_record = np.fromiter((len(segments) for _, segments in rendered), np.int64, len(rendered))
        ids = np.frombuffer(flat, np.uint32) if len(flat) else np.zeros(0, np.uint32)
        at = np.fromiter((i for i, _ in rendered), np.int64, len(rendered))
        return self._assemble(at, records, ids, flags, lengths, per_record)

    def _assemble(self, at: np.ndarray, records: np.ndarray, seg_ids: np.ndarray, flags: np.ndarray,
                  lengths: np.ndarray, per_record: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lay out every ok record as prefix + its segments' ids + eos, all at once: body
        tokens keep their order, so they fill every position that is not a prefix or eos."""
        if not len(at):
            return np.zeros(0, self.dtype), np.zeros(0, np.uint8)
        if len(seg_ids) and int(seg_ids.max()) >= self.vocab_size:  # would not fit the cache's ids
            raise TokenOutOfRange(f"it gave token id {int(seg_ids.max())}, beyond its vocabulary of "
                                  f"{self.vocab_size:,} tokens")
        seg_end = np.cumsum(per_record)
        tokens_before = np.concatenate(([0], np.cumsum(lengths)))
        loss_before = np.concatenate(([0], np.cumsum(lengths * flags)))
        body = tokens_before[seg_end] - tokens_before[seg_end - per_record]
        body_loss = loss_before[seg_end] - loss_before[seg_end - per_record]
        eos_loss = (body_loss > 0).astype(np.uint8)
        length = body + len(self.prefix) + 1
        offset = np.cumsum(length) - length
        ids, mask = np.empty(int(length.sum()), self.dtype), np.zeros(int(length.sum()), np.uint8)
        added = np.zeros(len(ids), bool)
        eos_at = offset + length - 1
        added[eos_at], ids[eos_at], mask[eos_at] = True, self.eos, eos_loss
        if self.prefix:
            prefix_at = (offset[:, None] + np.arange(len(self.prefix))).ravel()
            added[prefix_at], ids[prefix_at] = True, np.tile(np.asarray(self.prefix, self.dtype), len(at))
        body_at = ~added
        ids[body_at] = seg_ids
        mask[body_at] = np.repeat(flags, lengths)
        records["length"][at], records["loss"][at] = length, body_loss + eos_loss
        records["offset"] = np.cumsum(records["length"]) - records["length"]  # broken ones: where they would be
        return ids, mask


_NO_DIGEST = bytes(RECORD_DTYPE["digest"].itemsize)


def _split_lines(block: bytes, first_line: int) -> tuple[list[int], list[bytes]]:
    """Line numbers and lines (newline kept, as a file yields them) of the non-blank lines."""
    parts = block.split(b"\n")
    last = parts.pop()  # what follows the last newline: b"" unless the file ends without one
    lines, raws = [], []
    for k, part in enumerate(parts):
        if part.strip():
            lines.append(first_line + k)
            raws.append(part + b"\n")
    if last.strip():
        lines.append(first_line + len(parts))
        raws.append(last)
    return lines, raws


# JSON Lines are parsed with orjson (twice as fast as json on chat records), which reads
# exactly what json reads except: integers beyond 64 bits become floats (json keeps them
# exact), and it refuses some input json accepts (NaN, lone surrogates, a byte order mark). So
# a block with a run of 19 digits anywhere is parsed with json, and a line orjson refuses is
# parsed again with json, which gives its value or the error users see.
_DIGITS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))  # digits to "0", all else to " "
_LONG_NUMBER = b"0" * 19


def _loads_for(block: bytes) -> Callable[[Any], Any]:
    return json.loads if _LONG_NUMBER in block.translate(_DIGITS) else _orjson_loads


def _orjson_loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except ValueError:
        return json.loads(raw)


def _parse(raw: Any, loads: Callable[[Any], Any] = json.loads) -> dict:
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, Exception):
        raise raw if isinstance(raw, RecordError) else RecordError(None, str(raw))
    try:
        value = loads(raw)
    except ValueError as exc:
        raise RecordError(None, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise RecordError(None, f"expected a JSON object, found {type(value).__name__}")
    return value


# ---- worker processes ---------------------------------------------------------------------

_SETUP: TokenizerSetup | None = None
_CURRENT: tuple[str, Encoder] | None = None


def init_worker(setup: TokenizerSetup) -> None:
    global _SETUP
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _SETUP = setup


def _encoder(run: str, fmt: FormatSpec) -> Encoder:
    """This process's encoder for one tokenizing run (one source): a fresh renderer for each
    run, one tokenizer for the life of the process."""
    global _CURRENT
    assert _SETUP is not None, "init_worker was not called"
    if _CURRENT is None or _CURRENT[0] != run:
        _CURRENT = run, Encoder(_SETUP, fmt, _CURRENT[1].tokenizer if _CURRENT else None)
    return _CURRENT[1]


# A worker writes each batch's ids and mask into the cache entry's files itself, and reads its
# block of JSON Lines from the source file itself: sending them through the pool's pipes
# (pickled, copied five times) cost more CPU than the rest of the main process's work together,
# and so did appending per-batch files to the cache in the main process.

def encode_in_worker(run: str, fmt: FormatSpec, batch: Sequence[tuple[RecordRef, Any]], directory: str) -> EncodedBatch:
    return write_into(run, directory, _encoder(run, fmt).encode(batch))


def encode_lines_in_worker(run: str, fmt: FormatSpec, path: str, first_line: int, offset: int, size: int,
                           directory: str) -> EncodedBatch:
    return write_into(run, directory, _encoder(run, fmt).encode_lines(path, first_line, read_block(path, offset, size)))


def read_block(path: str, offset: int, size: int) -> bytes:
    """`size` bytes of `path` from `offset`; SourceChanged when the file now ends sooner."""
    parts, done = [], 0
    with open(path, "rb", buffering=0) as f:
        while done < size and (part := os.pread(f.fileno(), size - done, offset + done)):
            parts.append(part)
            done += len(part)
    if done < size:
        raise SourceChanged(f"`{path}` changed while it was being read: it ends before byte {offset + size:,}")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def write_into(run: str, directory: str, batch: EncodedBatch) -> EncodedBatch:
    """Write the batch's ids and mask into `directory`'s `tokens.bin` and `mask.bin` (which the
    main process created) at the next free place, and return it without them, its records'
    offsets now where they lie. The place is taken under an exclusive lock on `mask.bin`, whose
    size is the tokens written so far; the ids then go to the same place in `tokens.bin`
    outside the lock. So batches lie in the order the workers finish them, not the source's
    order, and every byte is written once, by the worker that made it."""
    if not len(batch.mask):
        return dataclasses.replace(batch, written=True)
    tokens, mask = _outputs(run, directory)
    fcntl.flock(mask, fcntl.LOCK_EX)
    try:
        at = os.fstat(mask).st_size
        _pwrite_all(mask, memoryview(batch.mask), at)
    finally:
        fcntl.flock(mask, fcntl.LOCK_UN)
    _pwrite_all(tokens, memoryview(batch.ids).cast("B"), batch.ids.itemsize * at)
    records = batch.records.copy()
    records["offset"] += at
    return dataclasses.replace(batch, ids=batch.ids[:0], mask=batch.mask[:0], records=records, written=True)


_OUTPUTS: tuple[str, int, int] | None = None  # run, its tokens.bin and mask.bin open for writing


def _outputs(run: str, directory: str) -> tuple[int, int]:
    """This process's descriptors of the run's two files; those of an earlier run closed."""
    global _OUTPUTS
    if _OUTPUTS is None or _OUTPUTS[0] != run:
        if _OUTPUTS is not None:
            os.close(_OUTPUTS[1])
            os.close(_OUTPUTS[2])
            _OUTPUTS = None
        tokens = os.open(os.path.join(directory, "tokens.bin"), os.O_WRONLY)
        _OUTPUTS = run, tokens, os.open(os.path.join(directory, "mask.bin"), os.O_WRONLY)
    return _OUTPUTS[1], _OUTPUTS[2]


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
