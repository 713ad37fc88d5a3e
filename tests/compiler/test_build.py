"""`mixc compile` end to end on small real data with the tiny local tokenizer.

Loss masks decoded back to text, Megatron reading the shards, byte-identical rebuilds, the
token cache, `--locked`, `verify`, an interrupted compile finishing on rerun, broken records,
and the accounting of every record.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compiler import build as build_module
from compiler.shards import read_shard
from runner.cli import main

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "data"
PROMPT = 'prompt(prompt = "Question: {{ question }}\\nAnswer:", response = " {{ answer }}")'


def _lines(path: pathlib.Path, n: int) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[:n]


def make_project(root: pathlib.Path, model: pathlib.Path, mix_extra: str = "", shares=("40%", "30%", "rest"),
                 chat_source: str = "") -> pathlib.Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "prompt.jsonl").write_text("\n".join(_lines(EXAMPLES / "general" / "train.jsonl", 300)) + "\n")
    (data / "chat.jsonl").write_text("\n".join(_lines(EXAMPLES / "customer" / "train.jsonl", 200)) + "\n")
    texts = [json.loads(line)["text"] for line in _lines(EXAMPLES / "multilingual" / "de.jsonl", 150)]
    pq.write_table(pa.table({"text": texts}), data / "text.parquet")
    spec = root / "m.mix"
    spec.write_text(f"""\
source p {{
  path    "data/prompt.jsonl"
  format  {PROMPT}
  holdout 5%
}}

source c {{
  path   "data/chat.jsonl"
  format chat(messages = "messages")
  {chat_source}
}}

source t {{
  path   "data/text.parquet"
  format text(field = "text")
}}

