"""Shards: packed rows in; Megatron-Core indexed datasets on disk and one `ShardInfo` each out.

`ShardSetWriter` takes one split's packed rows, in order. A row is one document and holds one or
more samples; each sample is `(token_ids, loss_mask, source_index)` and becomes one sequence, so
sample boundaries are sequence boundaries and a trainer can reset positions per sample. Rows go
into a series of shards `{split}-{i:05d}`, each five files:

- `.tokens.bin` / `.tokens.idx`: token ids, uint16 when `vocab_size <= 65535`, else int32;
- `.mask.bin` / `.mask.idx`: loss masks, uint8, 1 = the token counts toward the loss;
- `.sources.npy`: int16, the source index of every sequence, so loss can be logged per source.

The `.bin`/`.idx` pairs are the Megatron-Core indexed dataset format (`IndexedDataset`), the
`.idx` byte for byte what its `_IndexWriter` writes: magic `MMIDIDX\\x00\\x00`, version `<Q` 1,
dtype code `<B`, sequence count `<Q`, document count `<Q` (the document indices' length, so rows
+ 1), sequence lengths int32, sequence pointers int64 (byte offsets into the `.bin`), document
indices int64 (a leading 0, then the sequence count at the end of every row).

A shard rolls over once its `.tokens.bin` reaches `max_shard_bytes`; a row is never split, so a
shard may pass the limit by less than one row. The `.bin` files are streamed; only per-sequence
lengths and sources are kept in memory. Every file is written as `.tmp-NAME` in the same
directory and hashed (sha256) while written; when a shard is complete its files are renamed into
place, the `.idx` files last, so a reader never sees a half-written shard. The same rows always
give byte-identical files. Shards left by an earlier, larger run of the same split are not
removed. `ShardReader` and `read_shard` read shards back with numpy alone (no Megatron).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from array import array
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Sequence

import numpy as np

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
TMP_PREFIX = ".tmp-"
DTYPE_CODES = {
    np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
    np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7,
    np.dtype(np.uint16): 8,
}
MASK_DTYPE = np.dtype(np.uint8)
SOURCE_DTYPE = np.dtype(np.int16)
_HEADER = struct.Struct("<9sQBQQ")
_MAX_SEQUENCE = 2**31 - 1
_BUFFER = 1 << 20

Sample = tuple[np.ndarray, np.ndarray, int]


@dataclass(frozen=True)
class ShardInfo:
    """One finished shard: its files with their sha256, and what it holds."""

    name: str
    files: tuple[tuple[str, str], ...]
    sequences: int
    documents: int
    tokens: int
    loss_tokens: int


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id of the vocabulary fits (Megatron code 8), else int32 (code 4)."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.int32)


def index_bytes(lengths: np.ndarray, document_indices: np.ndarray, dtype: np.dtype) -> bytes:
    """The `.idx` for sequences of `lengths` items of `dtype`, as megatron's `_IndexWriter` does."""
    lengths = np.asarray(lengths, dtype=np.int64)
    pointers = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1] * dtype.itemsize, out=pointers[1:])
    header = _HEADER.pack(
        INDEX_MAGIC, INDEX_VERSION, DTYPE_CODES[dtype], len(lengths), len(document_indices),
    )
    return b"".join((
        header, lengths.astype("<i4").tobytes(), pointers.astype("<i8").tobytes(),
        np.asarray(document_indices, dtype="<i8").tobytes(),
    ))


