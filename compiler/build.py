"""The compile: a checked program in, a build directory out.

Takes a `CheckedProgram`; for every mix and sweep point (`compiler.plan.expand`) writes a
target directory of train and validation shards (Megatron indexed datasets, tokens + loss
masks + source per sample), then `report.json`, then `mix.lock.json` last; the lock is also
copied beside the spec as `NAME.lock.json`. Stages: hash each source's content, tokenize
it into the token cache when absent (`compiler.cache`), choose records (`compiler.select`),
pack and write (`compiler.pack`). A target whose `index.json` exists with the same inputs is
kept as it is, so rerunning an interrupted compile finishes the job, and changing one share
rewrites only the targets it changes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from compiler import lock as lockfile
from compiler.cache import (
    TokenCache, content_remembered, content_sha256, ensure_cached, prestart_workers, progress_bar, progress_shown,
)
from compiler.encode import TokenizerSetup, load_tokenizer, tokenizer_remembered
from compiler.pack import efficiency, row_starts, write_rows
from compiler.plan import PlanTarget, expand
from compiler.select import SourcePool, select, share, source_pool
from compiler.shards import ShardSetWriter
from compiler.sources import count_records_fast, resolve_files
from mixlang.diagnostics import MixError, error
from mixlang.program import ChatFormat, CheckedProgram, SourceSpec

DEFAULT_SHARD_BYTES = 256 * 2**20


@dataclass
class BuildOptions:
    out: str
    jobs: int = max(os.cpu_count() or 1, 1)
    shard_bytes: int = DEFAULT_SHARD_BYTES
    only: str | None = None
    locked: bool = False
    log: Callable[[str], None] = lambda message: None


@dataclass
class BuildResult:
    lock: dict
    report: dict
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Inputs:
    """What the stages share: tokenizers by name, each source's files, content and caches."""

    tokenizers: dict[str, TokenizerSetup] = field(default_factory=dict)
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    content: dict[str, str] = field(default_factory=dict)
    hashing: dict[str, concurrent.futures.Future] = field(default_factory=dict)
    caches: dict[tuple[str, str], TokenCache] = field(default_factory=dict)
    tokenized: list[str] = field(default_factory=list)


def compile_program(program: CheckedProgram, texts: dict[str, str], options: BuildOptions) -> BuildResult:
    timings: dict[str, float] = {}
    targets = expand(program, options.only)
    inputs = _Inputs()
    with concurrent.futures.ThreadPoolExecutor(1) as hashing:
        with _timed(timings, "hash"):
            early = _early_start(program, targets) if options.jobs > 1 else None
            if early is not None:
                prestart_workers(**early)
            _hash_and_load(program, targets, inputs, hashing)
            if options.locked:
                _await_hashes(inputs)
                _check_locked(program, texts, inputs)
        with _timed(timings, "tokenize"):
            _tokenize_sources(program, targets, inputs, options)
            _await_hashes(inputs)
    os.makedirs(options.out, exist_ok=True)
    with _timed(timings, "select_pack_write"):
        built = {t.name: _build_target(program, t, inputs, options) for t in targets}
    lock = lockfile.make_lock(program, texts, inputs.content, inputs.tokenizers, built, inputs.files)
    if program.trains:
        from compiler.scripts import render_target

        for index in built.values():
            render_target(program, os.path.join(options.out, index["directory"]), index, lock["fingerprint"])
    report = {"targets": built, "tokenized": inputs.tokenized, "timings": timings}
    lockfile.write_json(os.path.join(options.out, "report.json"), {**report, "timings_s": timings})
    lockfile.write_lock(os.path.join(options.out, "mix.lock.json"), lock)
    lockfile.write_lock(lockfile.lock_path(program.path), lock)
    return BuildResult(lock, report, timings)


