"""Benchmark: `mixc compile` end to end, against the tokenizer alone and a plain `datasets` pipeline.

Generates a synthetic chat corpus (system/user/assistant records, a fifth with two turns, message
lengths drawn log-normally from a 40k-word made-up vocabulary with Zipf frequencies: about 720
tokens and 3 KB a record, like shared/perf-notes.md) as two sources a/ and b/ of
`--records / 2` records each, in `--memory-scale` part files each. It trains a byte-level BPE on
the first 20k records (`--vocab`, 16k by default) as scripts/make_tiny_model.py trains its tiny
one (same special tokens and ChatML template) except for the GPT-2 pre-tokenizer regex: with
`use_regex=False` a whole message is one BPE word, which no production tokenizer does and which
makes BPE cost grow with message length. The spec takes `a 75%` and `b rest`, packing, seq_len
2048, a 1% holdout on a. Then, in one run, with N = CPU count:

1. `mixc compile --jobs N` (a subprocess, cold: a fresh MIXLANG_CACHE) against the tokenizer
   alone: N processes, each `encode_batch_fast` over its share of the same rendered segments
   (strings in memory, batches of 1000 records), under jemalloc when our workers get it. This
   machine's speed changes by up to 25% from one minute to the next (other tenants of its
   host), so each of three cold compiles runs between two tokenizer-alone runs (alone,
   compile, alone, compile, alone, compile, alone), and the ratio is the median over the
   compiles of (mean of the two alone runs around it) / compile: one pair caught by a change
   of speed does not decide it. The ratio of the overall means is printed too. Target >= 0.9.
2. against a plain `datasets` pipeline (`load_dataset("json")` + `map(batched=True,
   num_proc=N)` rendering ChatML, tokenizing with the transformers tokenizer and building loss
   masks, then ids and masks written to .bin/.npy; glibc malloc, as a user would run it):
   throughput against the mean of the cold compiles (target >= 1.4x) and peak RSS (ours, the
   largest of the cold compiles, <= 0.5x). Both produce the same arrays: its
   token and mask files must equal our token cache's (read in record order), byte for byte. Its
   Arrow cache is reported.
3. peak RSS of `mixc compile` (summed over the process tree, sampled every 50 ms from /proc) on
   the corpus against 1/`--memory-scale` of it (the first part file of each source): the
   corpus is the 4x, so no extra run at 4x the default size is needed. Target at most 1.25x.
4. recompile after changing only a share (75% -> 60%) with the warm token cache: target at
   least 20x faster than the cold compile.

Throughputs count the same tokens for every pipeline: the tokens of the rendered segments (our
cache adds one end-of-sequence token per record on top). Peak RSS counts file pages mapped into
a process as well as its own memory ("anon" is printed beside it). Before each measured run
`sync` writes out the previous run's dirty pages, so they do not land in this run's fsyncs.
A benchmark, not a test.

    .venv/bin/python benchmarks/compile.py                     # 200k records, about 25 minutes
    .venv/bin/python benchmarks/compile.py --records 20000     # a quick look
"""

from __future__ import annotations

import os

_CLEAN_ENV = dict(os.environ)  # for subprocesses: make_tiny_model sets RAYON_NUM_THREADS on import

import argparse
import functools
import hashlib
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from make_tiny_model import CHAT_TEMPLATE, EOS, IM_END, IM_START  # noqa: E402

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
PAGE = os.sysconf("SC_PAGE_SIZE")
CORPUS_VERSION = 1
BATCH_RECORDS = 1000  # records per encode_batch_fast call, as compiler.cache does
MEDIAN_WORDS = 160  # per user or assistant message


# ---- corpus ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _vocabulary() -> tuple[list[str], np.ndarray]:
    """40k made-up words (and number-like words), each bare or followed by punctuation or a
    paragraph break, with Zipf frequencies (shorter words more frequent); and a 2**20-entry
    table that maps a uniform random integer to a piece with those frequencies."""
    rng = random.Random(12345)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w",
              "st", "tr", "pl", "ch", "sh", "th", "gr", "br"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
    codas = ["", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck"]
    words: set[str] = set()
    while len(words) < 39_000:
        syllables = rng.choice([1, 1, 2, 2, 2, 3])
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables)))
    bare = sorted(words) + [str(rng.randrange(100_000)) for _ in range(1000)]
    bare.sort(key=lambda w: len(w) + 4 * rng.random())  # short words are the common ones
    zipf = 1.0 / np.arange(1, len(bare) + 1) ** 0.95
    marks = [("", 0.86), (",", 0.07), (".", 0.05), (".\n\n", 0.015), ("?", 0.005)]
    pieces = [w + m for m, _ in marks for w in bare]
    weights = np.concatenate([zipf * share for _, share in marks])
    cdf = np.cumsum(weights / weights.sum())
    table = np.searchsorted(cdf, (np.arange(1 << 20) + 0.5) / (1 << 20)).astype(np.int32)
    return pieces, table


