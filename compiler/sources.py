"""Sources: a `SourceSpec` in; the files behind it, its records and its record count out.

`resolve_files` turns the spec's path (a file, a glob, a directory, or a `datasets`
save_to_disk directory) into a sorted tuple of data files; `iter_records` streams every record
of those files in order (readers in `compiler.records`), or of a hub dataset (`hf:ORG/NAME`).
`record_key` is the content a record is identified by, used by `dedup exact` and by `holdout`;
`in_holdout` decides membership from that key alone, so appending records never moves old ones
in or out. `count_source` produces a `SourceCount`: the exact number of records a mix may use,
by a fast raw count when nothing needs the records' content, else by one full pass.

User mistakes are `MixError`s with span None (the caller attaches the source's span):
E501 missing path, E502 glob without matches, E503 unsupported file, E504 directory without
data files, E505 unknown DatasetDict split, E506 unreadable file (`compiler.records`),
E507 broken record with `on_error fail`, E508 template syntax error, E509 hub unreachable.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, Iterator

from compiler.records import (
    ARROW_SUFFIX, DATA_SUFFIXES, RecordError, RecordRef, count_records_fast, iter_file, suffix,
)
from mixlang.diagnostics import Diagnostic, MixError, did_you_mean, error
from mixlang.program import ChatFormat, FormatSpec, PromptFormat, SourceSpec, TextFormat

__all__ = [
    "RecordError", "RecordRef", "SourceCount", "Templates", "count_records_fast", "count_source",
    "holdout_mask", "in_holdout", "iter_records", "record_key", "resolve_files",
]

_SUFFIXES_TEXT = ", ".join(f"`{s}`" for s in DATA_SUFFIXES)
_MAX_FIRST_ERRORS = 5


# Files ----------------------------------------------------------------------------------------

def resolve_files(spec: SourceSpec) -> tuple[str, ...]:
    """The data files behind a source, in reading order. A directory yields every data file
    below it (hidden files and directories skipped), sorted by path; a glob yields its matching
    files, sorted; a save_to_disk directory yields its Arrow files in the order it lists them."""
    path = spec.path
    if spec.is_hub:
        return (path,)
    if os.path.isdir(path):
        return _directory_files(path, spec.split)
    if os.path.exists(path):
        return (_checked_file(path),)
    if glob.has_magic(path):
        return _glob_files(path)
    raise MixError(error("E501", f"path `{path}` does not exist", help=_missing_help(path)))


def _checked_file(path: str, pattern: str | None = None) -> str:
    if suffix(path) in DATA_SUFFIXES:
        return path
    matched = f", matched by `{pattern}`," if pattern else ""
    raise MixError(error(
        "E503", f"`{path}`{matched} is not a supported data file",
        help=f"use {_SUFFIXES_TEXT} files, or a directory written by `datasets` save_to_disk",
    ))


def _glob_files(pattern: str) -> tuple[str, ...]:
    matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not matches:
        raise MixError(error(
            "E502", f"no files match `{pattern}`",
            help="check the pattern; it is relative to the `.mix` file that names it",
        ))
    return tuple(_checked_file(p, pattern) for p in matches)


def _directory_files(path: str, split: str | None) -> tuple[str, ...]:
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        return _saved_dataset_files(os.path.join(path, _pick_split(path, split)))
    if _is_saved_dataset(path):
        return _saved_dataset_files(path)
    files = sorted(_walk_data_files(path))
    if not files:
        raise MixError(error(
            "E504", f"directory `{path}` holds no data files",
            help=f"put {_SUFFIXES_TEXT} files below it, or point `path` at the files",
        ))
    return tuple(files)


def _walk_data_files(root: str) -> Iterator[str]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if folder != root and (_is_saved_dataset(folder) or "dataset_dict.json" in names):
            raise MixError(error(
                "E503", f"directory `{root}` holds a `datasets` save_to_disk directory `{folder}`",
                help="give that directory a source of its own",
            ))
        for name in names:
            if not name.startswith(".") and suffix(name) in DATA_SUFFIXES:
                yield os.path.join(folder, name)


def _is_saved_dataset(path: str) -> bool:
    if os.path.isfile(os.path.join(path, "state.json")):
        return True
    has_info = os.path.isfile(os.path.join(path, "dataset_info.json"))
    return has_info and bool(glob.glob(os.path.join(glob.escape(path), "*" + ARROW_SUFFIX)))


def _saved_dataset_files(path: str) -> tuple[str, ...]:
    """The Arrow files of one save_to_disk `Dataset`, in the order its state.json lists them."""
    state_path = os.path.join(path, "state.json")
    try:
        with open(state_path, encoding="utf-8") as f:
            names = [entry["filename"] for entry in json.load(f)["_data_files"]]
    except FileNotFoundError:
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(path), "*.arrow")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MixError(error("E506", f"cannot read `{state_path}`: {exc}",
                             help="write the dataset again with `save_to_disk`")) from None
    files = tuple(os.path.join(path, name) for name in names)
    for file in files:
        if not os.path.isfile(file):
            raise MixError(error("E501", f"`{state_path}` lists `{file}`, which does not exist",
                                 help="write the dataset again with `save_to_disk`"))
    return files


def _pick_split(path: str, split: str | None) -> str:
    """The split of a DatasetDict directory: `split`, or `train` when the source names none."""
    wanted = split or "train"
    try:
        with open(os.path.join(path, "dataset_dict.json"), encoding="utf-8") as f:
            splits = [str(s) for s in json.load(f)["splits"]]
    except (OSError, ValueError, KeyError, TypeError):
        splits = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if wanted in splits and os.path.isdir(os.path.join(path, wanted)):
        return wanted
    listed = ", ".join(f"`{s}`" for s in splits) or "none"
    raise MixError(error(
        "E505", f"`{path}` has no split `{wanted}`; its splits are {listed}",
        help=did_you_mean(wanted, splits) or "set `split` to one of the splits",
    ))


def _missing_help(path: str) -> str:
    parent = os.path.dirname(path)
    if parent and os.path.isdir(parent):
        near = did_you_mean(os.path.basename(path), os.listdir(parent))
        if near:
            return near
    return "check the path; it is relative to the `.mix` file that names it"


# Records --------------------------------------------------------------------------------------

def iter_records(spec: SourceSpec) -> Iterator[tuple[RecordRef, dict | Exception]]:
    """Every record of every file of the source, in order, as `(where, record)`; a record that
    is not a JSON object comes as `(where, RecordError)` instead, so `on_error` can apply."""
    if spec.is_hub:
        yield from _hub_records(spec)
        return
    for path in resolve_files(spec):
        yield from iter_file(path)


def _hub_records(spec: SourceSpec) -> Iterator[tuple[RecordRef, dict | Exception]]:
    """Stream a hub dataset. Any failure of the hub (network, auth, unknown name or split) is
    a user-facing MixError: this is a boundary with an outside service, not our code."""
    try:
        import datasets

        stream = datasets.load_dataset(spec.path[3:], split=spec.split or "train", streaming=True)
        for number, record in enumerate(stream, 1):
            yield RecordRef(spec.path, number), record
    except Exception as exc:  # noqa: BLE001 - see docstring
        raise MixError(_hub_error(spec, exc)) from None


def _hub_count(spec: SourceSpec) -> int | None:
    """The split's row count from the hub's dataset info, or None when the hub does not say."""
    try:
        import datasets

        splits = datasets.load_dataset_builder(spec.path[3:]).info.splits or {}
    except Exception as exc:  # noqa: BLE001 - a boundary with the hub, as in _hub_records
        raise MixError(_hub_error(spec, exc)) from None
    split = splits.get(spec.split or "train")
    return split.num_examples if split is not None and split.num_examples else None


def _hub_error(spec: SourceSpec, exc: BaseException) -> Diagnostic:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return error(
        "E509", f"cannot load `{spec.path}`: the Hugging Face hub is unreachable or refused ({reason})",
        help="download a local copy (`datasets` save_to_disk, or JSONL/Parquet files) and point `path` at it",
    )


# Record keys ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Templates:
    """The compiled prompt and response templates of a `prompt(...)` format."""

    prompt: Any
    response: Any

    @staticmethod
    def for_spec(spec: SourceSpec) -> Templates | None:
        """Compile the source's templates once (None for formats without templates)."""
        if not isinstance(spec.format, PromptFormat):
            return None
        try:
            return _compiled(spec.format)
        except _template_syntax_error() as exc:
            raise MixError(error(
                "E508", f"template of source `{spec.name}` does not compile: {exc.message} (line {exc.lineno})",
                help="fix the Jinja syntax of the `prompt` or `response` template",
            )) from None

    def render(self, record: dict) -> tuple[str, str]:
        """The prompt and response text of a record; RecordError when a field is missing."""
        return _render(self.prompt, record), _render(self.response, record)