def _check_locked(program: CheckedProgram, texts: dict[str, str], inputs: _Inputs) -> None:
    path = lockfile.lock_path(program.path)
    lock = lockfile.read_lock(path)
    if lock is None:
        raise MixError(error("E713", f"`--locked` needs `{os.path.basename(path)}` beside the spec, and there is none",
                             help="run `mixc compile` without `--locked` once, and commit the lock"))
    changes = lockfile.drift(lock, program, texts, inputs.content, inputs.tokenizers)
    if changes:
        raise MixError(*(error("E714", f"{change} since `{os.path.basename(path)}` was written",
                               help="compile without `--locked` to update the lock, and review the change")
                         for change in changes))


class _timed:
    def __init__(self, timings: dict[str, float], stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.stage] = round(time.perf_counter() - self.start, 3)


def _sources_of(targets: list[PlanTarget] | tuple[PlanTarget, ...]) -> dict[str, tuple[str, ...]]:
    """source name -> the names of the tokenizers it is taken with (two mixes may take one source
    with different tokenizers), for every source some target takes."""
    pairs = sorted({(t.source, target.mix.tokenizer) for target in targets for t in target.mix.takes})
    return {name: tuple(tok for source, tok in pairs if source == name) for name, _ in pairs}


def _hash_and_load(program: CheckedProgram, targets: tuple[PlanTarget, ...], inputs: _Inputs,
                   hashing: concurrent.futures.Executor) -> None:
    """Find the sources' files, then hash them in the `hashing` thread while this one loads the
    tokenizers and (on a cold compile) the workers tokenize: hashing is C code that releases
    the GIL, and the hashes are needed only to name the token cache entries and for the lock.
    A source's missing files are reported before anything else."""
    for name in sorted(_sources_of(targets)):
        spec = program.source(name)
        try:
            inputs.files[name] = resolve_files(spec)
        except MixError as e:
            raise MixError(*(_at(d, spec) for d in e.diagnostics)) from None
        inputs.hashing[name] = hashing.submit(_content_of, spec, inputs.files[name])
    for tokenizer in sorted({t.mix.tokenizer for t in targets}):
        inputs.tokenizers[tokenizer] = load_tokenizer(tokenizer)


def _content_of(spec: SourceSpec, files: tuple[str, ...]) -> str:
    try:
        return content_sha256(files)
    except MixError as e:
        raise MixError(*(_at(d, spec) for d in e.diagnostics)) from None


def _await_hashes(inputs: _Inputs) -> None:
    for name, future in inputs.hashing.items():
        inputs.content[name] = future.result()


def _early_start(program: CheckedProgram, targets: tuple[PlanTarget, ...]) -> dict[str, bool] | None:
    """Whether this compile will likely tokenize something (a tokenizer or a source's content
    is not remembered from an earlier compile), and if so what the workers' fork server should
    import: `prestart_workers`'s arguments. A cheap guess, to start the server early only when
    it pays off."""
    sources = _sources_of(targets)
    loader = not all(tokenizer_remembered(t) for t in {t.mix.tokenizer for t in targets})
    if not loader:
        try:
            if all(content_remembered(resolve_files(program.source(s))) for s in sources):
                return None
        except (MixError, OSError):
            return None  # hashing reports it
    return {"chat": any(isinstance(program.source(s).format, ChatFormat) for s in sources), "loader": loader}


def _at(d: Any, spec: SourceSpec) -> Any:
    from dataclasses import replace

    return replace(d, span=d.span or spec.span, message=d.message if spec.name in d.message
                   else f"source `{spec.name}`: {d.message}")


def _tokenize_sources(program: CheckedProgram, targets: tuple[PlanTarget, ...], inputs: _Inputs,
                      options: BuildOptions) -> None:
    for name, tokenizers in sorted(_sources_of(targets).items()):
        for tokenizer in tokenizers:
            _tokenize_source(program, name, tokenizer, inputs, options, several=len(tokenizers) > 1)