def write_part(path: Path, records: int, seed: int) -> None:
    """`records` chat records as JSON Lines, written through a temporary file."""
    rng = np.random.default_rng(seed)
    pieces, table = _vocabulary()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, records, 5000):
            n = min(5000, records - start)
            turns = np.where(rng.random(n) < 0.2, 2, 1)
            counts = [rng.integers(6, 60, n)]  # system
            counts += [np.minimum(rng.lognormal(np.log(MEDIAN_WORDS), 0.7, n).astype(int) + 3, 1500) for _ in range(4)]
            words = table[rng.integers(0, 1 << 20, int(sum(c.sum() for c in counts)))]
            words = [pieces[i] for i in words.tolist()]
            at, lines = 0, []
            for r in range(n):
                texts = []
                for c in counts:
                    m = int(c[r])
                    texts.append(" ".join(words[at:at + m]))
                    at += m
                messages = [{"role": "system", "content": texts[0]}]
                for t in range(int(turns[r])):
                    messages += [{"role": "user", "content": texts[1 + 2 * t]},
                                 {"role": "assistant", "content": texts[2 + 2 * t]}]
                lines.append(json.dumps({"id": f"{seed}-{start + r}", "messages": messages}, ensure_ascii=False))
            f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def corpus(work: Path, records: int, scale: int, jobs: int) -> tuple[Path, Path]:
    """The corpus (`records` records: sources a/ and b/, `scale` part files each) and the base
    corpus for the memory check (the first part file of each source, 1/scale of the corpus).
    Part files are generated once per (records, scale), in parallel, and hard-linked."""
    per_part = max(records // (2 * scale), 1)
    parts = work / f"parts-v{CORPUS_VERSION}-{per_part}"
    parts.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(2 * scale) if not (parts / f"part{i}.jsonl").exists()]
    if missing:
        import multiprocessing

        start = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            pool.starmap(write_part, [(parts / f"part{i}.jsonl", per_part, i) for i in missing])
        log(f"generated {len(missing)} part files of {per_part:,} records in {time.perf_counter() - start:.1f} s")
    full, base = work / "data", work / "data-base"
    for folder in (full, base):
        shutil.rmtree(folder, ignore_errors=True)
    for i in range(2 * scale):
        source = "ab"[i % 2]
        for folder, wanted in ((full, True), (base, i < 2)):
            if wanted:
                (folder / source).mkdir(parents=True, exist_ok=True)
                os.link(parts / f"part{i}.jsonl", folder / source / f"part{i // 2}.jsonl")
    return full, base


def iter_messages(folder: Path) -> Iterator[list[dict]]:
    for path in sorted(folder.glob("*/*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["messages"]


# ---- tokenizer ---------------------------------------------------------------------------------

def train_tokenizer(work: Path, data: Path, vocab: int, sample: int = 20_000) -> Path:
    """A byte-level BPE with the tiny model's special tokens and ChatML template, trained on the
    first `sample` records (one thread, so the same corpus always gives the same tokenizer)."""
    out = work / f"tokenizer-{vocab}-{sample}"
    if (out / "tokenizer.json").exists():
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    start = time.perf_counter()
    texts = []
    for i, messages in enumerate(iter_messages(data)):
        if i >= sample:
            break
        texts += [m["content"] for m in messages]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS, IM_START, IM_END], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    bpe.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                  additional_special_tokens=[IM_START, IM_END], model_max_length=1 << 30)
    tok.chat_template = CHAT_TEMPLATE
    tmp = Path(tempfile.mkdtemp(dir=work))
    tok.save_pretrained(tmp)
    tmp.rename(out)
    log(f"trained a {vocab:,}-token BPE on {len(texts):,} messages in {time.perf_counter() - start:.1f} s")
    return out


