"""Record readers: one data file in, a stream of records and a raw record count out.

`iter_file(path)` yields `(RecordRef, record)` for every record of one file, in file order, and
never holds the file in memory: JSON Lines line by line, Parquet by `iter_batches`, CSV through
pyarrow's streaming reader, Arrow files of a `datasets` save_to_disk directory through the IPC
stream reader on a memory map. The one exception is a `.json` file holding a single JSON array,
which is loaded whole (`json.load`); a `.json` file whose first non-space character is not `[`
is read as JSON Lines. A record that cannot be used (invalid JSON, not an object) is yielded as
a `RecordError` in place of the record, so the caller decides what `on_error` means.

`count_records_fast(files)` counts records without parsing them: non-blank lines of JSON Lines
at disk speed, Parquet footer metadata, CSV rows, Arrow batch lengths, JSON array lengths.
It agrees with the number of records `iter_file` yields, broken ones included.

A file that cannot be read at all (corrupt Parquet, a JSON array with a syntax error, I/O
errors) is a `MixError` E506 naming the file. Blank and whitespace-only lines are not records;
what counts as whitespace is `bytes.strip`'s set, in both the reader and the counter.
"""

from __future__ import annotations

import json
import mmap
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from mixlang.diagnostics import MixError, error

CHUNK_SIZE = 16 * 1024 * 1024
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
ARROW_SUFFIX = ".arrow"  # only as listed by a save_to_disk directory
_WHITESPACE = b" \t\n\r\x0b\x0c"
_BATCH_ROWS = 1024


@dataclass(frozen=True)
class RecordRef:
    """Where a record came from. `line` is 1-based: the physical line for JSON Lines (blank
    lines counted, so an editor finds it), otherwise the record's row number in its file (the
    index in a JSON array, the Parquet/Arrow row, the CSV data row with the header excluded)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class RecordError(Exception):
    """A record that cannot be used. `field` names the offending field (`messages[2].content`),
    or is None when the record as a whole is at fault (invalid JSON, not an object)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message if field is None else f"field `{field}`: {message}")
        self.field = field
        self.message = message


def suffix(path: str) -> str:
    """The lowercase extension that picks the reader."""
    return os.path.splitext(path)[1].lower()


def iter_file(path: str) -> Iterator[tuple[RecordRef, dict | RecordError]]:
    """Every record of one file, in order (see the module docstring for each format)."""
    kind = suffix(path)
    if kind == ".json" and _first_byte(path) == b"[":
        return _json_array_records(path)
    if kind in (".jsonl", ".json"):
        return _json_lines_records(path)
    return _rows(path, _batches(path, kind))


def count_records_fast(files: Iterable[str], chunk_size: int = CHUNK_SIZE) -> int:
    """Raw record count of the files, blank lines excluded, without parsing records."""
    return sum(_count_file(path, chunk_size) for path in files)


def _count_file(path: str, chunk_size: int) -> int:
    kind = suffix(path)
    if kind == ".json" and _first_byte(path) == b"[":
        return len(_load_json_array(path))
    if kind in (".jsonl", ".json"):
        return _count_json_lines(path, chunk_size)
    if kind == ".parquet":
        return _parquet_rows(path)
    return sum(batch.num_rows for batch in _batches(path, kind))


# JSON -----------------------------------------------------------------------------------------

def _json_lines_records(path: str) -> Iterator[tuple[RecordRef, dict | RecordError]]:
    with _reading(path), open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield RecordRef(path, number), _parse_object(line)


def _parse_object(line: bytes) -> dict | RecordError:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        return RecordError(None, f"invalid JSON: {_json_reason(exc)}")
    return _as_record(value)


def _as_record(value: Any) -> dict | RecordError:
    if isinstance(value, dict):
        return value
    return RecordError(None, f"expected a JSON object, found {_json_type(value)}")


def _json_array_records(path: str) -> Iterator[tuple[RecordRef, dict | RecordError]]:
    for number, value in enumerate(_load_json_array(path), 1):
        yield RecordRef(path, number), _as_record(value)


def _load_json_array(path: str) -> list:
    """A whole `.json` array file (the one reader that holds its file in memory)."""
    with _reading(path), open(path, "rb") as f:
        try:
            value = json.load(f)
        except (ValueError, RecursionError) as exc:
            raise _unreadable(path, f"not valid JSON: {_json_reason(exc)}") from None
    if not isinstance(value, list):  # unreachable for text starting with `[`; kept for safety
        raise _unreadable(path, f"expected a JSON array, found {_json_type(value)}")
    return value