@lru_cache(maxsize=64)
def _compiled(fmt: PromptFormat) -> Templates:
    env = _environment()
    return Templates(env.from_string(fmt.prompt), env.from_string(fmt.response))


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _template_syntax_error() -> type[Exception]:
    import jinja2

    return jinja2.TemplateSyntaxError


def _render(template: Any, record: dict) -> str:
    try:
        return template.render(record)
    except Exception as exc:  # noqa: BLE001 - a user's template on a user's record
        name = re.match(r"'([^']+)' is undefined", str(exc))
        if name:
            raise RecordError(name.group(1), "missing (the template uses it)") from None
        raise RecordError(None, f"template failed: {exc}") from None


def record_key(record: dict, fmt: FormatSpec, templates: Templates | None = None) -> bytes:
    """What the format uses from a record, in a canonical encoding (`canonical_bytes`): the chat
    messages, the text field's value, or the rendered `[prompt, response]`. RecordError when a
    field is missing or of the wrong type. `templates` are compiled from `fmt` when not given."""
    if isinstance(fmt, ChatFormat):
        return _canonical_messages(_messages(record, fmt.messages))
    if isinstance(fmt, TextFormat):
        value: Any = _text(record, fmt.field)
    else:
        value = list((templates or _compiled(fmt)).render(record))
    return canonical_bytes(value)