# ---- measuring ---------------------------------------------------------------------------------

class TreeMemory(threading.Thread):
    """Peak RSS (and anonymous RSS) summed over a process and its descendants, from /proc; and
    their CPU time (the last sample of each process), which `getrusage` misses for processes
    nobody in this tree waits for (workers forked by a fork server)."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak = self.peak_anon = 0
        self.ticks: dict[int, int] = {}
        self.done = threading.Event()

    @property
    def cpu(self) -> float:
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        pids, scanned = [self.root], 0.0
        while not self.done.is_set():
            if time.monotonic() - scanned > 0.25:
                pids, scanned = _descendants(self.root), time.monotonic()
            rss = anon = 0
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/statm", "rb") as f:
                        fields = f.read().split()
                    rss += int(fields[1]) * PAGE
                    anon += (int(fields[1]) - int(fields[2])) * PAGE
                    with open(f"/proc/{pid}/stat", "rb") as f:
                        stat = f.read().rsplit(b")", 1)[1].split()
                    self.ticks[pid] = max(self.ticks.get(pid, 0), int(stat[11]) + int(stat[12]))
                except (OSError, IndexError, ValueError):
                    pass
            self.peak, self.peak_anon = max(self.peak, rss), max(self.peak_anon, anon)
            self.done.wait(self.interval)


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def measure(command: list[str], env: dict[str, str], label: str) -> dict:
    """Run a command; its wall time, CPU time and peak RSS of its process tree, and its output.
    Dirty pages left by the previous run are written out first, so that run's write-back does
    not land in this one's fsyncs."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(proc.pid)
    memory.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    memory.done.set()
    memory.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = max(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, memory.cpu)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed ({proc.returncode}):\n{err[-4000:]}")
    log(f"{label}: {wall:.1f} s (CPU {cpu:.1f} s), peak RSS {memory.peak / 2**20:,.0f} MiB "
        f"(anon {memory.peak_anon / 2**20:,.0f}); load average {os.getloadavg()[0]:.2f}")
    return {"wall": wall, "cpu": cpu, "rss": memory.peak, "anon": memory.peak_anon, "stdout": out, "stderr": err}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---- the tokenizer alone -----------------------------------------------------------------------