def _tokenize_source(program: CheckedProgram, name: str, tokenizer: str, inputs: _Inputs, options: BuildOptions,
                     several: bool) -> None:
    """One source's token cache for one tokenizer; `several`: the source is taken with more
    than one tokenizer, so its lines name the tokenizer."""
    setup = inputs.tokenizers[tokenizer]
    spec = program.source(name)
    label = f"{name} ({tokenizer})" if several else name
    total = count_records_fast(inputs.files[name]) if progress_shown() and not spec.is_hub else 0
    with progress_bar(total, f"tokenize {label}") as bar:
        try:
            hashing = inputs.hashing[name]
            content = hashing.result() if hashing.done() else hashing.result
            cache, built = ensure_cached(spec, inputs.files[name], content, setup, options.jobs, bar.update)
        except MixError as e:
            raise MixError(*(_at(d, spec) for d in e.diagnostics)) from None
    inputs.caches[(name, tokenizer)] = cache
    if built and name not in inputs.tokenized:
        inputs.tokenized.append(name)
    options.log(f"{'tokenized' if built else 'cached   '} {label}: {cache.meta['records']:,} records, "
                f"{cache.meta['tokens']:,} tokens")


def _build_target(program: CheckedProgram, target: PlanTarget, inputs: _Inputs, options: BuildOptions) -> dict:
    mix = target.mix
    caches = [inputs.caches[(t.source, mix.tokenizer)] for t in mix.takes]
    fingerprint = _fingerprint(program, target, caches, options)
    directory = os.path.join(options.out, _dir_name(target))
    existing = _read_index(directory)
    if existing and existing.get("inputs") == fingerprint:
        options.log(f"unchanged {target.name}")
        return existing
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    pools = {t.source: source_pool(program.source(t.source), c, mix.seq_len) for t, c in zip(mix.takes, caches)}
    try:
        selection = select(mix, pools)
    except MixError as e:
        raise MixError(*(_with_target(d, target) for d in e.diagnostics)) from None
    vocab = inputs.tokenizers[mix.tokenizer].vocab_size
    index = _write_splits(directory, target, selection, pools, caches, vocab, options)
    index["inputs"], index["vocab_size"], index["directory"] = fingerprint, vocab, _dir_name(target)
    lockfile.write_json(os.path.join(directory, "index.json"), index)
    options.log(f"wrote     {target.name}: {index['train']['samples']:,} samples in {index['train']['rows']:,} rows")
    return index


def _dir_name(target: PlanTarget) -> str:
    if target.sweep is None:
        return target.name
    digest = hashlib.sha256(target.name.encode()).hexdigest()[:8]
    return f"{target.sweep}-{digest}"


def _with_target(d: Any, target: PlanTarget) -> Any:
    from dataclasses import replace

    return replace(d, message=f"mix `{target.name}`: {d.message}", span=d.span or target.mix.span)