mix m {{
  tokenizer "{model}"
  seq_len   256
  packing   true
  seed      3
  {mix_extra}
  take p {shares[0]}
  take c {shares[1]}
  take t {shares[2]}
}}
""")
    return spec


def compile_ok(spec: pathlib.Path, *args: str) -> dict:
    assert main(["compile", str(spec), "--jobs", "1", *args]) == 0
    out = pathlib.Path(args[args.index("-o") + 1]) if "-o" in args else spec.parent / "build"
    return json.loads((out / "report.json").read_text())


def samples(directory: pathlib.Path, split: str = "train") -> list[tuple[np.ndarray, np.ndarray, int]]:
    index = json.loads((directory / "index.json").read_text())
    return [s for shard in index[split]["shards"] for row in read_shard(str(directory), shard["name"]) for s in row]


def _expected_loss_texts(root: pathlib.Path) -> dict[int, set[str]]:
    prompt = [json.loads(x) for x in (root / "data" / "prompt.jsonl").read_text().splitlines()]
    chat = [json.loads(x) for x in (root / "data" / "chat.jsonl").read_text().splitlines()]
    text = pq.read_table(root / "data" / "text.parquet").column("text").to_pylist()
    return {0: {" " + r["answer"] for r in prompt},
            1: {"".join(m["content"] for m in r["messages"] if m["role"] == "assistant") for r in chat},
            2: set(text)}


@pytest.mark.parametrize("model_fixture", ["tiny_model", "tiny_plain_model"])
def test_loss_bearing_tokens_decode_to_exactly_the_response(tmp_path, request, model_fixture):
    from tokenizers import Tokenizer

    model = request.getfixturevalue(model_fixture)
    spec = make_project(tmp_path, model)
    compile_ok(spec)
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    eos = "<|endoftext|>"
    expected = _expected_loss_texts(tmp_path)
    rows = samples(tmp_path / "build" / "m")
    assert {source for _, _, source in rows} == {0, 1, 2}
    for ids, mask, source in rows:
        loss_text = tokenizer.decode(ids[mask == 1].tolist(), skip_special_tokens=False)
        assert loss_text.endswith(eos)
        assert loss_text[: -len(eos)] in expected[source], loss_text
        assert ids[-1] == tokenizer.token_to_id(eos) and mask[-1] == 1


def test_the_mask_test_can_fail_this_tokenizer_merges_across_the_boundary(tiny_model):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    prompt, response = "Question: Is 219 even or odd?\nAnswer:", " odd"
    whole = tokenizer.encode(prompt + response).ids
    apart = tokenizer.encode(prompt).ids + tokenizer.encode(response).ids
    assert whole != apart  # so masking by position in the whole encoding would be wrong


def test_megatron_reads_the_shards(tmp_path, tiny_model):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    spec = make_project(tmp_path, tiny_model)
    report = compile_ok(spec)
    target = report["targets"]["m"]
    directory = tmp_path / "build" / "m"
    ours = samples(directory)
    shard = target["train"]["shards"][0]["name"]
    tokens = IndexedDataset(str(directory / f"{shard}.tokens"))
    mask = IndexedDataset(str(directory / f"{shard}.mask"))
    assert len(tokens) == len(mask) == target["train"]["samples"] == len(ours)
    assert len(tokens.document_indices) - 1 == target["train"]["rows"]
    for i in (0, len(ours) // 2, len(ours) - 1):
        assert np.array_equal(np.array(tokens[i]), ours[i][0])
        assert np.array_equal(np.array(mask[i]), ours[i][1])


def test_same_inputs_give_byte_identical_builds(tmp_path, tiny_model, monkeypatch):
    """Twice from a cold cache: once in this process, once with two tokenizer processes."""
    spec = make_project(tmp_path / "a", tiny_model)
    compile_ok(spec, "-o", str(tmp_path / "out1"))
    first_lock = (tmp_path / "a" / "m.lock.json").read_bytes()
    monkeypatch.setenv("MIXLANG_CACHE", str(tmp_path / "other-cache"))
    assert main(["compile", str(spec), "--jobs", "2", "-o", str(tmp_path / "out2")]) == 0
    assert (tmp_path / "out1" / "mix.lock.json").read_bytes() == (tmp_path / "out2" / "mix.lock.json").read_bytes()
    assert (tmp_path / "a" / "m.lock.json").read_bytes() == first_lock
    files = sorted(p.name for p in (tmp_path / "out1" / "m").iterdir())
    assert any(f.endswith(".tokens.bin") for f in files)
    for name in files:
        assert (tmp_path / "out1" / "m" / name).read_bytes() == (tmp_path / "out2" / "m" / name).read_bytes()


def _cache_by_record(entry: pathlib.Path) -> tuple:
    """A token cache entry as its content in record order: its meta, each record's row
    without the offset, and each record's tokens and mask (workers write the batches of an
    entry in the order they finish them, so the bytes of its files may lie in another order)."""
    from compiler.encode import RECORD_DTYPE

    records = np.fromfile(entry / "records.bin", RECORD_DTYPE)
    dtype = np.dtype(json.loads((entry / "meta.json").read_text())["dtype"])
    tokens, mask = np.fromfile(entry / "tokens.bin", dtype), np.fromfile(entry / "mask.bin", np.uint8)
    assert len(tokens) == len(mask) == records["length"].sum()
    covered = np.zeros(len(tokens), np.int64)
    for r in records:
        covered[r["offset"]:r["offset"] + r["length"]] += 1
    assert (covered == 1).all()  # every token belongs to exactly one record
    rows = [tuple(r[name] for name in RECORD_DTYPE.names if name != "offset") for r in records]
    content = [(tokens[r["offset"]:r["offset"] + r["length"]].tolist(), mask[r["offset"]:r["offset"] + r["length"]].tolist())
               for r in records]
    return (entry / "meta.json").read_text(), rows, content


def test_worker_processes_reading_small_blocks_build_what_one_process_builds(tmp_path, tiny_model, monkeypatch):
    """Two tokenizer processes, each reading its blocks of lines from the file itself and
    writing its results into the cache entry itself: with blocks of a few lines, broken
    records in several of them, the token cache holds what one process's holds, record by
    record, the builds are the same, and broken records keep their line numbers."""
    from compiler import cache

    spec = make_project(tmp_path / "a", tiny_model, chat_source="on_error skip")
    chat = tmp_path / "a" / "data" / "chat.jsonl"
    lines = chat.read_text().splitlines()
    for at in (150, 70, 3):
        lines.insert(at, '{"messages": "nope"}')
    chat.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(cache, "BLOCK_BYTES", 2048)
    runs = {}
    for jobs in ("1", "2"):
        monkeypatch.setenv("MIXLANG_CACHE", str(tmp_path / f"cache{jobs}"))
        assert main(["compile", str(spec), "--jobs", jobs, "-o", str(tmp_path / f"out{jobs}")]) == 0
        report = json.loads((tmp_path / f"out{jobs}" / "report.json").read_text())
        entries = sorted((tmp_path / f"cache{jobs}" / "tokens").iterdir())
        assert len(entries) == 3
        assert sorted(p.name for e in entries for p in e.iterdir()) == sorted(
            ["meta.json", "records.bin", "tokens.bin", "mask.bin"] * 3)
        runs[jobs] = ({e.name: _cache_by_record(e) for e in entries}, report["targets"]["m"]["broken_examples"]["c"])
    assert runs["1"] == runs["2"]
    assert [e.split(": ")[0].rsplit(":", 1)[1] for e in runs["2"][1]] == ["4", "72", "153"]
    assert (tmp_path / "out1" / "mix.lock.json").read_bytes() == (tmp_path / "out2" / "mix.lock.json").read_bytes()
    for name in os.listdir(tmp_path / "out1" / "m"):
        assert (tmp_path / "out1" / "m" / name).read_bytes() == (tmp_path / "out2" / "m" / name).read_bytes()


def _length(n: int) -> int:
    return 1 + n * 7919 % 200_000  # large ones too: a write that extends a file takes a while


def _write_batches(directory: str, numbers: range, go: Any, out: Any) -> None:
    """In a worker: once `go` is set, write batches of one record whose tokens are its number."""
    from compiler.encode import RECORD_DTYPE, EncodedBatch, write_into

    go.wait()
    placed = []
    for n in numbers:
        records = np.zeros(1, RECORD_DTYPE)
        records["length"] = _length(n)
        batch = EncodedBatch(np.full(_length(n), n, np.uint32), np.full(_length(n), n % 2, np.uint8), records, ())
        written = write_into("run", directory, batch)
        assert written.written and not len(written.ids) and not len(written.mask)
        placed.append((n, int(written.records["offset"][0])))
    out.put(placed)


def test_batches_written_by_several_processes_at_once_each_get_their_own_place(tmp_path):
    """`write_into` from four processes at once, 200 batches of up to 200k tokens: every batch
    lies, whole and unmixed, where its records' offsets say, and nothing else is in the files."""
    import multiprocessing

    (tmp_path / "tokens.bin").write_bytes(b"")
    (tmp_path / "mask.bin").write_bytes(b"")
    context = multiprocessing.get_context("fork")
    go, out = context.Event(), context.Queue()
    workers = [context.Process(target=_write_batches, args=(str(tmp_path), range(k, 200, 4), go, out))
               for k in range(4)]
    for w in workers:
        w.start()
    go.set()
    placed = [p for _ in workers for p in out.get(timeout=60)]
    for w in workers:
        w.join()
    tokens = np.fromfile(tmp_path / "tokens.bin", np.uint32)
    mask = np.fromfile(tmp_path / "mask.bin", np.uint8)
    assert len(tokens) == len(mask) == sum(_length(n) for n in range(200))
    for n, at in placed:
        assert (tokens[at:at + _length(n)] == n).all() and (mask[at:at + _length(n)] == n % 2).all()
    assert len({at for _, at in placed}) == 200