def sha256_file(path: str) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BUFFER):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingFile:
    """A file written under a temporary name and hashed as it is written; `commit` renames it."""

    def __init__(self, directory: str, name: str) -> None:
        self.name = name
        self.path = os.path.join(directory, name)
        self.tmp_path = os.path.join(directory, TMP_PREFIX + name)
        self._file: BinaryIO = open(self.tmp_path, "wb", buffering=_BUFFER)
        self._digest = hashlib.sha256()
        self.nbytes = 0

    def write(self, data: bytes | memoryview) -> int:
        self._file.write(data)
        self._digest.update(data)
        self.nbytes += len(data)
        return len(data)

    def finish(self) -> str:
        """Flush to disk, close, and return the sha256 hex digest."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._digest.hexdigest()

    def commit(self) -> None:
        os.replace(self.tmp_path, self.path)

    def abort(self) -> None:
        self._file.close()
        if os.path.exists(self.tmp_path):
            os.remove(self.tmp_path)


class _ShardBuilder:
    """One open shard: the two `.bin` files streamed, per-sequence lengths and sources kept."""

    def __init__(self, directory: str, name: str, dtype: np.dtype) -> None:
        self.directory, self.name, self.dtype = directory, name, dtype
        self.tokens = _HashingFile(directory, f"{name}.tokens.bin")
        self.mask = _HashingFile(directory, f"{name}.mask.bin")
        self.files = [self.tokens, self.mask]
        self.lengths = array("q")
        self.sources = array("q")
        self.document_indices = array("q", [0])
        self.loss_tokens = 0

    def add_rows(self, ids: np.ndarray, mask: np.ndarray, lengths: np.ndarray, sources: np.ndarray,
                 row_sizes: np.ndarray) -> None:
        """Checked rows (see `ShardSetWriter.add_rows`), in this shard's dtypes."""
        self.tokens.write(memoryview(ids).cast("B"))
        self.mask.write(memoryview(mask).cast("B"))
        self.document_indices.frombytes((len(self.lengths) + np.cumsum(row_sizes, dtype=np.int64)).tobytes())
        self.lengths.frombytes(lengths.astype(np.int64).tobytes())
        self.sources.frombytes(sources.astype(np.int64).tobytes())
        self.loss_tokens += int(np.count_nonzero(mask))

    def finish(self, relative_to: str) -> ShardInfo:
        """Write the `.idx` and `.npy` files, then rename all five into place, the `.idx` last."""
        self._write(f"{self.name}.sources.npy", _npy_bytes(self.sources))
        lengths, documents = np.asarray(self.lengths), np.asarray(self.document_indices)
        for kind, dtype in (("tokens", self.dtype), ("mask", MASK_DTYPE)):
            self._write(f"{self.name}.{kind}.idx", index_bytes(lengths, documents, dtype))
        digests = {f.name: f.finish() for f in self.files}
        for f in self.files:
            f.commit()
        return self._info(digests, relative_to)

    def _write(self, name: str, data: bytes) -> None:
        self.files.append(_HashingFile(self.directory, name))
        self.files[-1].write(data)

    def _info(self, digests: dict[str, str], relative_to: str) -> ShardInfo:
        rel = os.path.relpath(self.directory, relative_to)
        files = tuple(sorted((os.path.normpath(os.path.join(rel, name)), digest)
                             for name, digest in digests.items()))
        return ShardInfo(
            name=self.name, files=files, sequences=len(self.lengths),
            documents=len(self.document_indices) - 1, tokens=int(sum(self.lengths)),
            loss_tokens=self.loss_tokens,
        )

    def abort(self) -> None:
        for f in self.files:
            f.abort()


def _npy_bytes(values: array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=SOURCE_DTYPE), allow_pickle=False)
    return buffer.getvalue()