def alone_worker(data: str, tokenizer: str, index: int, count: int) -> None:
    """One of N processes: render its share of the records into segments as our workers do
    (untimed), say "ready"; then for every "go" line, encode them all and print the tokens,
    the perf_counter times and the CPU seconds. "go" uses the tokenizer as its files configure
    it; "wide" a new one whose word cache is as large as mixc's workers make it."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    from compiler.encode import load_tokenizer, widen_word_cache
    from compiler.render import ChatTemplate, Renderer
    from mixlang.program import ChatFormat

    setup = load_tokenizer(tokenizer)
    renderer = Renderer(ChatFormat("messages"), ChatTemplate(setup.chat_template, setup.variables))
    records = list(iter_messages(Path(data)))
    share = records[len(records) * index // count: len(records) * (index + 1) // count]
    batches = [[text for r in share[i:i + BATCH_RECORDS] for text, _ in renderer.segments({"messages": r})]
               for i in range(0, len(share), BATCH_RECORDS)]
    del records, share
    tok = Tokenizer.from_str(setup.backend_json)
    print("ready", flush=True)
    for line in sys.stdin:
        use = widen_word_cache(Tokenizer.from_str(setup.backend_json)) if line.strip() == "wide" else tok
        start, cpu, tokens = time.perf_counter(), time.process_time(), 0
        for batch in batches:
            tokens += sum(len(e) for e in use.encode_batch_fast(batch, add_special_tokens=False))
        print(json.dumps({"tokens": tokens, "start": start, "end": time.perf_counter(),
                          "cpu": time.process_time() - cpu}), flush=True)


class TokenizerAlone:
    """N processes holding the rendered segments of the corpus, timed on demand (`measure`)."""

    def __init__(self, data: Path, tokenizer: Path, jobs: int) -> None:
        env = dict(_CLEAN_ENV)
        if os.path.exists(JEMALLOC):
            env["LD_PRELOAD"] = JEMALLOC
        self.allocator = "jemalloc" if "LD_PRELOAD" in env else "glibc"
        self.procs = [subprocess.Popen([sys.executable, __file__, "--alone-worker", str(data), str(tokenizer), str(i),
                                        str(jobs)], env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True) for i in range(jobs)]
        for p in self.procs:
            assert p.stdout.readline().strip() == "ready"

    def measure(self, label: str, wide: bool = False) -> dict:
        os.sync()
        go = time.perf_counter()
        for p in self.procs:
            p.stdin.write("wide\n" if wide else "go\n")
            p.stdin.flush()
        results = [json.loads(p.stdout.readline()) for p in self.procs]
        wall = max(r["end"] for r in results) - go
        tokens, cpu = sum(r["tokens"] for r in results), sum(r["cpu"] for r in results)
        log(f"{label} ({len(self.procs)} procs, {self.allocator}): {tokens:,} tokens in {wall:.1f} s "
            f"(CPU {cpu:.1f} s); load average {os.getloadavg()[0]:.2f}")
        return {"wall": wall, "tokens": tokens, "cpu": cpu}

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()
            p.wait()


# ---- the datasets pipeline ---------------------------------------------------------------------

def chatml_segments(messages: list[dict]) -> list[tuple[str, bool]]:
    """The ChatML template as plain strings, cut where our renderer cuts: assistant contents
    carry loss, everything between them does not."""
    segments, pending = [], ""
    for m in messages:
        if m["role"] == "assistant":
            segments += [(pending + f"{IM_START}assistant\n", False), (m["content"], True)]
            pending = f"{IM_END}\n"
        else:
            pending += f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n"
    segments.append((pending, False))
    return [(t, loss) for t, loss in segments if t]


def hf_pipeline(data: str, tokenizer: str, out: str, cache: str, jobs: int) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    eos = tok.eos_token_id

    def encode(batch: dict) -> dict:
        segments = [chatml_segments(messages) for messages in batch["messages"]]
        ids = tok([t for s in segments for t, _ in s], add_special_tokens=False)["input_ids"]
        out_ids, out_mask, k = [], [], 0
        for s in segments:
            row_ids, row_mask = [], []
            for _, loss in s:
                row_ids += ids[k]
                row_mask += [int(loss)] * len(ids[k])
                k += 1
            out_ids.append(row_ids + [eos])
            out_mask.append(row_mask + [int(any(row_mask))])
        return {"input_ids": out_ids, "loss_mask": out_mask}

    files = sorted(str(p) for p in Path(data).glob("*/*.jsonl"))
    ds = load_dataset("json", data_files=files, split="train", cache_dir=cache)
    ds = ds.map(encode, batched=True, num_proc=jobs, remove_columns=ds.column_names)
    lengths = []
    with open(os.path.join(out, "tokens.bin"), "wb") as t, open(os.path.join(out, "mask.bin"), "wb") as m:
        for batch in ds.with_format("arrow").iter(batch_size=10_000):
            ids, mask = batch.column("input_ids"), batch.column("loss_mask")
            ids.combine_chunks().flatten().to_numpy().astype(np.uint32).tofile(t)
            mask.combine_chunks().flatten().to_numpy().astype(np.uint8).tofile(m)
            lengths.append(np.diff(ids.combine_chunks().offsets.to_numpy()))
    np.save(os.path.join(out, "lengths.npy"), np.concatenate(lengths))


# ---- the runs ----------------------------------------------------------------------------------

SPEC = """source a {{
  path    "{data}/a"
  format  chat(messages = "messages")
  holdout 1%
}}

source b {{
  path   "{data}/b"
  format chat(messages = "messages")
}}