def test_a_tokenizer_worker_killed_mid_compile_stops_it_with_a_clear_error_and_a_rerun_builds(
        tmp_path, tiny_model, token_cache, monkeypatch, capsys):
    """A worker killed (as the kernel kills one for memory) while the source's first batches are
    in flight: the compile stops with E510 naming the source and the signal, within seconds
    (with multiprocessing.Pool it waited forever), leaves no cache entry, and a rerun builds."""
    import signal
    import threading

    from compiler import cache

    spec = make_project(tmp_path, tiny_model)
    monkeypatch.setattr(cache, "BLOCK_BYTES", 512)  # many tasks: some are still to come after the kill
    check_broken, killed = cache._check_broken, []

    def kill_a_worker_at_the_first_batch(*args):
        if not killed:
            process = next(p for p in cache._WORKERS.processes.values() if p.is_alive())
            os.kill(process.pid, signal.SIGKILL)
            while process.is_alive():
                time.sleep(0.01)
            killed.append(process.pid)
        return check_broken(*args)

    monkeypatch.setattr(cache, "_check_broken", kill_a_worker_at_the_first_batch)
    done: list[int] = []
    compiling = threading.Thread(target=lambda: done.append(main(["compile", str(spec), "--jobs", "2"])), daemon=True)
    compiling.start()
    compiling.join(60)
    assert done == [1] and killed
    err = capsys.readouterr().err
    assert "E510" in err and "a tokenizer worker stopped while tokenizing source" in err and "SIGKILL" in err
    assert not [p for p in (token_cache / "tokens").iterdir()]  # neither an entry nor a temporary one
    monkeypatch.setattr(cache, "_check_broken", check_broken)
    assert main(["compile", str(spec), "--jobs", "2"]) == 0