def canonical_bytes(value: Any) -> bytes:
    """A JSON-like value as bytes that are equal exactly when the values are: every string,
    list and object is tagged and length-prefixed (`s3:abc`, `l2:`, `d1:`), object keys sorted,
    strings as UTF-8; other values as their JSON text (`j4:true`). Unambiguous like canonical
    JSON, and about 2.5x faster to make, since no string is scanned for escapes."""
    parts: list[bytes] = []
    _canonical(value, parts.append)
    return b"".join(parts)


def _canonical_messages(messages: list) -> bytes:
    """`canonical_bytes(messages)`, the same bytes, with a flat loop for the usual messages
    (objects with string keys and values), the keys' encodings remembered, and a straight line
    for a message of exactly a string role and content: about three times as fast on chat records."""
    parts = [b"l%d:" % len(messages)]
    for message in messages:
        if type(message) is dict and len(message) == 2:  # the usual {"role": ..., "content": ...}
            role, content = message.get("role"), message.get("content")
            if type(role) is str and type(content) is str:
                data, name = content.encode("utf-8", "surrogatepass"), role.encode("utf-8", "surrogatepass")
                parts += (b"d2:s7:contents%d:" % len(data), data, b"s4:roles%d:" % len(name), name)
                continue
        if type(message) is not dict or not _flat_message(message, parts):
            _canonical(message, parts.append)
    return b"".join(parts)


def _flat_message(message: dict, parts: list[bytes]) -> bool:
    """Append `canonical_bytes(message)` to `parts` when its keys and values are all strings;
    else append nothing and return False."""
    start = len(parts)
    parts.append(b"d%d:" % len(message))
    for key in sorted(message, key=str):
        value = message[key]
        if type(key) is not str or type(value) is not str:
            del parts[start:]
            return False
        encoded = _KEYS.get(key)
        if encoded is None:
            data = key.encode("utf-8", "surrogatepass")
            encoded = b"s%d:%s" % (len(data), data)
            if len(_KEYS) < 4096:
                _KEYS[key] = encoded
        data = value.encode("utf-8", "surrogatepass")
        parts += (encoded, b"s%d:" % len(data), data)
    return True


_KEYS: dict[str, bytes] = {}  # message keys ("role", "content") as canonical bytes


def _canonical(value: Any, out: Any) -> None:
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        out(b"s%d:" % len(data))
        out(data)
    elif isinstance(value, (list, tuple)):
        out(b"l%d:" % len(value))
        for item in value:
            _canonical(item, out)
    elif isinstance(value, dict):
        out(b"d%d:" % len(value))
        for key in sorted(value, key=str):
            _canonical(str(key), out)
            _canonical(value[key], out)
    else:
        data = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
        out(b"j%d:" % len(data))
        out(data)