mix bench {{
  tokenizer "{tokenizer}"
  seq_len   2048
  packing   true
  seed      7
  by        samples

  take a {share}
  take b rest
}}
"""


def write_spec(folder: Path, data: Path, tokenizer: Path, share: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "bench.mix"
    spec.write_text(SPEC.format(data=data, tokenizer=tokenizer, share=share))
    return spec


def compile_run(spec: Path, cache: Path, jobs: int, label: str, cold: bool = True) -> dict:
    """`mixc compile` in a new process; a cold run starts without a build directory as well (an
    earlier run's build of the same inputs would be kept as it is)."""
    env = {**_CLEAN_ENV, "MIXLANG_CACHE": str(cache)}
    out = spec.parent / "build"
    if cold:
        shutil.rmtree(out, ignore_errors=True)
    result = measure([sys.executable, "-m", "runner.cli", "compile", str(spec), "--jobs", str(jobs), "-o", str(out)],
                     env, label)
    report = json.loads((out / "report.json").read_text())
    lock = json.loads((out / "mix.lock.json").read_text())
    return {**result, "timings": report.get("timings_s", report.get("timings")), "fingerprint": lock["fingerprint"],
            "train": report["targets"]["bench"]["train"]}


def cache_arrays(cache: Path) -> tuple[dict, list[Path]]:
    entries = sorted((cache / "tokens").iterdir(), key=lambda p: json.loads((p / "meta.json").read_text())["source"])
    metas = [json.loads((p / "meta.json").read_text()) for p in entries]
    totals = {k: sum(m[k] for m in metas) for k in ("records", "tokens", "loss_tokens")}
    return totals, entries


def cache_sha256(entries: list[Path], kind: str) -> str:
    """sha256 of the entries' `kind` arrays ("tokens" or "mask") in record order: workers write a
    cache entry's batches in the order they finish them, and each record's offset says where.
    Ids as uint32 (the datasets pipeline's arrays), whatever width the cache holds them in."""
    from compiler.cache import TokenCache

    h = hashlib.sha256()
    for entry in entries:
        cache = TokenCache(str(entry), entry.name, json.loads((entry / "meta.json").read_text()))
        records, values = cache.records, getattr(cache, kind)
        for k in range(0, len(records), 10_000):
            chunk = records[k:k + 10_000]
            offsets, lengths = chunk["offset"].astype(np.int64), chunk["length"].astype(np.int64)
            starts = np.cumsum(lengths) - lengths
            picked = values[np.arange(int(lengths.sum())) + np.repeat(offsets - starts, lengths)]
            h.update((picked.astype(np.uint32) if kind == "tokens" else picked).tobytes())
    return h.hexdigest()


def run(args: argparse.Namespace) -> int:
    jobs = args.jobs or os.cpu_count() or 1
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mixc_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}; {args.records:,} records; jobs {jobs}; jemalloc "
        f"{'installed' if os.path.exists(JEMALLOC) else 'NOT installed'}")
    try:
        full, base = corpus(work, args.records, args.memory_scale, jobs)
        tokenizer = train_tokenizer(work, full, args.vocab)
        return _runs(args, work, full, base, tokenizer, jobs)
    finally:
        for name in _SCRATCH:
            shutil.rmtree(work / name, ignore_errors=True)
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


COLD_RUNS = 3


def _runs(args: argparse.Namespace, work: Path, full: Path, base: Path, tokenizer: Path, jobs: int) -> int:
    """Each cold compile between two tokenizer-alone runs (alone, compile, alone, compile, alone,
    compile, alone), then datasets, the recompile and the 1/scale corpus."""
    for name in _SCRATCH:
        shutil.rmtree(work / name, ignore_errors=True)
    spec = write_spec(work / "spec", full, tokenizer, "75%")
    alone = TokenizerAlone(full, tokenizer, jobs)
    cold: list[dict] = []
    try:
        alone_runs = [alone.measure(f"tokenizer alone (1 of {COLD_RUNS + 1})")]
        for k in range(COLD_RUNS):
            cold.append(compile_run(spec, work / f"cache{k}", jobs, f"mixc compile, cold cache ({k + 1} of {COLD_RUNS})"))
            alone_runs.append(alone.measure(f"tokenizer alone ({k + 2} of {COLD_RUNS + 1})"))
            if k == 0:  # what the datasets pipeline must match
                tokens = alone_runs[0]["tokens"]
                totals, entries = cache_arrays(work / "cache0")
                if totals["tokens"] - totals["records"] != tokens:
                    log(f"WARNING: the cache holds {totals['tokens']:,} tokens for {totals['records']:,} records; "
                        f"the tokenizer alone counted {tokens:,} (+1 EOS a record expected)")
                ours_tokens = cache_sha256(entries, "tokens")
                ours_mask = cache_sha256(entries, "mask")
                our_cache_bytes = disk_bytes(work / "cache0")
            if k < COLD_RUNS - 1:  # the last one serves the recompile
                shutil.rmtree(work / f"cache{k}")
        wide = alone.measure("tokenizer alone, word cache as large as mixc's", wide=True)
    finally:
        alone.close()
    if len({c["fingerprint"] for c in cold}) != 1:
        log("WARNING: the cold compiles gave different locks")
    hf = None if args.skip_datasets else _datasets_run(work, full, tokenizer, jobs, ours_tokens, ours_mask)
    last = work / f"cache{COLD_RUNS - 1}"
    write_spec(work / "spec", full, tokenizer, "60%")
    warm = compile_run(spec, last, jobs, "mixc compile, share 75% -> 60%, warm cache", cold=False)
    shutil.rmtree(last)
    base_spec = write_spec(work / "spec-base", base, tokenizer, "75%")
    small = compile_run(base_spec, work / "cache-base", jobs, f"mixc compile, 1/{args.memory_scale} corpus, cold cache")
    _print_results(args, jobs, tokens, alone_runs, cold, warm, hf, small, totals, our_cache_bytes, wide)
    return 0


