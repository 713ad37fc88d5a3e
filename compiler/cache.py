"""The token cache: each source tokenized once per (content, format, tokenizer).

Takes a source, its files and a tokenizer setup; produces a `TokenCache` on disk: every
record's tokens and loss mask back to back (`tokens.bin` uint32, `mask.bin` uint8) and one
`RECORD_DTYPE` row per record (`records.bin`: offset, length, loss tokens, line, status,
content digest), with `meta.json` written last as the completion marker. The key covers the
source's content hash, its format, the tokenizer's identity and the library versions that
change bytes, so changing a share, the total, a seed, a holdout or adding a source
re-tokenizes nothing. A cache entry is built in a temporary directory and renamed into place,
so an interrupted build leaves nothing that looks complete.

Tokenizing runs in `jobs` worker processes (spawned, one tokenizer thread each, under jemalloc
when Debian's libjemalloc2 is installed), fed batches of raw records by this process with
back-pressure, so memory stays bounded whatever the source's size.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from compiler.encode import RECORD_DTYPE, STATUS_BROKEN, EncodedBatch, Encoder, TokenizerSetup, encode_in_worker, init_worker
from compiler.records import RecordRef
from compiler.sources import iter_records
from mixlang.diagnostics import MixError, error
from mixlang.program import SourceSpec

CACHE_VERSION = 1
BATCH_RECORDS = 1000
_JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
_MAX_ERRORS_KEPT = 20


def cache_root() -> str:
    return os.environ.get("MIXLANG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mixlang")


def content_sha256(files: tuple[str, ...]) -> str:
    """sha256 over the sources' bytes (each file's size, then its content), read in 8 MiB chunks."""
    h = hashlib.sha256()
    for path in files:
        if path.startswith("hf:"):
            h.update(path.encode())
            continue
        h.update(b"%d:" % os.path.getsize(path))
        with open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__}


def cache_key(spec: SourceSpec, content: str, setup: TokenizerSetup) -> str:
    payload = {"version": CACHE_VERSION, "content": content, "format": _format_json(spec),
               "tokenizer": setup.identity, "libraries": library_versions()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _format_json(spec: SourceSpec) -> dict:
    return {"kind": type(spec.format).__name__, **dataclasses.asdict(spec.format)}


@dataclass(frozen=True)
class TokenCache:
    path: str
    key: str
    meta: dict

    @property
    def records(self) -> np.ndarray:
        return _memmap(os.path.join(self.path, "records.bin"), RECORD_DTYPE)

    @property
    def tokens(self) -> np.ndarray:
        return _memmap(os.path.join(self.path, "tokens.bin"), np.uint32)

    @property
    def mask(self) -> np.ndarray:
        return _memmap(os.path.join(self.path, "mask.bin"), np.uint8)

    @property
    def errors(self) -> list[str]:
        return list(self.meta.get("errors", []))


def _memmap(path: str, dtype: Any) -> np.ndarray:
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def open_cache(key: str) -> TokenCache | None:
    path = os.path.join(cache_root(), "tokens", key)
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            return TokenCache(path, key, json.load(f))
    except (OSError, ValueError):
        return None


def ensure_cached(spec: SourceSpec, files: tuple[str, ...], content: str, setup: TokenizerSetup,
                  jobs: int, progress: Callable[[int], None] | None = None) -> tuple[TokenCache, bool]:
    """The source's cache entry, tokenizing it first when absent. Returns (cache, was_built)."""
    key = cache_key(spec, content, setup)
    found = open_cache(key)
    if found is not None:
        return found, False
    final = os.path.join(cache_root(), "tokens", key)
    tmp = f"{final}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = _tokenize_into(tmp, spec, files, setup, jobs, progress)
        _write_json(os.path.join(tmp, "meta.json"), {**meta, "key": key, "source": spec.name, "content": content})
        os.replace(tmp, final) if not os.path.exists(final) else shutil.rmtree(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_cache(key), True


def _write_json(path: str, value: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, sort_keys=True, indent=1)
    os.replace(tmp, path)


def _tokenize_into(directory: str, spec: SourceSpec, files: tuple[str, ...], setup: TokenizerSetup,
                   jobs: int, progress: Callable[[int], None] | None) -> dict:
    counts = {"records": 0, "broken": 0, "tokens": 0, "loss_tokens": 0}
    errors: list[str] = []
    with open(os.path.join(directory, "tokens.bin"), "wb") as t, \
            open(os.path.join(directory, "mask.bin"), "wb") as m, \
            open(os.path.join(directory, "records.bin"), "wb") as r:
        for batch in _encoded(spec, files, setup, jobs):
            _check_broken(spec, batch)
            records = batch.records.copy()
            records["offset"] += counts["tokens"]
            batch.ids.tofile(t)
            batch.mask.tofile(m)
            records.tofile(r)
            counts["records"] += len(records)
            counts["broken"] += int((records["status"] == STATUS_BROKEN).sum())
            counts["tokens"] += len(batch.ids)
            counts["loss_tokens"] += int(batch.mask.sum())
            errors.extend(batch.errors[: max(_MAX_ERRORS_KEPT - len(errors), 0)])
            if progress:
                progress(len(records))
    return {**counts, "errors": errors}


def _check_broken(spec: SourceSpec, batch: EncodedBatch) -> None:
    if batch.errors and spec.on_error == "fail":
        raise MixError(error(
            "E507", f"broken record at `{batch.errors[0].split(': ', 1)[0]}` in source `{spec.name}`: "
                    f"{batch.errors[0].split(': ', 1)[1]}",
            help="fix the record, or add `on_error skip` to the source to count and skip broken records"))


def _encoded(spec: SourceSpec, files: tuple[str, ...], setup: TokenizerSetup, jobs: int) -> Iterator[EncodedBatch]:
    batches = _raw_batches(spec, files)
    if jobs <= 1:
        encoder = Encoder(setup, spec.format)
        yield from (encoder.encode(b) for b in batches)
        return
    import multiprocessing

    with _jemalloc_for_children():
        pool = multiprocessing.get_context("spawn").Pool(jobs, init_worker, (setup, spec.format))
    try:
        pending: collections.deque = collections.deque()
        for batch in batches:
            pending.append(pool.apply_async(encode_in_worker, (batch,)))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()


class _jemalloc_for_children:
    """Spawned workers start under jemalloc when it is installed: under glibc malloc the
    tokenizer slows down steadily within a long-lived process (shared/perf-notes.md)."""

    def __enter__(self) -> None:
        self.before = os.environ.get("LD_PRELOAD")
        if os.path.exists(_JEMALLOC) and _JEMALLOC not in (self.before or ""):
            os.environ["LD_PRELOAD"] = f"{_JEMALLOC} {self.before}" if self.before else _JEMALLOC

    def __exit__(self, *exc: object) -> None:
        if self.before is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = self.before


def _raw_batches(spec: SourceSpec, files: tuple[str, ...]) -> Iterator[list[tuple[RecordRef, Any]]]:
    """Records in order, BATCH_RECORDS at a time: JSONL lines stay bytes (the workers parse
    them); other formats arrive as dicts from their readers."""
    batch: list[tuple[RecordRef, Any]] = []
    for item in _raw_records(spec, files):
        batch.append(item)
        if len(batch) >= BATCH_RECORDS:
            yield batch
            batch = []
    if batch:
        yield batch


def _raw_records(spec: SourceSpec, files: tuple[str, ...]) -> Iterator[tuple[RecordRef, Any]]:
    if spec.is_hub or not all(f.endswith(".jsonl") for f in files):
        yield from iter_records(spec)
        return
    for path in files:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield RecordRef(path, number), line


def progress_bar(total: int, label: str) -> Any:
    """A tqdm bar on stderr when it is a terminal; otherwise nothing is drawn."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=" rec", disable=not sys.stderr.isatty(), leave=False)
