"""Packing: samples in order in, rows of at most `seq_len` tokens out, boundaries kept.

Takes the samples' lengths in their final order; produces row boundaries. With packing,
samples are laid greedily into `seq_len` rows in order (a sample that does not fit in what is
left of a row starts the next one); without packing every sample is its own row. Samples
longer than `seq_len` never reach here: they were dropped or truncated when the pool was made.
`write_rows` then streams the rows from the token cache into a `ShardSetWriter`, one row a
document and one sample a sequence.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from typing import Sequence

import numpy as np

from compiler.cache import TokenCache
from compiler.shards import ShardSetWriter


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
    cut to `lengths[i]` tokens."""
    offsets = _offsets(caches, sources, records)
    with contextlib.ExitStack() as stack:
        readers = [stack.enter_context(_SampleReader(c.path)) for c in caches]
        source, offset, length = sources.tolist(), offsets.tolist(), lengths.tolist()
        for start, end in zip(starts.tolist(), starts[1:].tolist() + [len(records)]):
            writer.add_row([readers[source[i]].sample(offset[i], length[i]) + (source[i],) for i in range(start, end)])


def _offsets(caches: Sequence[TokenCache], sources: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Each sample's first token in its cache."""
    offsets = np.zeros(len(records), np.int64)
    for s, cache in enumerate(caches):
        mine = np.flatnonzero(sources == s)
        if len(mine):
            offsets[mine] = cache.records["offset"][records[mine]]
    return offsets


class _SampleReader:
    """One token cache's tokens and mask, memory-mapped and read a sample at a time. Pages
    mapped in count in the process's resident memory (the kernel maps up to 64 KiB around each
    page read), so every RELEASE_SAMPLES samples the maps are emptied (`MADV_DONTNEED`; the page
    cache keeps the data): memory stays flat however large the cache. Samples are handed out as
    views into the maps."""

    RELEASE_SAMPLES = 256

    def __init__(self, directory: str) -> None:
        self.maps = [_map(os.path.join(directory, name)) for name in ("tokens.bin", "mask.bin")]
        self.tokens = np.frombuffer(self.maps[0], np.uint32) if self.maps[0] else np.zeros(0, np.uint32)
        self.mask = np.frombuffer(self.maps[1], np.uint8) if self.maps[1] else np.zeros(0, np.uint8)
        self.read = 0

    def __enter__(self) -> _SampleReader:
        return self

    def __exit__(self, *exc: object) -> None:
        del self.tokens, self.mask
        for m in filter(None, self.maps):
            try:
                m.close()
            except BufferError:  # a view is still referenced; the map closes when it goes
                pass

    def sample(self, offset: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        self.read += 1
        if self.read % self.RELEASE_SAMPLES == 0:
            for m in filter(None, self.maps):
                m.madvise(mmap.MADV_DONTNEED)
        if offset + n > min(len(self.tokens), len(self.mask)):
            raise OSError(f"token cache ends before token {offset + n}: it is damaged; delete it to rebuild")
        return self.tokens[offset:offset + n], self.mask[offset:offset + n]


def _map(path: str) -> mmap.mmap | None:
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if os.fstat(f.fileno()).st_size else None