def _messages(record: dict, field: str) -> list:
    if field not in record:
        raise RecordError(field, "missing")
    messages = record[field]
    if not isinstance(messages, list):
        raise RecordError(field, f"expected a list of messages, found {type(messages).__name__}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RecordError(f"{field}[{i}]", "expected an object with `role` and `content`")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                problem = "missing" if message.get(key) is None else "expected a string"
                raise RecordError(f"{field}[{i}].{key}", problem)
    return messages


def _text(record: dict, field: str) -> str:
    if field not in record:
        raise RecordError(field, "missing")
    if not isinstance(record[field], str):
        raise RecordError(field, f"expected a string, found {type(record[field]).__name__}")
    return record[field]


def record_digest(key: bytes) -> bytes:
    """A record's identity: 16 bytes of blake2b over its key. Dedup and holdout use this, and
    the token cache stores it, so plan and compile agree on both without the keys."""
    return hashlib.blake2b(key, digest_size=16).digest()


def in_holdout(key: bytes, fraction: Fraction, seed: int) -> bool:
    """Whether a record with this key (its `record_digest`) is held out: blake2b(seed, key)
    read as a 64-bit integer u is a member iff u < fraction * 2**64, compared exactly.
    Depends on the key alone, so appending records never moves old ones in or out."""
    u = int.from_bytes(_holdout_hash(b"%d:" % seed, key), "big")
    return u * fraction.denominator < fraction.numerator << 64


def holdout_mask(keys: bytes, size: int, fraction: Fraction, seed: int) -> Any:
    """`in_holdout` for many keys at once: `keys` is their `size`-byte digests back to back.
    Returns a numpy bool array. u * den < num * 2**64 holds exactly when u < ceil(num * 2**64
    / den), so one threshold compares them all."""
    import numpy as np

    count = len(keys) // size
    prefix = b"%d:" % seed
    hashes = b"".join(_holdout_hash(prefix, keys[i:i + size]) for i in range(0, count * size, size))
    u = np.frombuffer(hashes, ">u8")
    threshold = -(-(fraction.numerator << 64) // fraction.denominator)
    if threshold >= 1 << 64:
        return np.ones(count, bool)
    return u < np.uint64(threshold)


def _holdout_hash(prefix: bytes, key: bytes) -> bytes:
    """8 bytes of blake2b over the seed prefix (`b"SEED:"`) and a record's key."""
    return hashlib.blake2b(prefix + key, digest_size=8).digest()


# Counting -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SourceCount:
    """How many records a source has, and where the others went.
    `size = raw - broken - duplicates - held_out - limited` is what a mix may use."""

    name: str
    files: tuple[str, ...]
    raw: int  # records read (lines/rows), blank lines excluded
    broken: int  # records that failed (invalid JSON, missing field); only with on_error skip
    duplicates: int  # dropped by dedup exact
    held_out: int  # in the holdout
    limited: int  # cut by `limit`
    size: int
    exact_pass: bool  # True when every record was read; False for the fast count
    first_errors: tuple[str, ...] = ()  # up to 5 "file:line: field `x`: message"


def count_source(spec: SourceSpec) -> SourceCount:
    """Count a source: a fast raw count when there is no dedup, no holdout and `on_error fail`
    (records are then not validated), else one full pass over every record."""
    files = resolve_files(spec)
    templates = Templates.for_spec(spec)  # template syntax errors surface in either path
    if not spec.dedup and spec.holdout == 0 and spec.on_error == "fail":
        raw = _hub_count(spec) if spec.is_hub else count_records_fast(files)
        if raw is not None:
            size = raw if spec.limit is None else min(raw, spec.limit)
            return SourceCount(spec.name, files, raw, 0, 0, 0, raw - size, size, False)
    return _full_count(spec, files, templates)


def _full_count(spec: SourceSpec, files: tuple[str, ...], templates: Templates | None) -> SourceCount:
    raw = broken = duplicates = held_out = 0
    errors: list[str] = []
    seen: set[bytes] = set()
    for ref, record in iter_records(spec):
        raw += 1
        key = _key_or_error(spec, ref, record, templates)
        if isinstance(key, RecordError):
            broken += 1
            if len(errors) < _MAX_FIRST_ERRORS:
                errors.append(f"{ref}: {key}")
            continue
        digest = record_digest(key)
        if spec.dedup and _seen_before(digest, seen):
            duplicates += 1
        elif spec.holdout and in_holdout(digest, spec.holdout, spec.seed):
            held_out += 1
    remaining = raw - broken - duplicates - held_out
    size = remaining if spec.limit is None else min(remaining, spec.limit)
    return SourceCount(spec.name, files, raw, broken, duplicates, held_out, remaining - size,
                       size, True, tuple(errors))


def _key_or_error(
    spec: SourceSpec, ref: RecordRef, record: dict | Exception, templates: Templates | None,
) -> bytes | RecordError:
    """The record's key; a RecordError to count with `on_error skip`; a MixError otherwise."""
    try:
        if isinstance(record, Exception):
            raise record
        return record_key(record, spec.format, templates)
    except RecordError as exc:
        if spec.on_error == "skip":
            return exc
        raise MixError(error(
            "E507", f"broken record at `{ref}` in source `{spec.name}`: {exc}",
            help="fix the record, or add `on_error skip` to the source to count and skip broken records",
        )) from None


def _seen_before(digest: bytes, seen: set[bytes]) -> bool:
    if digest in seen:
        return True
    seen.add(digest)
    return False
