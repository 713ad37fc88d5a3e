"""The token cache: each source tokenized once per (content, format, tokenizer).

Takes a source, its files and a tokenizer setup; produces a `TokenCache` on disk: every
record's tokens and loss mask back to back (`tokens.bin` uint16 or uint32 as the vocabulary
needs, `mask.bin` uint8) and one
`RECORD_DTYPE` row per record (`records.bin`: offset, length, loss tokens, line, status,
content digest), with `meta.json` written last as the completion marker. The key covers the
source's content hash, its format, the tokenizer's identity and the library versions that
change bytes, so changing a share, the total, a seed, a holdout or adding a source
re-tokenizes nothing. A cache entry is built in a temporary directory and renamed into place,
so an interrupted build leaves nothing that looks complete.

Tokenizing runs in `jobs` worker processes (forked from a fork server that imported their
modules once; one tokenizer thread each, under jemalloc when Debian's libjemalloc2 is
installed), fed by this process with back-pressure, so memory stays bounded whatever the
source's size: JSON Lines as ~1 MiB blocks of whole lines (this process finds where they end
and their line numbers; the workers read, split and parse them), other formats as batches of
records. A worker writes each batch's ids and masks into the entry's files itself, at the next
free place (so batches lie in the order they finish; each record's offset says where), and
this process writes the records in the source's order. The workers are kept for the next
source of the same compile and stopped when idle.

The cache root also remembers two small, slow values that depend only on files: a source's
content hash (by its files' stat signature) and a local tokenizer directory's setup (by its
files' contents), so a recompile from a warm cache neither re-reads the sources nor imports
transformers.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from compiler.encode import (
    RECORD_DTYPE, STATUS_BROKEN, EncodedBatch, Encoder, SourceChanged, TokenizerSetup, TokenOutOfRange, cache_dtype,
    encode_in_worker, encode_lines_in_worker, init_worker,
)
from compiler.files import write_json
from compiler.records import RecordRef
from compiler.render import TemplateMismatch
from compiler.sources import iter_records
from mixlang.diagnostics import MixError, error
from mixlang.program import ChatFormat, SourceSpec

CACHE_VERSION = 3  # 2: records' digests over `canonical_bytes`; 3: uint16 ids when they fit
BATCH_RECORDS = 1000  # records a task, for formats read by compiler.records
BLOCK_BYTES = 1 << 20  # bytes of whole lines a task, for JSON Lines
_JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
_MAX_ERRORS_KEPT = 20


def cache_root() -> str:
    return os.environ.get("MIXLANG_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mixlang")


def content_sha256(files: tuple[str, ...]) -> str:
    """sha256 over the sources' bytes (each file's size, then its content), read in 8 MiB chunks.
    Remembered in the cache by the files' stat signature, so unchanged files are read once."""
    signature = _stat_signature(files)
    found = remembered("content", signature) if signature else None
    if isinstance(found, str):
        return found
    digest = _hash_contents(files)
    if signature and signature == _stat_signature(files):
        remember("content", signature, digest)
    return digest


def content_remembered(files: tuple[str, ...]) -> bool:
    """Whether `content_sha256(files)` is remembered, so answers without reading the files."""
    signature = _stat_signature(files)
    return bool(signature) and isinstance(remembered("content", signature), str)


def _hash_contents(files: tuple[str, ...]) -> str:
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
    """Versions of the libraries that decide token ids, from their installed metadata (the
    module's own `__version__` when it is already imported): importing transformers takes
    seconds that a compile from a warm cache does not otherwise spend."""
    return {name: _version(name) for name in ("tokenizers", "transformers")}


def _version(name: str) -> str:
    if name in sys.modules:
        return sys.modules[name].__version__
    from importlib import metadata

    return metadata.version(name)


# Remembered values: small results that are slow to compute and depend only on files (a
# source's content hash, a local tokenizer directory's setup), kept under the cache root and
# keyed by a signature of those files. A file changed within the last RACY_SECONDS gives no
# signature, as in git's index: a second change within the same timestamp tick could go unseen.
RACY_SECONDS = 2.0
_SMALL_FILE = 64 << 20


