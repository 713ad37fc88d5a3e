#!/usr/bin/env python3
"""Run the no-traceback fuzz tests with many more cases than CI does.

    .venv/bin/python scripts/fuzz.py --cases 100000

Runs tests/mixlang/test_fuzz.py with MIXLANG_FUZZ_CASES set (mutated specs get that many cases,
random text and random bytes a quarter each), with a fresh random seed unless --seed is given.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=100_000)
    p.add_argument("--seed", type=int, help="hypothesis seed (default: random)")
    args = p.parse_args()
    env = dict(os.environ, MIXLANG_FUZZ_CASES=str(args.cases))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           os.path.join(os.path.dirname(__file__), "..", "tests", "mixlang", "test_fuzz.py")]
    if args.seed is not None:
        cmd.append(f"--hypothesis-seed={args.seed}")
    return subprocess.call(cmd, env=env)


if __name__ == "__main__":
    sys.exit(main())