def test_the_workers_fork_server_is_started_early_only_when_something_will_be_tokenized(tmp_path, tiny_model,
                                                                                        token_cache, monkeypatch):
    from compiler import cache
    from compiler.plan import expand
    from runner.cli import load_checked

    monkeypatch.setattr(cache, "RACY_SECONDS", 0.0)  # files written a moment ago count as settled
    spec = make_project(tmp_path, tiny_model)

    def early() -> dict | None:
        program = load_checked(str(spec))[1].program
        return build_module._early_start(program, expand(program, None))

    assert early() == {"chat": True, "loader": True}  # nothing remembered
    compile_ok(spec)
    assert early() is None
    chat = tmp_path / "data" / "chat.jsonl"
    chat.write_text(chat.read_text() + chat.read_text().splitlines()[0] + "\n")
    assert early() == {"chat": True, "loader": False}  # the tokenizer is remembered


def test_tokenizing_while_the_content_is_hashed_keeps_an_entry_that_appears_meanwhile(tmp_path, tiny_model,
                                                                                        token_cache):
    """A cold compile tokenizes before the sources' hash is known; when the hash then names an
    entry that exists (another compile made it), that entry is kept and the new one dropped."""
    from compiler.cache import content_sha256, ensure_cached
    from compiler.encode import load_tokenizer
    from compiler.sources import resolve_files
    from runner.cli import load_checked

    spec = make_project(tmp_path, tiny_model)
    compile_ok(spec)
    source = load_checked(str(spec))[1].program.source("c")
    files = resolve_files(source)
    entries = sorted((token_cache / "tokens").iterdir())
    asked = []

    def content() -> str:
        asked.append(True)
        return content_sha256(files)

    cache, built = ensure_cached(source, files, content, load_tokenizer(str(tiny_model)), 2)
    assert asked and not built and cache.path in map(str, entries)
    assert sorted((token_cache / "tokens").iterdir()) == entries  # no temporary directory left


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_cache_entry_holds_ids_as_narrow_as_the_vocabulary_allows(tmp_path, tiny_model, token_cache, monkeypatch,
                                                                      jobs):
    """The tiny tokenizer's ids fit uint16, and its entry holds them so: record by record the
    same ids as a uint32 entry made with the vocabulary said to be larger. A tokenizer giving
    an id beyond its vocabulary size is refused (E704), keeping nothing: it would not fit."""
    import dataclasses

    from compiler.cache import content_sha256, ensure_cached
    from compiler.encode import load_tokenizer
    from compiler.sources import resolve_files
    from mixlang.diagnostics import MixError
    from runner.cli import load_checked

    spec = make_project(tmp_path, tiny_model)
    source = load_checked(str(spec))[1].program.source("c")
    files, setup = resolve_files(source), load_tokenizer(str(tiny_model))
    assert setup.vocab_size < 1 << 16
    entries = {}
    for name, vocab_size in (("narrow", setup.vocab_size), ("wide", 1 << 17)):
        monkeypatch.setenv("MIXLANG_CACHE", str(tmp_path / name))
        cache, built = ensure_cached(source, files, content_sha256(files), dataclasses.replace(setup, vocab_size=vocab_size),
                                     jobs)
        assert built and os.path.getsize(os.path.join(cache.path, "tokens.bin")) == cache.dtype.itemsize * cache.meta["tokens"]
        entries[cache.dtype.name] = _cache_by_record(pathlib.Path(cache.path))[1:]
    assert sorted(entries) == ["uint16", "uint32"] and entries["uint16"] == entries["uint32"]
    monkeypatch.setenv("MIXLANG_CACHE", str(tmp_path / "small"))
    with pytest.raises(MixError) as caught:
        ensure_cached(source, files, content_sha256(files), dataclasses.replace(setup, vocab_size=100), jobs)
    assert caught.value.diagnostics[0].code == "E704" and "beyond its vocabulary of 100 tokens" in str(caught.value)
    assert not list((tmp_path / "small" / "tokens").iterdir())