def _read_index(directory: str) -> dict | None:
    try:
        with open(os.path.join(directory, "index.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _fingerprint(program: CheckedProgram, target: PlanTarget, caches: list[TokenCache], options: BuildOptions) -> str:
    sources = [lockfile.spec_json(program.source(t.source)) for t in target.mix.takes]
    payload = {"mix": lockfile.spec_json(target.mix), "sources": sources, "caches": [c.key for c in caches],
               "shard_bytes": options.shard_bytes, "format": lockfile.BUILD_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _write_splits(directory: str, target: PlanTarget, selection: Any, pools: dict[str, SourcePool],
                  caches: list[TokenCache], vocab: int, options: BuildOptions) -> dict:
    mix = target.mix
    pool_list = [pools[t.source] for t in mix.takes]
    lengths = _lengths(pool_list, selection.sources, selection.records)
    train = _write_split(directory, "train", mix, selection.sources, selection.records, lengths, caches, vocab, options)
    v_sources, v_records = _validation(pool_list, mix.seed)
    v_lengths = _lengths(pool_list, v_sources, v_records)
    validation = _write_split(directory, "validation", mix, v_sources, v_records, v_lengths, caches, vocab, options)
    takes = _take_stats(mix, selection, pool_list, caches, lengths)
    return {"name": target.name, "mix": mix.name, "sweep": target.sweep,
            "point": {k: str(v) for k, v in target.point}, "seq_len": mix.seq_len, "packing": mix.packing,
            "by": mix.by, "seed": mix.seed, "train": train, "validation": validation, "takes": takes,
            "sources": _accounting(pool_list, selection),
            "broken_examples": {t.source: c.errors[:5] for t, c in zip(mix.takes, caches) if c.errors}}


def _lengths(pools: list[SourcePool], sources: np.ndarray, records: np.ndarray) -> np.ndarray:
    """Each sample's length: record `records[i]` of pool `sources[i]`."""
    lengths = np.zeros(len(records), np.int64)
    for i, pool in enumerate(pools):
        mine = sources == i
        lengths[mine] = pool.lengths[records[mine]]
    return lengths


def _accounting(pools: list[SourcePool], selection: Any) -> dict[str, dict]:
    """Where every record of every source went: broken, duplicate, held out, over-long,
    limited, used (at least once), unused; and how many samples were repeats."""
    out = {}
    for i, pool in enumerate(pools):
        mine = selection.records[selection.sources == i]
        used = len(np.unique(mine))
        out[pool.name] = {**pool.counts, "used": used, "unused": pool.size - used, "repeated": len(mine) - used}
    return out


def _validation(pools: list[SourcePool], seed: int) -> tuple[np.ndarray, np.ndarray]:
    sources = np.concatenate([np.full(len(p.held_out), i, np.int32) for i, p in enumerate(pools)] or [np.zeros(0, np.int32)])
    records = np.concatenate([p.held_out for p in pools] or [np.zeros(0, np.int64)]).astype(np.int64)
    order = np.random.default_rng([seed, 3]).permutation(len(records))
    return sources[order], records[order]


def _write_split(directory: str, split: str, mix: Any, sources: np.ndarray, records: np.ndarray,
                 lengths: np.ndarray, caches: list[TokenCache], vocab: int, options: BuildOptions) -> dict:
    starts = row_starts(lengths, mix.seq_len, mix.packing)
    with ShardSetWriter(directory, split, vocab, options.shard_bytes) as writer:
        write_rows(writer, caches, sources, records, lengths, starts)
        shards = writer.close()
    return {"samples": len(records), "rows": len(starts), "tokens": int(lengths.sum()),
            "loss_tokens": sum(s.loss_tokens for s in shards),
            "packing_efficiency": efficiency(lengths, len(starts), mix.seq_len),
            "shards": [{"name": s.name, "files": dict(s.files), "sequences": s.sequences, "documents": s.documents}
                       for s in shards]}


def _take_stats(mix: Any, selection: Any, pools: list[SourcePool], caches: list[TokenCache],
                lengths: np.ndarray) -> list[dict]:
    total_samples, total_tokens = len(selection.records), int(lengths.sum())
    stats = []
    for i, (take, pool, cache) in enumerate(zip(mix.takes, pools, caches)):
        mine = selection.sources == i
        samples, tokens = int(mine.sum()), int(lengths[mine].sum())
        loss = _loss_tokens(cache, selection.records[mine], lengths[mine])
        stats.append({"source": take.source, "records": pool.size, "samples": samples, "tokens": tokens,
                      "loss_tokens": loss, "epochs": share(samples, pool.size),
                      "share_samples": share(samples, total_samples), "share_tokens": share(tokens, total_tokens)})
    return stats


def _loss_tokens(cache: TokenCache, records: np.ndarray, lengths: np.ndarray) -> int:
    table = cache.records
    full = table["length"][records].astype(np.int64)
    total = int(table["loss"][records][full == lengths].sum())
    for r, n in zip(records[full != lengths].tolist(), lengths[full != lengths].tolist()):
        offset = int(table[r]["offset"])
        total += int(cache.mask[offset:offset + n].sum())
    return total

