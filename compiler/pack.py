"""Packing: samples in order in, rows of at most `seq_len` tokens out, boundaries kept.

Takes the samples' lengths in their final order; produces row boundaries. With packing,
samples are laid greedily into `seq_len` rows in order (a sample that does not fit in what is
left of a row starts the next one); without packing every sample is its own row. Samples
longer than `seq_len` never reach here: they were dropped or truncated when the pool was made.
`write_rows` then streams the rows from the token cache into a `ShardSetWriter`, one row a
document and one sample a sequence.
"""

from __future__ import annotations

from typing import Iterator, Sequence

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
    views = [(c.records, c.tokens, c.mask) for c in caches]
    for row in _rows(starts, len(records)):
        samples = []
        for i in row:
            table, tokens, mask = views[sources[i]]
            offset = int(table[records[i]]["offset"])
            n = int(lengths[i])
            samples.append((np.asarray(tokens[offset:offset + n]), np.asarray(mask[offset:offset + n]),
                            int(sources[i])))
        writer.add_row(samples)


def _rows(starts: np.ndarray, count: int) -> Iterator[range]:
    ends = np.append(starts[1:], count)
    for start, end in zip(starts.tolist(), ends.tolist()):
        yield range(start, end)