def test_lock_records_inputs_counts_and_hashes(tmp_path, tiny_model):
    spec = make_project(tmp_path, tiny_model)
    compile_ok(spec)
    lock = json.loads((tmp_path / "m.lock.json").read_text())
    assert lock == json.loads((tmp_path / "build" / "mix.lock.json").read_text())
    assert set(lock["sources"]) == {"p", "c", "t"} and lock["spec"]["path"] == "m.mix"
    assert lock["sources"]["p"]["files"] == ["data/prompt.jsonl"]
    take = lock["targets"]["m"]["takes"][0]
    assert {"samples", "tokens", "loss_tokens", "epochs", "share_samples", "share_tokens"} <= set(take)
    assert lock["tokenizers"][str(tiny_model)]["chat_template_sha256"]
    assert set(lock["libraries"]) == {"tokenizers", "transformers"}
    assert all(len(sha) == 64 for sha in lock["targets"]["m"]["train"]["shards"].values())
    assert "time" not in json.dumps(lock)


def test_changing_a_share_or_adding_a_source_retokenizes_nothing_old(tmp_path, tiny_model):
    spec = make_project(tmp_path, tiny_model)
    assert sorted(compile_ok(spec)["tokenized"]) == ["c", "p", "t"]
    spec.write_text(spec.read_text().replace("take p 40%", "take p 50%").replace("take c 30%", "take c 20%"))
    report = compile_ok(spec)
    assert report["tokenized"] == []
    assert report["targets"]["m"]["takes"][0]["share_samples"] == pytest.approx(0.5, abs=1e-3)
    (tmp_path / "data" / "more.jsonl").write_text('{"text": "ein neuer Satz"}\n{"text": "noch einer"}\n')
    spec.write_text(spec.read_text() + 'source more {\n  path "data/more.jsonl"\n  format text()\n}\n\n'
                    'mix n {\n  tokenizer "' + str(tiny_model) + '"\n  seq_len 64\n  take more 50%\n  take t rest\n}\n')
    assert compile_ok(spec)["tokenized"] == ["more"]


def test_one_source_taken_with_two_tokenizers_is_tokenized_with_each(tmp_path, tiny_model, tiny_plain_model):
    """Two mixes may take the same sources with different tokenizers (to compare tokenizers):
    each gets its own token cache, and each mix builds as it does alone."""
    spec = make_project(tmp_path, tiny_model)
    second = ('mix n {\n  tokenizer "' + str(tiny_plain_model) + '"\n  seq_len 256\n  seed 3\n'
              '  take p 50%\n  take c rest\n}\n')
    spec.write_text(spec.read_text() + second)
    report = compile_ok(spec, "-o", str(tmp_path / "both"))
    assert sorted(report["tokenized"]) == ["c", "p", "t"]
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copytree(tmp_path / "data", alone / "data")
    (alone / "m.mix").write_text(spec.read_text().split("mix m {")[0] + second)
    compile_ok(alone / "m.mix")
    both, single = (json.loads((d / "n" / "index.json").read_text()) for d in (tmp_path / "both", alone / "build"))
    assert both["train"]["shards"] == single["train"]["shards"]
    assert report["targets"]["n"]["train"]["samples"] > 0


def test_a_damaged_token_cache_entry_is_rebuilt(tmp_path, tiny_model, token_cache):
    """A cache file cut short (a full disk, a copy interrupted) is noticed by its size, the
    entry rebuilt, and the build comes out byte for byte as before."""
    spec = make_project(tmp_path, tiny_model)
    compile_ok(spec)
    lock = (tmp_path / "m.lock.json").read_bytes()
    victim = next((token_cache / "tokens").glob("*/tokens.bin"))
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    spec.write_text(spec.read_text().replace("take p 40%", "take p 50%").replace("take c 30%", "take c 20%"))
    assert len(compile_ok(spec)["tokenized"]) == 1
    spec.write_text(spec.read_text().replace("take p 50%", "take p 40%").replace("take c 20%", "take c 30%"))
    assert compile_ok(spec)["tokenized"] == []
    assert (tmp_path / "m.lock.json").read_bytes() == lock