_SCRATCH = [f"cache{k}" for k in range(COLD_RUNS)] + ["cache-base", "hf", "spec", "spec-base"]


def _datasets_run(work: Path, data: Path, tokenizer: Path, jobs: int, ours_tokens: str, ours_mask: str) -> dict:
    (work / "hf" / "out").mkdir(parents=True)
    hf = measure([sys.executable, __file__, "--hf-pipeline", str(data), str(tokenizer), str(work / "hf" / "out"),
                  str(work / "hf" / "cache"), str(jobs)], dict(_CLEAN_ENV), f"datasets map(num_proc={jobs})")
    hf["arrow_cache"] = disk_bytes(work / "hf" / "cache")
    hf["same_arrays"] = (sha256(work / "hf" / "out" / "tokens.bin") == ours_tokens
                         and sha256(work / "hf" / "out" / "mask.bin") == ours_mask)
    log(f"datasets pipeline: Arrow cache {hf['arrow_cache'] / 2**30:.2f} GiB; "
        f"arrays {'equal to' if hf['same_arrays'] else 'DIFFERENT from'} our token cache's")
    shutil.rmtree(work / "hf")
    return hf


def _print_results(args: argparse.Namespace, jobs: int, tokens: int, alone_runs: list[dict], colds: list[dict],
                   warm: dict, hf: dict | None, small: dict, totals: dict, cache_bytes: int, wide: dict) -> None:
    mib = 2**20
    rate = lambda wall: tokens / wall / 1e6  # noqa: E731
    walls = lambda runs: ", ".join(f"{r['wall']:.1f}" for r in runs)  # noqa: E731
    alone = {"wall": sum(r["wall"] for r in alone_runs) / len(alone_runs), "runs": alone_runs}
    paired = [(alone_runs[k]["wall"] + alone_runs[k + 1]["wall"]) / 2 / c["wall"] for k, c in enumerate(colds)]
    cold = {"wall": sum(c["wall"] for c in colds) / len(colds), "cpu": sum(c["cpu"] for c in colds) / len(colds),
            "rss": max(c["rss"] for c in colds), "anon": max(c["anon"] for c in colds)}
    print()
    print(f"corpus: {args.records:,} records (2 sources), {tokens:,} segment tokens "
          f"({tokens / max(totals['records'], 1):,.0f} a record), BPE vocab {args.vocab:,}, jobs {jobs}")
    print(f"tokenizer alone:      {alone['wall']:7.1f} s  {rate(alone['wall']):5.2f} M tok/s  (mean of "
          f"{walls(alone_runs)} s)")
    print(f"mixc compile cold:    {cold['wall']:7.1f} s  {rate(cold['wall']):5.2f} M tok/s  (mean of {walls(colds)} s)  "
          f"CPU {cold['cpu']:.0f} s  peak RSS {cold['rss'] / mib:,.0f} MiB (anon {cold['anon'] / mib:,.0f})")
    for k, c in enumerate(colds):
        print(f"  {c['wall']:.1f} s: {paired[k]:.3f} of the mean of the tokenizer alone just before and after "
              f"({alone_runs[k]['wall']:.1f}, {alone_runs[k + 1]['wall']:.1f} s); stages {c['timings']}")
    print(f"  compile / tokenizer alone: median of those {statistics.median(paired):.3f}, "
          f"ratio of the means {alone['wall'] / cold['wall']:.3f}")
    speedup = alone_runs[-1]["wall"] / wide["wall"]
    print(f"tokenizer alone, word cache as large as mixc's: {wide['wall']:.1f} s, {speedup:.2f}x the speed of the "
          f"run just before ({alone_runs[-1]['wall']:.1f} s); against it, the median above would be "
          f"{statistics.median(paired) / speedup:.3f} (pipeline overhead alone)")
    print(f"  train {colds[0]['train']['samples']:,} samples in {colds[0]['train']['rows']:,} rows; "
          f"token cache {cache_bytes / 2**30:.2f} GiB; lock {colds[0]['fingerprint'][:16]}")
    print(f"recompile (60%):      {warm['wall']:7.1f} s  stages {warm['timings']}")
    if hf:
        print(f"datasets map:         {hf['wall']:7.1f} s  {rate(hf['wall']):5.2f} M tok/s  CPU {hf['cpu']:.0f} s  "
              f"peak RSS {hf['rss'] / mib:,.0f} MiB (anon {hf['anon'] / mib:,.0f})  Arrow cache "
              f"{hf['arrow_cache'] / 2**30:.2f} GiB  same arrays: {hf['same_arrays']}")
    print(f"mixc compile 1/{args.memory_scale}:   {small['wall']:7.1f} s  peak RSS {small['rss'] / mib:,.0f} MiB "
          f"(anon {small['anon'] / mib:,.0f})  stages {small['timings']}")
    _warn_if_contended(jobs, alone, cold, hf)
    rows = [("1 compile / tokenizer alone (throughput)", statistics.median(paired), ">= 0.90", lambda r: r >= 0.9)]
    if hf:
        rows += [("2a compile / datasets (throughput)", hf["wall"] / cold["wall"], ">= 1.40", lambda r: r >= 1.4),
                 ("2b compile / datasets (peak RSS)", cold["rss"] / hf["rss"], "<= 0.50", lambda r: r <= 0.5)]
    rows += [(f"3 peak RSS {args.memory_scale}x / 1x corpus", cold["rss"] / small["rss"], "<= 1.25",
              lambda r: r <= 1.25),
             ("4 cold compile / recompile (time)", cold["wall"] / warm["wall"], ">= 20", lambda r: r >= 20)]
    print()
    print(f"| {'measure':<42} | {'ratio':>7} | {'target':>8} | result |")
    print(f"|{'-' * 44}|{'-' * 9}|{'-' * 10}|--------|")
    for name, ratio, target, ok in rows:
        print(f"| {name:<42} | {ratio:7.2f} | {target:>8} | {'pass' if ok(ratio) else 'FAIL':<6} |")


