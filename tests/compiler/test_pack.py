"""Tests for compiler.pack's reading of samples from token caches."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from compiler import pack
from mixlang.diagnostics import MixError


def make_cache(directory: pathlib.Path, tokens: int, seed: int, dtype: type = np.uint32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, np.iinfo(dtype).max, tokens, dtype=dtype, endpoint=True)
    mask = rng.integers(0, 2, tokens, dtype=np.uint8)
    directory.mkdir()
    ids.tofile(directory / "tokens.bin")
    mask.tofile(directory / "mask.bin")
    return ids, mask


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
@pytest.mark.parametrize("seed", range(5))
def test_read_gives_every_sample_as_slicing_would(tmp_path: pathlib.Path, seed: int, dtype: type) -> None:
    """Runs of samples that follow each other in a cache, repeats, truncated samples and two
    caches, in a shuffled order; ids of either width a cache holds."""
    caches = [make_cache(tmp_path / f"c{i}", 30_000, seed * 10 + i, dtype) for i in range(2)]
    rng = np.random.default_rng(seed)
    records = np.arange(0, 30_000, 10)  # records of 10 tokens, back to back
    sources = rng.integers(0, 2, 6_000)
    starts = rng.choice(records[:-1], 6_000)
    starts[:2_000] = records[:2_000]  # a run of 2,000 consecutive records in cache 0
    sources[:2_000] = 0
    others = (np.arange(6_000) >= 2_000) & (sources == 0)
    starts[others] = rng.choice(records[2_000:-1], int(others.sum()))  # nothing else in its range
    lengths = np.where(rng.random(6_000) < 0.2, rng.integers(1, 10, 6_000), 10)  # some truncated
    lengths[:2_000] = 10
    order = rng.permutation(6_000)
    sources, starts, lengths = sources[order], starts[order], lengths[order]
    readers = [pack._SampleReader(str(tmp_path / f"c{i}"), np.dtype(dtype)) for i in range(2)]
    try:
        ids, mask = pack._read(readers, sources, starts, lengths)
    finally:
        for r in readers:
            r.__exit__(None, None, None)
    expected_ids = np.concatenate([caches[s][0][o:o + n] for s, o, n in zip(sources, starts, lengths)])
    expected_mask = np.concatenate([caches[s][1][o:o + n] for s, o, n in zip(sources, starts, lengths)])
    assert ids.dtype == dtype and np.array_equal(ids, expected_ids) and np.array_equal(mask, expected_mask)


def test_a_cache_shorter_than_its_records_is_an_error(tmp_path: pathlib.Path) -> None:
    make_cache(tmp_path / "c0", 100, 0)
    with pack._SampleReader(str(tmp_path / "c0"), np.dtype(np.uint32)) as reader:
        with pytest.raises(MixError, match="damaged"):
            pack._read([reader], np.array([0, 0]), np.array([0, 95]), np.array([10, 10]))


def test_write_rows_streams_every_row_in_order_across_chunks(tmp_path: pathlib.Path, monkeypatch) -> None:
    """Rows go out in order, whole, while the next chunk is read ahead: many small chunks and
    shards that roll over, read back and compared with slicing the caches."""
    from compiler.cache import TokenCache
    from compiler.encode import RECORD_DTYPE
    from compiler.shards import ShardSetWriter, read_shard

    caches, arrays = [], []
    for i in range(2):
        ids, mask = make_cache(tmp_path / f"c{i}", 20_000, i, np.uint16)
        ids %= 1000
        ids.tofile(tmp_path / f"c{i}" / "tokens.bin")
        records = np.zeros(1000, RECORD_DTYPE)
        records["offset"], records["length"] = np.arange(0, 20_000, 20), 20
        records.tofile(tmp_path / f"c{i}" / "records.bin")
        caches.append(TokenCache(str(tmp_path / f"c{i}"), f"k{i}", {"dtype": "uint16"}))
        arrays.append((ids, mask))
    rng = np.random.default_rng(7)
    sources, records = rng.integers(0, 2, 3000), rng.integers(0, 1000, 3000)
    lengths = rng.integers(1, 21, 3000)
    starts = pack.row_starts(lengths, 64, True)
    monkeypatch.setattr(pack, "CHUNK_TOKENS", 300)
    out = tmp_path / "out"
    out.mkdir()
    with ShardSetWriter(str(out), "train", 1000, max_shard_bytes=20_000) as writer:
        pack.write_rows(writer, caches, sources, records, lengths, starts)
        shards = writer.close()
    assert len(shards) > 3
    rows = [row for shard in shards for row in read_shard(str(out), shard.name)]
    assert len(rows) == len(starts)
    got = [sample for row in rows for sample in row]
    assert [len(row) for row in rows] == np.diff(np.append(starts, len(records))).tolist()
    for (ids, mask, source), s, r, n in zip(got, sources, records, lengths):
        assert source == s
        assert np.array_equal(ids, arrays[s][0][20 * r:20 * r + n]) and np.array_equal(mask, arrays[s][1][20 * r:20 * r + n])