def remembered(kind: str, signature: str) -> Any:
    try:
        with open(os.path.join(cache_root(), kind, signature + ".json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remember(kind: str, signature: str, value: Any) -> None:
    folder = os.path.join(cache_root(), kind)
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, signature + ".json"), value)


def _stat_signature(files: tuple[str, ...]) -> str | None:
    """Where each file is and when it last changed (device, inode, size, mtime, ctime)."""
    entries: list[Any] = []
    for path in files:
        if path.startswith("hf:"):
            entries.append(path)
            continue
        st = os.stat(path)
        if time.time() - st.st_ctime < RACY_SECONDS:
            return None
        entries.append([os.path.abspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return hashlib.sha256(json.dumps([CACHE_VERSION, entries]).encode()).hexdigest()[:32]


def directory_signature(directory: str) -> str | None:
    """The library versions, the name, and every file below a directory: its path and size, the
    sha256 of its content when small (tokenizer files), else its stat times (model weights)."""
    entries: list[Any] = [CACHE_VERSION, library_versions(), directory]
    try:
        for folder, dirs, names in os.walk(directory):
            dirs.sort()
            for path in (os.path.join(folder, name) for name in sorted(names)):
                st = os.stat(path)
                if time.time() - st.st_ctime < RACY_SECONDS:
                    return None
                small = st.st_size <= _SMALL_FILE
                seen = [_hash_contents((path,))] if small else [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]
                entries.append([os.path.relpath(path, directory), st.st_size, *seen])
    except OSError:  # an unreadable file or a dangling link: load as if nothing were remembered
        return None
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:32]


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
    def dtype(self) -> np.dtype:
        """The ids' type, `meta.json`'s "dtype": uint16 or uint32 (`cache_dtype`)."""
        return _DTYPES[self.meta["dtype"]]

    @property
    def tokens(self) -> np.ndarray:
        return _memmap(os.path.join(self.path, "tokens.bin"), self.dtype)

    @property
    def mask(self) -> np.ndarray:
        return _memmap(os.path.join(self.path, "mask.bin"), np.uint8)

    @property
    def errors(self) -> list[str]:
        return list(self.meta.get("errors", []))


_DTYPES = {"uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32)}


def _memmap(path: str, dtype: Any) -> np.ndarray:
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def open_cache(key: str) -> TokenCache | None:
    """The complete cache entry for `key`, or None: none there, or one whose files do not have
    the sizes its meta.json says (cut short or damaged on disk), which is then rebuilt."""
    path = os.path.join(cache_root(), "tokens", key)
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        sizes = {"tokens.bin": _DTYPES[meta["dtype"]].itemsize * meta["tokens"], "mask.bin": meta["tokens"],
                 "records.bin": RECORD_DTYPE.itemsize * meta["records"]}
        if any(os.path.getsize(os.path.join(path, name)) != size for name, size in sizes.items()):
            return None
        return TokenCache(path, key, meta)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_cached(spec: SourceSpec, files: tuple[str, ...], content: str | Callable[[], str], setup: TokenizerSetup,
                  jobs: int, progress: Callable[[int], None] | None = None) -> tuple[TokenCache, bool]:
    """The source's cache entry, tokenizing it first when absent. Returns (cache, was_built).
    `content` is the sources' content hash, or a function that waits for it while it is being
    computed: then tokenizing starts at once, and the entry is named when the hash is known
    (an entry that turns out to exist already is kept, and this one dropped)."""
    known = content if isinstance(content, str) else None
    if known is not None:
        found = open_cache(cache_key(spec, known, setup))
        if found is not None:
            return found, False
    folder = os.path.join(cache_root(), "tokens")
    tmp = os.path.join(folder, f".tmp-{os.getpid()}-{next(_RUNS)}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        meta = _tokenize_into(tmp, spec, files, setup, jobs, progress)
        known = known if known is not None else content()  # type: ignore[operator]
        key = cache_key(spec, known, setup)
        found = open_cache(key)
        if found is not None:
            return found, False
        final = os.path.join(folder, key)
        shutil.rmtree(final, ignore_errors=True)  # an entry open_cache refused: damaged
        write_json(os.path.join(tmp, "meta.json"), {**meta, "key": key, "source": spec.name, "content": known})
        try:
            os.replace(tmp, final)
        except OSError:  # another compile put the entry there a moment ago
            if open_cache(key) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_cache(key), True


def _tokenize_into(directory: str, spec: SourceSpec, files: tuple[str, ...], setup: TokenizerSetup,
                   jobs: int, progress: Callable[[int], None] | None) -> dict:
    counts = {"records": 0, "broken": 0, "tokens": 0, "loss_tokens": 0}
    dtype = cache_dtype(setup.vocab_size)
    errors: list[str] = []
    tokens_path, mask_path = os.path.join(directory, "tokens.bin"), os.path.join(directory, "mask.bin")
    with open(tokens_path, "wb", buffering=0) as t, open(mask_path, "wb", buffering=0) as m, \
            open(os.path.join(directory, "records.bin"), "wb") as r:
        for batch in _encoded(spec, files, setup, jobs, directory):
            _check_broken(spec, batch)
            records = batch.records
            if not batch.written:  # encoded in this process: appended in order
                records = records.copy()
                records["offset"] += counts["tokens"]
                batch.ids.tofile(t)
                batch.mask.tofile(m)
            records.tofile(r)
            counts["records"] += len(records)
            counts["broken"] += int((records["status"] == STATUS_BROKEN).sum())
            counts["tokens"] += batch.tokens
            counts["loss_tokens"] += int(records["loss"].sum())  # = the mask's sum: broken records have none
            errors.extend(batch.errors[: max(_MAX_ERRORS_KEPT - len(errors), 0)])
            if progress:
                progress(len(records))
    for path, size in ((tokens_path, dtype.itemsize * counts["tokens"]), (mask_path, counts["tokens"])):
        if os.path.getsize(path) != size:
            raise OSError(f"`{path}` holds {os.path.getsize(path):,} bytes after tokenizing, not {size:,}")
    return {**counts, "dtype": dtype.name, "errors": errors}


def _check_broken(spec: SourceSpec, batch: EncodedBatch) -> None:
    if batch.errors and spec.on_error == "fail":
        raise MixError(error(
            "E507", f"broken record at `{batch.errors[0].split(': ', 1)[0]}` in source `{spec.name}`: "
                    f"{batch.errors[0].split(': ', 1)[1]}",
            help="fix the record, or add `on_error skip` to the source to count and skip broken records"))


def _encoded(spec: SourceSpec, files: tuple[str, ...], setup: TokenizerSetup, jobs: int,
             directory: str) -> Iterator[EncodedBatch]:
    """The source's batches, encoded in this process (`jobs` 1) or by the workers, which read
    their blocks themselves and write their ids and masks into `directory` (`write_into`)."""
    try:
        yield from _encoded_by(spec, files, setup, jobs, directory)
    except TemplateMismatch as exc:
        raise MixError(error(
            "E703", f"the chat template of tokenizer `{setup.name}` cannot be used for exact loss masks: {exc}",
            help="use a tokenizer whose template writes each assistant message as it is, or a `prompt(...)` "
                 "format")) from None
    except TokenOutOfRange as exc:
        raise MixError(error("E704", f"tokenizer `{setup.name}` cannot be used: {exc}",
                             help="its vocabulary size (`len(tokenizer)`) must count every id it gives")) from None
    except BrokenProcessPool:
        raise MixError(error(
            "E510", f"a tokenizer worker stopped while tokenizing source `{spec.name}`{_WORKERS.death()}",
            help="nothing of this source was kept; run the compile again (with fewer `--jobs` if memory "
                 "ran out)")) from None


def _encoded_by(spec: SourceSpec, files: tuple[str, ...], setup: TokenizerSetup, jobs: int,
                directory: str) -> Iterator[EncodedBatch]:
    tasks = _tasks(spec, files)
    if jobs <= 1:
        encoder = Encoder(setup, spec.format)
        for lines, payload in tasks:
            if lines:
                path, first_line, _, block = payload
                yield encoder.encode_lines(path, first_line, block)
            else:
                yield encoder.encode(payload)
        return
    run = f"{os.getpid()}:{next(_RUNS)}"
    pool = _WORKERS.acquire(setup, jobs, chat=isinstance(spec.format, ChatFormat) and setup.chat_template is not None)
    finished = False
    try:
        pending: collections.deque = collections.deque()
        for lines, payload in tasks:
            if lines:
                path, first_line, offset, block = payload
                task = (encode_lines_in_worker, run, spec.format, path, first_line, offset, len(block), directory)
            else:
                task = (encode_in_worker, run, spec.format, payload, directory)
            pending.append(pool.submit(*task))
            if len(pending) >= 4 * jobs:
                yield _result(pending.popleft())
        while pending:
            yield _result(pending.popleft())
        finished = True
    finally:
        _WORKERS.release(finished)


def _result(task: Any) -> EncodedBatch:
    try:
        return task.result()
    except SourceChanged as exc:
        raise MixError(error("E506", f"cannot read {exc}", help="run the compile again")) from None


_RUNS = itertools.count()


class _WorkerPool:
    """The tokenizer processes, kept for the next source of the same compile: starting them
    (an interpreter, numpy, the tokenizer, the chat template's Jinja) costs seconds. A pool
    not asked for again within `IDLE_SECONDS` is stopped, and so is one whose run failed.
    A `ProcessPoolExecutor`: when a worker dies (killed for memory, say), its pending tasks
    fail with BrokenProcessPool; a `multiprocessing.Pool` lost the task and waited forever."""

    IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple[TokenizerSetup, int] | None = None  # the whole setup: its identity omits vocab_size
        self.pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.processes: dict[int, Any] = {}
        self.timer: threading.Timer | None = None

    def acquire(self, setup: TokenizerSetup, jobs: int, chat: bool) -> concurrent.futures.ProcessPoolExecutor:
        with self.lock:
            if self.timer:
                self.timer.cancel()
                self.timer = None
            if self.pool is not None and self.key != (setup, jobs):
                self._stop()
            if self.pool is None:
                context = _context(chat)
                _start_server(context)  # workers start lazily, forked from it: under its jemalloc
                self.pool = concurrent.futures.ProcessPoolExecutor(
                    jobs, mp_context=context, initializer=init_worker, initargs=(setup,))
                # the executor's own table of its workers (pid -> process), read for their exit codes
                processes = getattr(self.pool, "_processes", None)
                self.processes = processes if isinstance(processes, dict) else {}
                self.key = (setup, jobs)
            return self.pool

    def release(self, finished: bool) -> None:
        with self.lock:
            if not finished:
                self._stop()
                return
            self.timer = threading.Timer(self.IDLE_SECONDS, self._stop_when_idle)
            self.timer.daemon = True
            self.timer.start()

    def death(self) -> str:
        """How a dead worker ended, as " (killed by SIGKILL)", or "" when not known. The
        executor ends the other workers with SIGTERM once one has died."""
        for process in list(self.processes.values()):
            code = process.exitcode
            if code is not None and code != 0 and code != -signal.SIGTERM:
                return f" (killed by {signal.Signals(-code).name})" if code < 0 else f" (exit status {code})"
        return ""

    def _stop_when_idle(self) -> None:
        with self.lock:
            if self.timer is threading.current_thread():
                self._stop()

    def _stop(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # tasks already running finish first
        self.pool, self.key, self.timer = None, None, None  # `processes` kept for `death()`


_WORKERS = _WorkerPool()

# Workers are forked from a server process that has imported what they need once (numpy,
# tokenizers, Jinja; for chat templates also transformers' chat template code, which imports
# transformers: ~1 s): spawned workers each imported it all again. When a tokenizer is to be
# loaded, the server also imports transformers' AutoTokenizer, and the tokenizer is loaded in
# a process forked from it (`loader_context`): a fresh interpreter took 2 s to import the same.
# The server hides torch from transformers (`compiler.without_torch`). It is started once a
# process, with what its first user needs. Where there is no fork server, workers are spawned.
_PRELOAD = ["compiler.encode"]
_PRELOAD_CHAT = ["compiler.without_torch", "transformers.utils.chat_template_utils"]
_PRELOAD_LOADER = ["compiler.without_torch", "transformers.models.auto.tokenization_auto"]
_SERVER_PRELOAD: tuple[str, ...] = ()  # what the fork server this process started imports


def _context(chat: bool, loader: bool = False) -> Any:
    """The workers' start context. The first call that starts the fork server (`prestart_workers`,
    or a pool's first worker) decides what it imports; a running server keeps its own."""
    global _SERVER_PRELOAD
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    if not _SERVER_PRELOAD:
        _SERVER_PRELOAD = tuple(dict.fromkeys(_PRELOAD + (_PRELOAD_CHAT if chat else [])
                                              + (_PRELOAD_LOADER if loader else [])))
        context.set_forkserver_preload(list(_SERVER_PRELOAD))
    return context


def prestart_workers(chat: bool, loader: bool = False) -> None:
    """Start the fork server (it imports in the background) so that its imports overlap the
    sources' hashing of a cold compile; `chat`: some source will be rendered with a chat
    template; `loader`: a tokenizer will be loaded (`loader_context`)."""
    _start_server(_context(chat, loader))


def _start_server(context: Any) -> None:
    """Start the fork server (under jemalloc) when `context` forks from one and it is not
    running. Where workers are spawned instead (no fork server: not Linux), they start without
    jemalloc, which is Debian's path anyway."""
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _jemalloc_for_children():
            forkserver.ensure_running()


def loader_context() -> Any:
    """The fork server's context when the server imports transformers' AutoTokenizer (a process
    forked from it loads a tokenizer in a moment), else None."""
    if set(_PRELOAD_LOADER) <= set(_SERVER_PRELOAD):
        return _context(False)
    return None


class _jemalloc_for_children:
    """Workers (and the fork server they come from) start under jemalloc when it is installed:
    under glibc malloc the tokenizer slows down steadily within a long-lived process
    (shared/perf-notes.md)."""

    def __enter__(self) -> None:
        self.before = os.environ.get("LD_PRELOAD")
        if os.path.exists(_JEMALLOC) and _JEMALLOC not in (self.before or ""):
            os.environ["LD_PRELOAD"] = f"{_JEMALLOC} {self.before}" if self.before else _JEMALLOC

    def __exit__(self, *exc: object) -> None:
        if self.before is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = self.before


def _tasks(spec: SourceSpec, files: tuple[str, ...]) -> Iterator[tuple[bool, Any]]:
    """The source's records in order, as work for the encoders: JSON Lines as blocks of whole
    lines, `(True, (path, first line number, offset, bytes))`, parsed by the encoders; other formats as
    `(False, [(RecordRef, record), ...])`, BATCH_RECORDS at a time, from their readers."""
    if spec.is_hub or not all(f.endswith(".jsonl") for f in files):
        for batch in _record_batches(iter_records(spec)):
            yield False, batch
        return
    for path in files:
        for first_line, offset, block in _line_blocks(path):
            yield True, (path, first_line, offset, block)


def _record_batches(records: Iterator[tuple[RecordRef, Any]]) -> Iterator[list[tuple[RecordRef, Any]]]:
    batch: list[tuple[RecordRef, Any]] = []
    for item in records:
        batch.append(item)
        if len(batch) >= BATCH_RECORDS:
            yield batch
            batch = []
    if batch:
        yield batch


def _line_blocks(path: str) -> Iterator[tuple[int, int, bytes]]:
    """The file in blocks of about BLOCK_BYTES that end at a newline (the last one may not),
    each with the line number of its first line and its offset in the file."""
    number, offset = 1, 0
    with open(path, "rb") as f:
        while block := f.read(BLOCK_BYTES):
            cut = block.rfind(b"\n") + 1
            while cut == 0 and (more := f.read(BLOCK_BYTES)):  # a line longer than a block
                block += more
                cut = block.rfind(b"\n") + 1
            if 0 < cut < len(block):
                f.seek(cut - len(block), os.SEEK_CUR)
                block = block[:cut]
            yield number, offset, block
            number += block.count(b"\n")
            offset += len(block)


def progress_shown() -> bool:
    """Whether progress bars are drawn: only on a terminal."""
    return sys.stderr.isatty()


def progress_bar(total: int, label: str) -> Any:
    """A tqdm bar on stderr when `progress_shown()`; otherwise nothing is drawn."""
    from tqdm import tqdm

    return tqdm(total=total, desc=label, unit=" rec", disable=not progress_shown(), leave=False)