def _warn_if_contended(jobs: int, alone: dict, cold: dict, hf: dict | None) -> None:
    """Other work on the machine skews every ratio: say so when the tokenizer alone's timings
    disagree by more than 10%, or when a run got much less than its `jobs` cores."""
    notes = []
    walls = [r["wall"] for r in alone["runs"]]
    if max(walls) - min(walls) > 0.1 * alone["wall"]:
        notes.append(f"the tokenizer alone took {min(walls):.0f} to {max(walls):.0f} s")
    runs = [(f"tokenizer alone {i + 1}", r) for i, r in enumerate(alone["runs"])] + [("mixc compile", cold),
                                                                                     ("datasets", hf)]
    for label, run in runs:
        if run and run["cpu"] < 0.8 * jobs * run["wall"]:
            notes.append(f"{label} used {run['cpu'] / run['wall']:.1f} of {jobs} cores")
    if notes:
        print(f"\nWARNING: the machine was busy with other work ({'; '.join(notes)}): ratio 1 pairs each "
              f"compile with the tokenizer-alone runs around it and takes the median, which bears one pair "
              f"caught by a change of speed, not more.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--alone-worker":
        alone_worker(argv[1], argv[2], int(argv[3]), int(argv[4]))
        return 0
    if argv and argv[0] == "--hf-pipeline":
        hf_pipeline(argv[1], argv[2], argv[3], argv[4], int(argv[5]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=200_000, help="records in the corpus (two sources, half each)")
    p.add_argument("--vocab", type=int, default=16_384, help="BPE vocabulary size")
    p.add_argument("--jobs", type=int, default=0, help="processes (default: CPU count)")
    p.add_argument("--memory-scale", type=int, default=4,
                   help="the memory check compares the corpus with 1/N of it (N part files a source)")
    p.add_argument("--workdir", type=Path, help="keep corpus and tokenizer here and reuse them (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--skip-datasets", action="store_true", help="leave out the datasets pipeline")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
