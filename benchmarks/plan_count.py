"""Benchmark: how fast `mixc plan` sizes a large JSON Lines source.

Writes `--records` synthetic chat records (system/user/assistant) as JSONL into a temporary
directory (or `--dir`), then times (1) the fast counter alone and (2) the whole `mixc plan`
command (a new process: start-up, check, count, allocate, print) on a spec that takes that
file, and prints records, MB, seconds and MB/s. The file was just written, so it is usually read from the page cache: the figure is the
counter's own speed, an upper bound on a cold disk. The file is deleted afterwards unless
`--keep` is given. A benchmark, not a test.

    python benchmarks/plan_count.py --records 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.sources import count_records_fast  # noqa: E402

_WORDS = "the data mix model token source share epoch sample loss eval gate train shard seed".split()
_POOL = 4096  # distinct lines, cycled: generation cost stays in the writes


def synthetic_lines(count: int, rng: random.Random) -> list[bytes]:
    """`count` distinct JSONL lines of chat records, each a few hundred bytes."""
    def sentence(n: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(n))

    lines = []
    for i in range(count):
        record = {"id": i, "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": sentence(rng.randint(8, 30)) + "?"},
            {"role": "assistant", "content": sentence(rng.randint(20, 60)) + "."},
        ]}
        lines.append(json.dumps(record).encode() + b"\n")
    return lines


def write_jsonl(path: Path, records: int, batch: int = 100_000) -> None:
    pool = synthetic_lines(_POOL, random.Random(0))
    block = b"".join(pool[i % _POOL] for i in range(batch))
    with open(path, "wb", buffering=0) as f:
        full, rest = divmod(records, batch)
        for _ in range(full):
            f.write(block)
        f.write(b"".join(pool[i % _POOL] for i in range(rest)))


def time_plan(folder: Path, data: Path) -> float:
    """Seconds for `mixc plan` on a spec whose one source is `data`."""
    spec = folder / "bench.mix"
    spec.write_text(f'source chat {{\n  path "{data.name}"\n  format chat(messages = "messages")\n}}\n\n'
                    'mix m {\n  tokenizer "t"\n  seq_len 2048\n  take chat 100%\n}\n')
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner.cli", "plan", str(spec)], check=True,
                   cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    spec.unlink()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    args = parser.parse_args(argv)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="plan_count_"))
    path = folder / "synthetic_chat.jsonl"
    start = time.perf_counter()
    write_jsonl(path, args.records)
    print(f"generated {path} in {time.perf_counter() - start:.1f} s")
    try:
        start = time.perf_counter()
        counted = count_records_fast([str(path)])
        seconds = time.perf_counter() - start
        megabytes = os.path.getsize(path) / 1e6
        print(f"records {counted:,}  MB {megabytes:,.0f}  seconds {seconds:.2f}  MB/s {megabytes / seconds:,.0f}")
        assert counted == args.records, f"counted {counted}, wrote {args.records}"
        print(f"mixc plan end to end: {time_plan(folder, path):.2f} s")
    finally:
        if not args.keep:
            path.unlink()
            if args.dir is None:
                folder.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