class ShardSetWriter:
    """Writes one split (e.g. "train" or "validation") as a series of shards in `directory`,
    rolling over to a new shard when the current one's token .bin reaches `max_shard_bytes`
    (rows are never split across shards).

    File names in `ShardInfo.files` are relative to `relative_to` (the build directory),
    `directory` itself by default. Use as a context manager to remove the open shard's temporary
    files when an exception escapes; `close` returns the finished shards.
    """

    def __init__(
        self, directory: str, split: str, vocab_size: int, max_shard_bytes: int = 256 * 2**20,
        relative_to: str | None = None,
    ) -> None:
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
        self.directory, self.split, self.vocab_size = directory, split, vocab_size
        self.max_shard_bytes = max_shard_bytes
        self.relative_to = directory if relative_to is None else relative_to
        self.dtype = token_dtype(vocab_size)
        self._shard: _ShardBuilder | None = None
        self._infos: list[ShardInfo] = []
        self._closed = False

    def add_row(self, samples: Sequence[tuple[np.ndarray, np.ndarray, int]]) -> None:
        """Add one packed row (one document); each `(token_ids, loss_mask, source_index)` is one
        sequence, with `len(token_ids) == len(loss_mask) > 0`."""
        if self._closed:
            raise ValueError("add_row after close")
        row = [self._checked(*sample) for sample in samples]
        if not row:
            raise ValueError("a row needs at least one sample")
        self.add_rows(np.concatenate([ids for ids, _, _ in row]), np.concatenate([mask for _, mask, _ in row]),
                      np.array([len(ids) for ids, _, _ in row]), np.array([source for _, _, source in row]),
                      np.array([len(row)]))

    def add_rows(self, ids: np.ndarray, mask: np.ndarray, lengths: np.ndarray, sources: np.ndarray,
                 row_sizes: np.ndarray) -> None:
        """Add many packed rows at once, as `add_row` would one by one: `ids` and `mask` are the
        samples' tokens back to back, `lengths` and `sources` have one entry per sample, and
        `row_sizes` the number of samples in each row. Checked as a whole: a bad value rejects
        all of them. A shard still rolls over after the row that takes it to the limit."""
        if self._closed:
            raise ValueError("add_rows after close")
        ids, mask, lengths, sources, row_sizes = self._checked_rows(ids, mask, lengths, sources, row_sizes)
        itemsize = self.dtype.itemsize
        row_ends = np.cumsum(row_sizes)  # samples
        sample_ends = np.concatenate(([0], np.cumsum(lengths)))  # tokens
        row_tokens = np.diff(np.concatenate(([0], sample_ends[row_ends])))
        row, sample, token = 0, 0, 0
        while row < len(row_sizes):
            shard = self._shard or self._open_shard()
            reach = shard.tokens.nbytes + itemsize * np.cumsum(row_tokens[row:])
            full = np.flatnonzero(reach >= self.max_shard_bytes)
            last = row + (int(full[0]) if len(full) else len(row_sizes) - row - 1)  # this shard's last row
            end_sample = int(row_ends[last])
            end_token = int(sample_ends[end_sample])
            shard.add_rows(ids[token:end_token], mask[token:end_token], lengths[sample:end_sample],
                           sources[sample:end_sample], row_sizes[row:last + 1])
            if len(full):
                self._finish_shard()
            row, sample, token = last + 1, end_sample, end_token

    def close(self) -> tuple[ShardInfo, ...]:
        """Finish the last shard and return every shard's info; a split without rows gives ()."""
        if not self._closed and self._shard is not None:
            self._finish_shard()
        self._closed = True
        return tuple(self._infos)

    def abort(self) -> None:
        """Drop the open shard's temporary files; finished shards stay."""
        if self._shard is not None:
            self._shard.abort()
            self._shard = None
        self._closed = True

    def __enter__(self) -> ShardSetWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()

    def _open_shard(self) -> _ShardBuilder:
        name = f"{self.split}-{len(self._infos):05d}"
        self._shard = _ShardBuilder(self.directory, name, self.dtype)
        return self._shard

    def _finish_shard(self) -> None:
        assert self._shard is not None
        self._infos.append(self._shard.finish(self.relative_to))
        self._shard = None

    def _checked(self, ids: np.ndarray, mask: np.ndarray, source: int) -> Sample:
        ids, mask = np.asarray(ids), np.asarray(mask)
        if ids.ndim != 1 or mask.shape != ids.shape or not 0 < len(ids) <= _MAX_SEQUENCE:
            raise ValueError(f"a sample needs 1-d ids and mask of one length > 0, got "
                             f"{ids.shape} and {mask.shape}")
        if ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must be integers in [0, {self.vocab_size})")
        if mask.dtype.kind not in "biu" or mask.min() < 0 or mask.max() > 1:
            raise ValueError("loss mask values must be 0 or 1")
        if not 0 <= int(source) <= np.iinfo(SOURCE_DTYPE).max:
            raise ValueError(f"source index {source} does not fit int16")
        return ids.astype(self.dtype.newbyteorder("<")), mask.astype(MASK_DTYPE), int(source)

    def _checked_rows(self, ids: np.ndarray, mask: np.ndarray, lengths: np.ndarray, sources: np.ndarray,
                      row_sizes: np.ndarray) -> tuple[np.ndarray, ...]:
        ids, mask = np.asarray(ids), np.asarray(mask)
        lengths, sources, row_sizes = (np.asarray(a, np.int64) for a in (lengths, sources, row_sizes))
        if ids.ndim != 1 or mask.shape != ids.shape:
            raise ValueError(f"ids and mask must be 1-d and of one length, got {ids.shape} and {mask.shape}")
        if lengths.ndim != 1 or len(lengths) == 0 or lengths.min() <= 0 or lengths.max() > _MAX_SEQUENCE \
                or int(lengths.sum()) != len(ids):
            raise ValueError("every sample needs a length > 0, and the lengths must add up to the ids")
        if sources.shape != lengths.shape or sources.min() < 0 or sources.max() > np.iinfo(SOURCE_DTYPE).max:
            raise ValueError("one source index a sample, each fitting int16")
        if row_sizes.ndim != 1 or len(row_sizes) == 0 or row_sizes.min() <= 0 or int(row_sizes.sum()) != len(lengths):
            raise ValueError("every row needs at least one sample, and the rows must hold every sample")
        if ids.dtype.kind not in "iu" or ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"token ids must be integers in [0, {self.vocab_size})")
        if mask.dtype.kind not in "biu" or mask.min() < 0 or mask.max() > 1:
            raise ValueError("loss mask values must be 0 or 1")
        return np.ascontiguousarray(ids, self.dtype.newbyteorder("<")), np.ascontiguousarray(mask, MASK_DTYPE), \
            lengths, sources, row_sizes


