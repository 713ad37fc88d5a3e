"""Packing: samples in order in, rows of at most `seq_len` tokens out, boundaries kept.

Takes the samples' lengths in their final order; produces row boundaries. With packing,
samples are laid greedily into `seq_len` rows in order (a sample that does not fit in what is
left of a row starts the next one); without packing every sample is its own row. Samples
longer than `seq_len` never reach here: they were dropped or truncated when the pool was made.
`write_rows` then streams the rows from the token cache into a `ShardSetWriter`, one row a
document and one sample a sequence.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
from typing import Sequence

import numpy as np

from compiler.cache import TokenCache
from compiler.shards import ShardSetWriter
from mixlang.diagnostics import MixError, error


def row_starts(lengths: np.ndarray, seq_len: int, packing: bool) -> np.ndarray:
    """Index of the first sample of each row (ascending), for samples in the given order."""
    if not packing or len(lengths) == 0:
        return np.arange(len(lengths), dtype=np.int64)
    starts, used = [0], 0
    for i, n in enumerate(lengths.tolist()):
        if used + n > seq_len:
            starts.append(i)
            used = 0
        used += n
    return np.asarray(starts, np.int64)


def efficiency(lengths: np.ndarray, rows: int, seq_len: int) -> float:
    """Real tokens over row capacity."""
    return round(float(lengths.sum()) / (rows * seq_len), 6) if rows else 0.0


def write_rows(writer: ShardSetWriter, caches: Sequence[TokenCache], sources: np.ndarray, records: np.ndarray,
               lengths: np.ndarray, starts: np.ndarray) -> None:
    """Stream the rows into `writer`: sample i is record `records[i]` of cache `sources[i]`,
    cut to `lengths[i]` tokens. Whole rows go at a time, about CHUNK_TOKENS tokens of them, read
    into one buffer: memory stays bounded, and the Python work per sample is two `pread`s. A
    thread reads the next chunk while this one is written (both mostly release the GIL)."""
    if not len(records):
        return
    offsets = _offsets(caches, sources, records)
    ends = np.append(starts[1:], len(records))
    chunks = [(first, last, int(starts[first]), int(ends[last - 1])) for first, last in _chunks(lengths, starts)]
    if len({c.dtype for c in caches}) > 1:  # one tokenizer, one `cache_dtype`
        raise ValueError(f"token caches of one mix hold ids of different types: {sorted({c.dtype.name for c in caches})}")
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(_SampleReader(c.path, c.dtype)) for c in caches]
        for s, reader in enumerate(readers):
            mine = sources == s
            reader.prefetch(offsets[mine], lengths[mine])
        reading = stack.enter_context(concurrent.futures.ThreadPoolExecutor(1))

        def read(k: int) -> concurrent.futures.Future:
            _, _, a, b = chunks[k]
            return reading.submit(_read, readers, sources[a:b], offsets[a:b], lengths[a:b])

        ahead = read(0)
        for k, (first, last, a, b) in enumerate(chunks):
            ids, mask = ahead.result()
            if k + 1 < len(chunks):
                ahead = read(k + 1)  # read the next chunk while this one is checked, hashed and written
            writer.add_rows(ids, mask, lengths[a:b], sources[a:b], ends[first:last] - starts[first:last])


CHUNK_TOKENS = 1 << 22


def _chunks(lengths: np.ndarray, starts: np.ndarray) -> list[tuple[int, int]]:
    """Runs of whole rows `[first, last)` of about CHUNK_TOKENS tokens (at least one row)."""
    before = np.concatenate(([0], np.cumsum(lengths)))[starts]  # tokens before each row
    cuts = np.unique(np.searchsorted(before, np.arange(0, int(lengths.sum()), CHUNK_TOKENS), side="right") - 1)
    bounds = cuts.tolist() + [len(starts)]
    return list(zip(bounds[:-1], bounds[1:]))


def _read(readers: Sequence[_SampleReader], sources: np.ndarray, offsets: np.ndarray,
          lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The samples' tokens and masks back to back, two `pread`s a sample. (Samples in output
    order are a scattered choice from their caches: few lie one after another.) The readers
    hold ids of one type, which the result has."""
    dtype = readers[0].dtype
    ids, mask = np.empty(int(lengths.sum()), dtype), np.empty(int(lengths.sum()), np.uint8)
    id_bytes, mask_bytes, size = memoryview(ids).cast("B"), memoryview(mask), dtype.itemsize
    at = 0
    for s, offset, n in zip(sources.tolist(), offsets.tolist(), lengths.tolist()):
        reader = readers[s]
        if os.preadv(reader.tokens, [id_bytes[size * at:size * (at + n)]], size * offset) != size * n \
                or os.preadv(reader.mask, [mask_bytes[at:at + n]], offset) != n:
            raise MixError(error("E715", f"token cache `{reader.directory}` ends before token {offset + n}: "
                                         "it was damaged during this compile",
                                 help="run the compile again: a damaged cache entry is rebuilt"))
        at += n
    return ids, mask


def _offsets(caches: Sequence[TokenCache], sources: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Each sample's first token in its cache."""
    offsets = np.zeros(len(records), np.int64)
    for s, cache in enumerate(caches):
        mine = np.flatnonzero(sources == s)
        if len(mine):
            offsets[mine] = cache.records["offset"][records[mine]]
    return offsets


class _SampleReader:
    """One token cache's tokens and mask files, read a sample at a time with `pread`. Memory maps
    would count every page read in the process's resident memory (up to the cache's size),
    and emptying them as they fill costs more page faults than these two system calls."""

    PREFETCH_GAP = 1 << 18  # tokens

    def __init__(self, directory: str, dtype: np.dtype) -> None:
        self.directory, self.dtype = directory, np.dtype(dtype)
        self.tokens = os.open(os.path.join(directory, "tokens.bin"), os.O_RDONLY)
        self.mask = os.open(os.path.join(directory, "mask.bin"), os.O_RDONLY)

    def __enter__(self) -> _SampleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.tokens)
        os.close(self.mask)

    def prefetch(self, offsets: np.ndarray, lengths: np.ndarray) -> None:
        """Ask the kernel to read the samples ahead, in file order, ranges less than
        PREFETCH_GAP apart merged: a cache that has left the page cache is then read in large
        sequential reads, not one small random read per sample."""
        if not hasattr(os, "posix_fadvise") or not len(offsets):
            return
        order = np.argsort(offsets, kind="stable")
        starts, ends = offsets[order], offsets[order] + lengths[order]
        reach = np.maximum.accumulate(ends)
        cut = np.flatnonzero(starts[1:] - reach[:-1] > self.PREFETCH_GAP) + 1
        first, last = starts[np.r_[0, cut]], reach[np.r_[cut - 1, len(reach) - 1]]
        for fd, itemsize in ((self.tokens, self.dtype.itemsize), (self.mask, 1)):
            for a, b in zip(first.tolist(), last.tolist()):
                os.posix_fadvise(fd, a * itemsize, (b - a) * itemsize, os.POSIX_FADV_WILLNEED)
