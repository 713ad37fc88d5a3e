"""Selection: which cached records fill each take of a mix, in which order.

Takes a source's token cache and the mix; produces a `SourcePool` per source (the records a mix
may use, and the held-out ones) and a `Selection`: the allocation (`compiler.mixing`) and the
sample order. The pool follows the order of docs/language.md: broken records out, then exact
duplicates (first occurrence kept), then the holdout, then over-long samples when the source
says `overlong drop`, then `limit` (a seeded choice). A take's records are a seeded choice that
takes whole epochs first; `by tokens` allocates tokens and then takes whole samples until each
take's token target is met. The final order is one seeded shuffle over all samples.
Pure given the cache arrays: no I/O beyond reading them.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from compiler.cache import TokenCache
from compiler.encode import STATUS_OK
from compiler.mixing import Allocation, TakeRequest, allocate
from compiler.sources import holdout_mask
from mixlang.program import MixSpec, SourceSpec


@dataclass(frozen=True)
class SourcePool:
    name: str
    usable: np.ndarray = field(repr=False)  # record indices into the cache, ascending
    held_out: np.ndarray = field(repr=False)
    lengths: np.ndarray = field(repr=False)  # tokens per record after truncation to seq_len
    counts: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.usable)

    @property
    def tokens(self) -> int:
        return int(self.lengths[self.usable].sum())


def source_pool(spec: SourceSpec, cache: TokenCache, seq_len: int) -> SourcePool:
    records = cache.records
    n = len(records)
    ok = records["status"] == STATUS_OK
    kept = np.flatnonzero(ok)
    duplicates = 0
    if spec.dedup and len(kept):
        digests = records["digest"][kept]
        _, first = np.unique(digests, return_index=True)
        duplicates = len(kept) - len(first)
        kept = kept[np.sort(first)]
    in_hold = _holdout_mask(records["digest"], kept, spec)
    held, kept = kept[in_hold], kept[~in_hold]
    lengths = records["length"].astype(np.int64)
    long = lengths[kept] > seq_len
    overlong = int(long.sum())
    if spec.overlong == "drop":
        kept = kept[~long]
    lengths = np.minimum(lengths, seq_len)
    before_limit = len(kept)
    if spec.limit is not None and len(kept) > spec.limit:
        rng = np.random.default_rng([spec.seed, 1])
        kept = np.sort(rng.choice(kept, spec.limit, replace=False))
    counts = {"raw": n, "broken": int((~ok).sum()), "duplicates": duplicates, "held_out": len(held),
              "overlong_dropped": overlong if spec.overlong == "drop" else 0,
              "overlong_truncated": overlong if spec.overlong == "truncate" else 0,
              "limited": before_limit - len(kept), "size": len(kept)}
    return SourcePool(spec.name, kept, held, lengths, counts)


def _holdout_mask(digests: np.ndarray, kept: np.ndarray, spec: SourceSpec) -> np.ndarray:
    if spec.holdout == 0:
        return np.zeros(len(kept), bool)
    size = digests.dtype.itemsize
    return holdout_mask(np.ascontiguousarray(digests[kept]).tobytes(), size, spec.holdout, spec.seed)


@dataclass(frozen=True)
class Selection:
    allocation: Allocation
    sources: np.ndarray = field(repr=False)  # per sample: index of its take in mix.takes
    records: np.ndarray = field(repr=False)  # per sample: record index into that source's cache


def select(mix: MixSpec, pools: dict[str, SourcePool]) -> Selection:
    by_tokens = mix.by == "tokens"
    requests = [TakeRequest(t.source, pools[t.source].tokens if by_tokens else pools[t.source].size,
                            t.share, t.rest, t.max_epochs) for t in mix.takes]
    total = mix.total.amount if mix.total else None
    allocation = allocate(requests, total=total, temperature=mix.temperature, unit=mix.by)
    chosen = [_choose(mix, i, pools[t.source], allocation.takes[i].samples, by_tokens)
              for i, t in enumerate(mix.takes)]
    sources = np.concatenate([np.full(len(c), i, np.int32) for i, c in enumerate(chosen)] or [np.zeros(0, np.int32)])
    records = np.concatenate(chosen or [np.zeros(0, np.int64)])
    order = np.random.default_rng([mix.seed, 0]).permutation(len(records))
    return Selection(allocation, sources[order], records[order])


def _choose(mix: MixSpec, take: int, pool: SourcePool, amount: int, by_tokens: bool) -> np.ndarray:
    """`amount` samples (or, by tokens, whole samples until `amount` tokens) from the pool:
    every record once per epoch, each epoch in a seeded order."""
    if amount == 0 or pool.size == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([mix.seed, zlib.crc32(pool.name.encode()), 2])
    if not by_tokens:
        epochs, rest = divmod(amount, pool.size)
        parts = [rng.permutation(pool.usable) for _ in range(epochs)]
        parts.append(rng.permutation(pool.usable)[:rest])
        return np.concatenate(parts)
    return _choose_tokens(rng, pool, amount)


def _choose_tokens(rng: np.random.Generator, pool: SourcePool, tokens: int) -> np.ndarray:
    parts, have = [], 0
    while have < tokens:
        epoch = rng.permutation(pool.usable)
        cumulative = np.cumsum(pool.lengths[epoch])
        need = tokens - have
        if cumulative[-1] >= need:
            cut = int(np.searchsorted(cumulative, need)) + 1
            parts.append(epoch[:cut])
            break
        parts.append(epoch)
        have += int(cumulative[-1])
    return np.concatenate(parts)


def share(part: int, whole: int) -> float:
    return round(float(Fraction(part, whole)), 9) if whole else 0.0