class ShardReader:
    """One indexed dataset (`prefix.bin` + `prefix.idx`) read through numpy memory maps."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        index = np.memmap(prefix + ".idx", dtype=np.uint8, mode="r")
        self.dtype, count, doc_count = _read_header(prefix + ".idx", bytes(index[:_HEADER.size]))
        offset = _HEADER.size
        self.sequence_lengths = np.frombuffer(index, "<i4", count, offset)
        offset += 4 * count
        self.sequence_pointers = np.frombuffer(index, "<i8", count, offset)
        offset += 8 * count
        self.document_indices = np.frombuffer(index, "<i8", doc_count, offset)
        self._data = _map_data(prefix + ".bin", self.dtype)
        self._validate(len(index) - offset - 8 * doc_count)

    def __len__(self) -> int:
        return len(self.sequence_lengths)

    def sequence(self, i: int) -> np.ndarray:
        start = int(self.sequence_pointers[i]) // self.dtype.itemsize
        return self._data[start:start + int(self.sequence_lengths[i])]

    def _validate(self, trailing: int) -> None:
        docs = self.document_indices
        if trailing != 0 or len(docs) == 0 or docs[0] != 0 or docs[-1] != len(self):
            raise ValueError(f"{self.prefix}.idx: inconsistent index")
        lengths = self.sequence_lengths.astype(np.int64)
        pointers = np.concatenate(([0], np.cumsum(lengths[:-1]))) * self.dtype.itemsize
        if not np.array_equal(self.sequence_pointers, pointers[:len(lengths)]):
            raise ValueError(f"{self.prefix}.idx: sequence pointers do not follow the lengths")
        if int(lengths.sum()) != len(self._data):
            raise ValueError(f"{self.prefix}.bin: size does not match its index")


def _read_header(path: str, header: bytes) -> tuple[np.dtype, int, int]:
    if len(header) < _HEADER.size:
        raise ValueError(f"{path}: too short for an index header")
    magic, version, code, count, doc_count = _HEADER.unpack(header)
    if magic != INDEX_MAGIC or version != INDEX_VERSION:
        raise ValueError(f"{path}: not a Megatron indexed dataset index (version 1)")
    dtypes = {c: d for d, c in DTYPE_CODES.items()}
    if code not in dtypes:
        raise ValueError(f"{path}: unknown dtype code {code}")
    return dtypes[code].newbyteorder("<"), count, doc_count


def _map_data(path: str, dtype: np.dtype) -> np.ndarray:
    if os.path.getsize(path) == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def read_shard(directory: str, name: str) -> Iterator[list[tuple[np.ndarray, np.ndarray, int]]]:
    """The rows of shard `name` as written: per row, its `(token_ids, loss_mask, source)`s."""
    prefix = os.path.join(directory, name)
    tokens, mask = ShardReader(prefix + ".tokens"), ShardReader(prefix + ".mask")
    sources = np.load(prefix + ".sources.npy", allow_pickle=False)
    if not (len(tokens) == len(mask) == len(sources)) or not np.array_equal(
        tokens.document_indices, mask.document_indices
    ):
        raise ValueError(f"{prefix}: tokens, mask and sources disagree")
    docs = tokens.document_indices
    for start, end in zip(docs[:-1].tolist(), docs[1:].tolist()):
        yield [(tokens.sequence(i), mask.sequence(i), int(sources[i])) for i in range(start, end)]