def test_a_sweep_compiles_every_point_from_one_tokenization(tmp_path, tiny_model):
    spec = make_project(tmp_path, tiny_model)
    spec.write_text(spec.read_text() + "sweep s {\n  vary m.p in [60%, 20%]\n}\n")
    report = compile_ok(spec)
    assert sorted(report["tokenized"]) == ["c", "p", "t"]
    shares = sorted(t["takes"][0]["share_samples"] for name, t in report["targets"].items() if t["sweep"])
    assert shares == pytest.approx([0.2, 0.6], abs=1e-3)


def test_locked_refuses_drift_and_names_it(tmp_path, tiny_model, capsys):
    spec = make_project(tmp_path, tiny_model)
    assert main(["compile", str(spec), "--jobs", "1", "--locked"]) == 1
    assert "E713" in capsys.readouterr().err
    compile_ok(spec)
    assert main(["compile", str(spec), "--jobs", "1", "--locked"]) == 0
    with open(tmp_path / "data" / "prompt.jsonl", "a") as f:
        f.write('{"question": "What is 1 + 1?", "answer": "2"}\n')
    assert main(["compile", str(spec), "--jobs", "1", "--locked"]) == 1
    err = capsys.readouterr().err
    assert "E714" in err and "source `p` changed" in err and "source `c`" not in err
    spec.write_text(spec.read_text().replace("seed      3", "seed      4"))
    assert main(["compile", str(spec), "--jobs", "1", "--locked"]) == 1
    assert "the spec `m.mix`" in capsys.readouterr().err


def test_verify_rechecks_every_shard(tmp_path, tiny_model, capsys):
    spec = make_project(tmp_path, tiny_model)
    compile_ok(spec)
    build = tmp_path / "build"
    assert main(["verify", str(build)]) == 0
    victim = next((build / "m").glob("train-*.tokens.bin"))
    data = bytearray(victim.read_bytes())
    data[0] ^= 1
    victim.write_bytes(bytes(data))
    assert main(["verify", str(build)]) == 1
    assert f"{victim}: sha256 differs" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "data")]) == 1


def test_an_interrupted_compile_leaves_no_complete_looking_build_and_rerun_finishes(tmp_path, tiny_model, monkeypatch):
    spec = make_project(tmp_path, tiny_model)
    calls = {"n": 0}
    real = build_module.write_rows

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the validation split of the first target
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "write_rows", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(["compile", str(spec), "--jobs", "1"])
    build = tmp_path / "build"
    assert not (build / "mix.lock.json").exists() and not (build / "m" / "index.json").exists()
    assert not (tmp_path / "m.lock.json").exists()
    monkeypatch.setattr(build_module, "write_rows", real)
    compile_ok(spec)
    clean = tmp_path / "clean"
    compile_ok(spec, "-o", str(clean))
    for path in (clean / "m").iterdir():
        assert (build / "m" / path.name).read_bytes() == path.read_bytes()
    assert not [p for p in (build / "m").iterdir() if p.name.startswith(".tmp")]


