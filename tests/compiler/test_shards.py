"""Tests for compiler.shards, on real files under tmp_path; Megatron-Core reads them back.

megatron-core (the `test` extra) is imported inside the tests that need it, never skipped: if it
is missing those tests fail, the rest still run.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.shards import (
    TMP_PREFIX, ShardInfo, ShardReader, ShardSetWriter, read_shard, sha256_file, token_dtype,
)

Row = list[tuple[np.ndarray, np.ndarray, int]]
SMALL_VOCAB, LARGE_VOCAB = 1000, 70000


def megatron() -> ModuleType:
    with warnings.catch_warnings():  # megatron.core warns about missing Apex/Transformer Engine
        warnings.simplefilter("ignore")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


@st.composite
def rows_strategy(draw: st.DrawFn, vocab: int, max_rows: int = 8) -> list[Row]:
    rows = []
    for _ in range(draw(st.integers(0, max_rows))):
        row = []
        for _ in range(draw(st.integers(1, 4))):
            n = draw(st.integers(1, 24))
            ids = draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n))
            mask = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
            row.append((np.array(ids, dtype=np.int64), np.array(mask, dtype=np.uint8),
                        draw(st.integers(0, 7))))
        rows.append(row)
    return rows


def random_rows(seed: int, count: int, vocab: int = SMALL_VOCAB) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        lengths = rng.integers(1, 40, size=rng.integers(1, 5))
        rows.append([(rng.integers(0, vocab, n), rng.integers(0, 2, n).astype(np.uint8),
                      int(rng.integers(0, 5))) for n in lengths])
    return rows


def write(directory: Path, rows: list[Row], vocab: int = SMALL_VOCAB, split: str = "train",
          **kw: int) -> tuple[ShardInfo, ...]:
    directory.mkdir(parents=True, exist_ok=True)
    writer = ShardSetWriter(str(directory), split, vocab, **kw)
    for row in rows:
        writer.add_row(row)
    return writer.close()


def read_all(directory: Path, infos: tuple[ShardInfo, ...]) -> list[Row]:
    return [row for info in infos for row in read_shard(str(directory), info.name)]


def assert_rows_equal(got: list[Row], want: list[Row]) -> None:
    assert len(got) == len(want)
    for got_row, want_row in zip(got, want):
        assert len(got_row) == len(want_row)
        for (ids, mask, source), (want_ids, want_mask, want_source) in zip(got_row, want_row):
            np.testing.assert_array_equal(ids.astype(np.int64), want_ids)
            np.testing.assert_array_equal(mask, want_mask)
            assert mask.dtype == np.uint8
            assert source == want_source


def megatron_builder_files(directory: Path, rows: list[Row], dtype: np.dtype) -> dict[str, bytes]:
    """What megatron's own IndexedDatasetBuilder writes for the same rows (tokens and mask)."""
    out = {}
    for kind, kind_dtype, column in (("tokens", dtype, 0), ("mask", np.dtype(np.uint8), 1)):
        prefix = str(directory / f"megatron.{kind}")
        builder = megatron().IndexedDatasetBuilder(prefix + ".bin", dtype=kind_dtype.type)
        for row in rows:
            for sample in row:
                builder.add_item(torch.from_numpy(np.asarray(sample[column], dtype=np.int64)))
            builder.end_document()
        builder.finalize(prefix + ".idx")
        out[f"{kind}.bin"] = Path(prefix + ".bin").read_bytes()
        out[f"{kind}.idx"] = Path(prefix + ".idx").read_bytes()
    return out


# --- round trip -------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), vocab=st.sampled_from([SMALL_VOCAB, LARGE_VOCAB]),
       max_bytes=st.sampled_from([1, 64, 2**20]))