def _first_byte(path: str) -> bytes:
    """The file's first byte that is not whitespace or a UTF-8 byte order mark (b"" if none)."""
    with _reading(path), open(path, "rb") as f:
        block = f.read(65536).removeprefix(b"\xef\xbb\xbf")
        while block:
            if rest := block.lstrip(_WHITESPACE):
                return rest[:1]
            block = f.read(65536)
    return b""


def _json_reason(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        where = f"line {exc.lineno}, column {exc.colno}" if exc.lineno > 1 else f"column {exc.colno}"
        return f"{exc.msg.lower()} at {where}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _count_json_lines(path: str, chunk_size: int) -> int:
    """Count through a memory map: numpy scans the page cache with no copy into Python."""
    with _reading(path), open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return count_lines(data, chunk_size)


def count_lines(data: Any, chunk_size: int = CHUNK_SIZE) -> int:
    """Non-blank lines of a buffer (bytes, or a memory-mapped file), at disk speed. Each chunk's
    newlines are found with numpy; a chunk where a newline is followed by whitespace (in the
    chunk, or across its start) might hold a blank line and is counted line by line; any other
    chunk has exactly one line per newline. `pending` is true while the line in progress holds
    nothing but whitespace so far (it starts true: the file's first line)."""
    import numpy as np

    is_newline = np.empty(min(chunk_size, len(data)), dtype=bool)  # reused for every chunk
    count, pending = 0, True
    for start in range(0, len(data), chunk_size):
        chunk = np.frombuffer(data, np.uint8, count=min(chunk_size, len(data) - start), offset=start)
        newlines = np.flatnonzero(np.equal(chunk, 0x0A, out=is_newline[: len(chunk)]))
        if (pending and int(chunk[0]) in _WHITESPACE) or _space_after_newline(chunk, newlines):
            lines, pending = _count_exact(chunk.tobytes(), pending)
        else:
            lines, pending = len(newlines), bool(chunk[-1] == 0x0A)
        count += lines
    return count + (not pending)


def _space_after_newline(chunk: Any, newlines: Any) -> bool:
    import numpy as np

    table = np.zeros(256, dtype=bool)
    table[list(_WHITESPACE)] = True
    inner = newlines[:-1] if len(newlines) and newlines[-1] == len(chunk) - 1 else newlines
    return bool(table[chunk[inner + 1]].any())


def _count_exact(chunk: bytes, pending: bool) -> tuple[int, bool]:
    pieces = chunk.split(b"\n")
    first_has_text = not pending or bool(pieces[0].strip())
    if len(pieces) == 1:
        return 0, not first_has_text
    inner = sum(1 for piece in pieces[1:-1] if piece.strip())
    return int(first_has_text) + inner, not pieces[-1].strip()


# Arrow-based formats -------------------------------------------------------------------------

def _rows(path: str, batches: Iterator[Any]) -> Iterator[tuple[RecordRef, dict]]:
    number = 0
    for batch in batches:
        for row in batch.to_pylist():
            number += 1
            yield RecordRef(path, number), row


def _batches(path: str, kind: str) -> Iterator[Any]:
    """Record batches of a Parquet, CSV or Arrow stream file, one at a time."""
    import pyarrow as pa

    with _reading(path, pa.ArrowException):
        if kind == ".parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(path).iter_batches(batch_size=_BATCH_ROWS)
        elif kind == ".csv":
            if os.path.getsize(path) > 0:
                yield from _csv_reader(path)
        elif kind == ARROW_SUFFIX:
            with pa.memory_map(path) as source:
                yield from pa.ipc.open_stream(source)
        else:
            raise AssertionError(f"no reader for {kind}")  # resolve_files admits no other kind


def _csv_reader(path: str) -> Any:
    """A streaming CSV reader with every column read as a string, so type inference on the
    first block can never fail on a later one; quoted values may span lines."""
    import pyarrow as pa
    from pyarrow import csv

    parse = csv.ParseOptions(newlines_in_values=True)
    names = csv.open_csv(path, parse_options=parse).schema.names
    convert = csv.ConvertOptions(column_types={name: pa.string() for name in names})
    return csv.open_csv(path, parse_options=parse, convert_options=convert)


def _parquet_rows(path: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _reading(path, pa.ArrowException):
        return pq.ParquetFile(path).metadata.num_rows


# Errors ---------------------------------------------------------------------------------------

@contextmanager
def _reading(path: str, *errors: type[BaseException]) -> Iterator[None]:
    """Turn I/O errors (and the given library errors) while reading `path` into a MixError."""
    try:
        yield
    except (OSError, *errors) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _unreadable(path, reason[:1].lower() + reason[1:]) from None


def _unreadable(path: str, reason: str) -> MixError:
    return MixError(error(
        "E506", f"cannot read `{path}`: {reason}",
        help="check that the file is complete and in the format its extension says",
    ))