def test_a_broken_record_stops_the_compile_with_file_line_and_field(tmp_path, tiny_model, capsys):
    spec = make_project(tmp_path, tiny_model)
    with open(tmp_path / "data" / "chat.jsonl", "a") as f:
        f.write('{"messages": [{"role": "user"}]}\n')
    assert main(["compile", str(spec), "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert "E507" in err and "chat.jsonl:201" in err and "messages[0].content" in err
    assert not (tmp_path / "build" / "mix.lock.json").exists()


def test_on_error_skip_counts_broken_records_and_every_record_is_accounted_for(tmp_path, tiny_model):
    spec = make_project(tmp_path, tiny_model, chat_source="on_error skip\n  dedup exact\n  limit 150 samples")
    with open(tmp_path / "data" / "chat.jsonl", "a") as f:
        f.write('not json\n{"messages": "nope"}\n')
        f.write("\n".join(_lines(tmp_path / "data" / "chat.jsonl", 3)) + "\n")  # three duplicates
    report = compile_ok(spec)
    counts = report["targets"]["m"]["sources"]["c"]
    assert counts["raw"] == 205 and counts["broken"] == 2 and counts["duplicates"] >= 3
    assert counts["limited"] == 200 - (counts["duplicates"] - 3) - 150 and counts["size"] == 150
    examples = report["targets"]["m"]["broken_examples"]["c"]
    assert [e.split(": ")[0].rsplit("/", 1)[-1] for e in examples] == ["chat.jsonl:201", "chat.jsonl:202"]
    for name, c in report["targets"]["m"]["sources"].items():
        parts = ("used", "unused", "held_out", "duplicates", "broken", "overlong_dropped", "limited")
        assert sum(c[k] for k in parts) == c["raw"], name


def test_overlong_samples_are_dropped_or_truncated_and_reported(tmp_path, tiny_model):
    spec = make_project(tmp_path, tiny_model)
    spec.write_text(spec.read_text().replace("seq_len   256", "seq_len   44"))
    report = compile_ok(spec)
    assert report["targets"]["m"]["sources"]["c"]["overlong_dropped"] > 0
    spec.write_text(spec.read_text().replace('format chat(messages = "messages")',
                                             'format chat(messages = "messages")\n  overlong truncate'))
    report = compile_ok(spec)
    assert report["targets"]["m"]["sources"]["c"]["overlong_truncated"] > 0
    assert all(len(ids) <= 44 for ids, _, _ in samples(tmp_path / "build" / "m"))


def test_by_tokens_meets_shares_in_tokens_within_one_sample(tmp_path, tiny_model, capsys):
    spec = make_project(tmp_path, tiny_model, mix_extra="by tokens\n  total 6K tokens",
                        shares=("50%", "25%", "rest"))
    assert main(["plan", str(spec)]) == 1
    assert "E604" in capsys.readouterr().err
    report = compile_ok(spec)
    takes = report["targets"]["m"]["takes"]
    longest = max(len(ids) for ids, _, _ in samples(tmp_path / "build" / "m"))
    for take, share in zip(takes, (0.5, 0.25, 0.25)):
        assert 0 <= take["tokens"] - 6000 * share < longest + 1
    capsys.readouterr()
    assert main(["plan", "--json", str(spec)]) == 0
    plan = json.loads(capsys.readouterr().out)["m"]
    assert [t["samples"] for t in plan["takes"]] == [t["samples"] for t in takes]
    assert [t["tokens"] for t in plan["takes"]] == [t["tokens"] for t in takes]


def test_without_packing_every_sample_is_its_own_row(tmp_path, tiny_model):
    spec = make_project(tmp_path, tiny_model)
    spec.write_text(spec.read_text().replace("packing   true", "packing   false"))
    train = compile_ok(spec)["targets"]["m"]["train"]
    assert train["rows"] == train["samples"] and train["packing_efficiency"] < 0.5


def test_holdouts_become_the_validation_split(tmp_path, tiny_model):
    spec = make_project(tmp_path, tiny_model)
    target = compile_ok(spec)["targets"]["m"]
    assert target["validation"]["samples"] == target["sources"]["p"]["held_out"] > 0
    assert {s for _, _, s in samples(tmp_path / "build" / "m", "validation")} == {0}


def test_csv_and_save_to_disk_sources_compile(tmp_path, tiny_model):
    import datasets

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("text\nhello there\n\"a, quoted\nline\"\n")
    datasets.Dataset.from_dict({"text": ["eins", "zwei", "drei"]}).save_to_disk(str(data / "saved"))
    spec = tmp_path / "m.mix"
    spec.write_text(f'source a {{\n  path "data/a.csv"\n  format text()\n}}\n\nsource b {{\n  path "data/saved"\n'
                    f'  format text()\n}}\n\nmix m {{\n  tokenizer "{tiny_model}"\n  seq_len 32\n  take a 40%\n'
                    f'  take b rest\n}}\n')
    report = compile_ok(spec)
    assert report["targets"]["m"]["sources"]["a"]["raw"] == 2 and report["targets"]["m"]["sources"]["b"]["raw"] == 3
    shutil.rmtree(tmp_path / "build")


def test_an_unwritable_token_cache_is_a_one_line_error(tmp_path, tiny_model, monkeypatch, capsys):
    """A system error (here the cache root is a file, as a full disk or a read-only directory
    would be) names the path and what went wrong, with no traceback."""
    spec = make_project(tmp_path, tiny_model)
    (tmp_path / "not-a-dir").write_text("x")
    monkeypatch.setenv("MIXLANG_CACHE", str(tmp_path / "not-a-dir"))
    assert main(["compile", str(spec), "--jobs", "1"]) == 1
    err = capsys.readouterr().err
    assert "mixc: error:" in err and "not-a-dir" in err and "Traceback" not in err