def test_round_trip(data: st.DataObject, vocab: int, max_bytes: int) -> None:
    rows = data.draw(rows_strategy(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        infos = write(Path(tmp), rows, vocab, max_shard_bytes=max_bytes)
        assert_rows_equal(read_all(Path(tmp), infos), rows)
        assert sum(i.documents for i in infos) == len(rows)
        assert sum(i.sequences for i in infos) == sum(len(r) for r in rows)
        assert sum(i.tokens for i in infos) == sum(len(s[0]) for r in rows for s in r)
        assert sum(i.loss_tokens for i in infos) == sum(int(s[1].sum()) for r in rows for s in r)


def test_reader_exposes_megatron_layout(tmp_path: Path) -> None:
    rows = random_rows(1, 5)
    (info,) = write(tmp_path, rows)
    reader = ShardReader(str(tmp_path / f"{info.name}.tokens"))
    assert len(reader) == info.sequences
    assert reader.document_indices.tolist() == [0, *np.cumsum([len(r) for r in rows]).tolist()]
    np.testing.assert_array_equal(reader.sequence(0), rows[0][0][0])


def test_mask_accepts_bool(tmp_path: Path) -> None:
    rows = [[(np.array([5, 6, 7]), np.array([False, True, True]), 2)]]
    (info,) = write(tmp_path, rows)
    assert info.loss_tokens == 2
    assert_rows_equal(read_all(tmp_path, (info,)), [[(r[0], r[1].astype(np.uint8), r[2])
                                                       for r in rows[0]]])


# --- megatron-core reads what we write, and writes the same bytes ----------------------------

@pytest.mark.parametrize("vocab", [SMALL_VOCAB, LARGE_VOCAB])
def test_megatron_indexed_dataset_reads_shards(tmp_path: Path, vocab: int) -> None:
    rows = random_rows(2, 30, vocab)
    infos = write(tmp_path, rows, vocab, max_shard_bytes=2000)
    assert len(infos) > 1
    read_back = [row for info in infos for row in megatron_rows(tmp_path, info, vocab)]
    assert_rows_equal(read_back, rows)


def megatron_rows(directory: Path, info: ShardInfo, vocab: int) -> list[Row]:
    """One shard read by megatron's IndexedDataset, its index checked against what was written."""
    tokens = megatron().IndexedDataset(str(directory / f"{info.name}.tokens"))
    mask = megatron().IndexedDataset(str(directory / f"{info.name}.mask"))
    lengths = [len(s[0]) for row in read_shard(str(directory), info.name) for s in row]
    for dataset in (tokens, mask):
        assert len(dataset) == info.sequences
        assert dataset.sequence_lengths.tolist() == lengths
        assert dataset.document_indices[0] == 0
        assert len(dataset.document_indices) == info.documents + 1
    assert tokens.index.dtype == token_dtype(vocab).type and mask.index.dtype == np.uint8
    sources = np.load(directory / f"{info.name}.sources.npy")
    docs = tokens.document_indices.tolist()
    # copies: megatron's arrays are views into maps that close with the dataset (use after = crash)
    return [[(tokens[i].copy(), mask[i].copy(), int(sources[i])) for i in range(a, b)]
            for a, b in zip(docs[:-1], docs[1:])]


@settings(max_examples=25, deadline=None)
@given(data=st.data(), vocab=st.sampled_from([SMALL_VOCAB, LARGE_VOCAB]))
def test_byte_identical_to_megatron_builder(data: st.DataObject, vocab: int) -> None:
    rows = data.draw(rows_strategy(vocab, max_rows=6).filter(bool))
    with tempfile.TemporaryDirectory() as tmp:
        (info,) = write(Path(tmp), rows, vocab)
        want = megatron_builder_files(Path(tmp), rows, token_dtype(vocab))
        for suffix, content in want.items():
            assert (Path(tmp) / f"{info.name}.{suffix}").read_bytes() == content, suffix


def test_index_header_counts_leading_zero(tmp_path: Path) -> None:
    (info,) = write(tmp_path, random_rows(3, 4))
    idx = (tmp_path / f"{info.name}.mask.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    assert int.from_bytes(idx[9:17], "little") == 1
    assert idx[17] == 1  # uint8
    assert int.from_bytes(idx[18:26], "little") == info.sequences
    assert int.from_bytes(idx[26:34], "little") == info.documents + 1


# --- rollover, hashes, dtypes ------------------------------------------------------------------

def test_rollover_keeps_rows_whole(tmp_path: Path) -> None:
    rows = random_rows(4, 60)
    limit = 1500
    infos = write(tmp_path, rows, max_shard_bytes=limit)
    assert len(infos) >= 3
    assert [i.name for i in infos] == [f"train-{n:05d}" for n in range(len(infos))]
    assert_rows_equal(read_all(tmp_path, infos), rows)
    assert sum(i.documents for i in infos) == len(rows)
    for info in infos:
        size = os.path.getsize(tmp_path / f"{info.name}.tokens.bin")
        assert size == 2 * info.tokens
        if info is not infos[-1]:
            assert size >= limit
            last_row = list(read_shard(str(tmp_path), info.name))[-1]
            assert size - 2 * sum(len(s[0]) for s in last_row) < limit


def test_shard_info_files_and_hashes(tmp_path: Path) -> None:
    infos = write(tmp_path, random_rows(5, 40), max_shard_bytes=1000)
    for info in infos:
        names = [name for name, _ in info.files]
        assert names == sorted(names) == sorted(
            f"{info.name}.{s}" for s in
            ("tokens.bin", "tokens.idx", "mask.bin", "mask.idx", "sources.npy"))
        for name, digest in info.files:
            assert sha256_file(str(tmp_path / name)) == digest
    listed = {name for info in infos for name, _ in info.files}
    assert listed == set(os.listdir(tmp_path))


def test_files_relative_to_build_dir(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "mix"
    directory.mkdir(parents=True)
    writer = ShardSetWriter(str(directory), "validation", SMALL_VOCAB, relative_to=str(tmp_path))
    writer.add_row(random_rows(6, 1)[0])
    (info,) = writer.close()
    assert info.name == "validation-00000"
    for name, digest in info.files:
        assert name.startswith(os.path.join("data", "mix", "validation-00000."))
        assert sha256_file(str(tmp_path / name)) == digest


@pytest.mark.parametrize("vocab, dtype, code", [
    (100, np.uint16, 8), (65535, np.uint16, 8), (65536, np.int32, 4), (200_000, np.int32, 4),
])
def test_token_dtype_follows_vocab(tmp_path: Path, vocab: int, dtype: type, code: int) -> None:
    ids = np.array([0, vocab - 1, vocab // 2])
    (info,) = write(tmp_path, [[(ids, np.ones(3, np.uint8), 0)]], vocab)
    assert token_dtype(vocab) == dtype
    assert (tmp_path / f"{info.name}.tokens.idx").read_bytes()[17] == code
    assert os.path.getsize(tmp_path / f"{info.name}.tokens.bin") == 3 * np.dtype(dtype).itemsize
    (row,) = read_shard(str(tmp_path), info.name)
    assert row[0][0].dtype == dtype
    np.testing.assert_array_equal(row[0][0], ids)


# --- atomicity, determinism, edge cases --------------------------------------------------------

def test_no_temp_files_and_deterministic(tmp_path: Path) -> None:
    rows = random_rows(7, 50)
    first = write(tmp_path / "a", rows, max_shard_bytes=1200)
    second = write(tmp_path / "b", rows, max_shard_bytes=1200)
    assert first == second
    assert sorted(os.listdir(tmp_path / "a")) == sorted(os.listdir(tmp_path / "b"))
    for name in os.listdir(tmp_path / "a"):
        assert not name.startswith(TMP_PREFIX)
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_open_shard_is_temporary_until_finished(tmp_path: Path) -> None:
    writer = ShardSetWriter(str(tmp_path), "train", SMALL_VOCAB)
    writer.add_row(random_rows(8, 1)[0])
    assert all(name.startswith(TMP_PREFIX) for name in os.listdir(tmp_path))
    writer.close()
    assert not any(name.startswith(TMP_PREFIX) for name in os.listdir(tmp_path))


def test_exception_removes_temp_files(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with ShardSetWriter(str(tmp_path), "train", SMALL_VOCAB, max_shard_bytes=100) as writer:
            for row in random_rows(9, 20):
                writer.add_row(row)
            raise RuntimeError("boom")
    assert os.listdir(tmp_path)  # finished shards stay
    assert not any(name.startswith(TMP_PREFIX) for name in os.listdir(tmp_path))


def test_empty_split(tmp_path: Path) -> None:
    assert write(tmp_path, []) == ()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("sample", [
    (np.array([1, 2]), np.array([1]), 0),
    (np.array([], dtype=np.int64), np.array([], dtype=np.uint8), 0),
    (np.array([1, SMALL_VOCAB]), np.array([1, 1]), 0),
    (np.array([-1, 2]), np.array([1, 1]), 0),
    (np.array([1.0, 2.0]), np.array([1, 1]), 0),
    (np.array([1, 2]), np.array([1, 2]), 0),
    (np.array([1, 2]), np.array([1, 1]), 40000),
    (np.array([[1, 2]]), np.array([[1, 1]]), 0),
])
def test_bad_samples_are_rejected(tmp_path: Path, sample: tuple) -> None:
    writer = ShardSetWriter(str(tmp_path), "train", SMALL_VOCAB)
    with pytest.raises(ValueError):
        writer.add_row([sample])
    with pytest.raises(ValueError):
        writer.add_row([])
    assert writer.close() == ()


def add_rows_in_chunks(writer: ShardSetWriter, rows: list[Row], cuts: list[int]) -> None:
    """Give `rows` to `add_rows` in runs split at `cuts` (row indices)."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(rows))), len(rows)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        samples = [s for row in rows[a:b] for s in row]
        writer.add_rows(np.concatenate([ids for ids, _, _ in samples]), np.concatenate([m for _, m, _ in samples]),
                        np.array([len(ids) for ids, _, _ in samples]), np.array([s for _, _, s in samples]),
                        np.array([len(row) for row in rows[a:b]]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), max_bytes=st.sampled_from([1, 40, 100, 256 * 2**20]))
def test_add_rows_writes_what_add_row_writes(data: st.DataObject, max_bytes: int) -> None:
    """Many rows at once give the same shards, byte for byte, as one row at a time, wherever
    the runs are cut and however often a shard rolls over inside one run."""
    rows = [r for r in data.draw(rows_strategy(SMALL_VOCAB, max_rows=12))]
    cuts = data.draw(st.lists(st.integers(0, 12), max_size=4))
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as many:
        expected = write(Path(one), rows, max_shard_bytes=max_bytes)
        writer = ShardSetWriter(many, "train", SMALL_VOCAB, max_shard_bytes=max_bytes)
        if rows:
            add_rows_in_chunks(writer, rows, cuts)
        assert writer.close() == expected
        for name in os.listdir(one):
            assert (Path(one) / name).read_bytes() == (Path(many) / name).read_bytes(), name


@pytest.mark.parametrize("change", [
    {"lengths": [2, 2]}, {"lengths": [3, 0, 1]}, {"sources": [0, 1]}, {"sources": [0, -1, 0]},
    {"row_sizes": [1, 1]}, {"row_sizes": [3, 0]}, {"ids": [1, 2, 3, SMALL_VOCAB]}, {"mask": [0, 2, 1, 1]},
])
def test_add_rows_rejects_inconsistent_runs(tmp_path: Path, change: dict) -> None:
    good = {"ids": [1, 2, 3, 4], "mask": [0, 1, 1, 1], "lengths": [2, 1, 1], "sources": [0, 1, 0], "row_sizes": [2, 1]}
    writer = ShardSetWriter(str(tmp_path), "train", SMALL_VOCAB)
    with pytest.raises(ValueError):
        writer.add_rows(**{k: np.array(v) for k, v in {**good, **change}.items()})
    writer.add_rows(**{k: np.array(v) for k, v in good.items()})
    (info,) = writer.close()
    assert (info.sequences, info.documents, info.tokens, info.loss_tokens) == (3, 2, 4, 3)


def test_add_rows_rolls_over_at_exactly_the_limit(tmp_path: Path) -> None:
    """Rows of 2 tokens (4 bytes as uint16) with an 8-byte limit: every second row fills a
    shard exactly, so it closes there, as with add_row."""
    rows = [[(np.array([i, i + 1]), np.array([0, 1]), 0)] for i in range(5)]
    writer = ShardSetWriter(str(tmp_path / "many"), "train", SMALL_VOCAB, max_shard_bytes=8)
    (tmp_path / "many").mkdir()
    add_rows_in_chunks(writer, rows, [])
    infos = writer.close()
    assert [i.documents for i in infos] == [2, 2, 1]
    assert infos == write(tmp_path / "one", rows, max_shard_bytes=8)
