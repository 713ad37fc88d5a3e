"""`mixc`: the command line, the composition root of the project.

Each verb parses its flags, calls one public function, prints, and returns an exit status:
0 clean (warnings allowed), 1 errors in the input, 2 usage errors (bad flags, a file that does
not exist). User mistakes print diagnostics, never a traceback. Heavy libraries are imported
inside the verbs that need them, so `mixc check` starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence, TextIO

from mixlang.check import CheckResult, check
from mixlang.diagnostics import Diagnostic, MixError, render_all
from mixlang.loader import LoadResult, load

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mixc", description="Declare, plan and build data mixtures for fine-tuning.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = sub.add_parser("check", help="check .mix files (and what they import)")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--format", choices=("full", "concise"), default="full", help="diagnostic style")
    f = sub.add_parser("fmt", help="rewrite .mix files in canonical layout")
    f.add_argument("files", nargs="+", metavar="FILE")
    f.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    pl = sub.add_parser("plan", help="print the exact sample counts of each mix; no work done")
    pl.add_argument("file", metavar="FILE")
    pl.add_argument("--mix", metavar="NAME", help="plan only this mix (or sweep)")
    pl.add_argument("--json", action="store_true", help="print one JSON object keyed by mix name")
    co = sub.add_parser("compile", help="tokenize, pack and shard every mix; write the build and the lock")
    co.add_argument("file", metavar="FILE")
    co.add_argument("-o", "--out", metavar="DIR", help="build directory (default: build/ beside the spec)")
    co.add_argument("--mix", metavar="NAME", help="compile only this mix (or sweep)")
    co.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N", help="tokenizer processes")
    co.add_argument("--locked", action="store_true", help="refuse to build if an input drifted from the lock")
    co.add_argument("--shard-mb", type=float, default=256, metavar="MB", help="roll shards over at this size")
    ve = sub.add_parser("verify", help="recheck every shard of a build against its lock")
    ve.add_argument("build", metavar="BUILD")
    from runner.cli_runs import add_parsers

    add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    named = getattr(args, "files", None) or [getattr(args, "file", None) or getattr(args, "build", None)]
    if args.verb in ("status", "logs", "cancel", "gate", "report"):
        named = []
    missing = [f for f in named if f and not os.path.exists(f)]
    if missing:
        print(f"mixc: error: no such file: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    from runner.cli_runs import verbs as run_verbs

    verbs = {"check": _check, "fmt": _fmt, "plan": _plan, "compile": _compile, "verify": _verify, **run_verbs()}
    try:
        return verbs[args.verb](args)
    except MixError as e:
        print(render_all(e.diagnostics, {}), file=sys.stderr)
        return EXIT_ERRORS
    except BrokenPipeError:  # `mixc plan | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except OSError as e:  # a full disk, an unwritable cache or build directory: the system's word for it
        where = f"`{e.filename}`: " if e.filename else ""
        print(f"mixc: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERRORS


def load_checked(path: str, style: str = "full", out: TextIO = sys.stderr) -> tuple[LoadResult, CheckResult | None]:
    """Load and check one file, printing its diagnostics to `out`."""
    loaded = load(path)
    result = check(loaded.modules) if loaded.ok else None
    diagnostics = list(loaded.diagnostics) + list(result.diagnostics if result else ())
    if diagnostics:
        print(render_all(diagnostics, loaded.texts, style), file=out)
    return loaded, result


def _check(args: argparse.Namespace) -> int:
    status = EXIT_OK
    counts = {"error": 0, "warning": 0}
    for path in args.files:
        loaded, result = load_checked(path, args.format, sys.stdout)
        for d in list(loaded.diagnostics) + list(result.diagnostics if result else ()):
            counts[d.severity] += 1
        if result is None or result.program is None:
            status = EXIT_ERRORS
    summary = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items() if n)
    print(summary or f"ok: {len(args.files)} file{'s' if len(args.files) != 1 else ''} checked")
    return status


def _fmt(args: argparse.Namespace) -> int:
    from compiler.files import write_text
    from mixlang.fmt import format_module
    from mixlang.loader import read_text
    from mixlang.parser import parse

    status, changed = EXIT_OK, []
    for path in args.files:
        text, problem = read_text(path)
        result = parse(path, text) if text is not None else None
        if problem or result.module is None:
            diagnostics = [problem] if problem else list(result.diagnostics)
            print(render_all(diagnostics, {path: text or ""}), file=sys.stderr)
            status = EXIT_ERRORS
            continue
        formatted = format_module(result.module, text)
        if formatted != text:
            changed.append(path)
            if not args.check:
                write_text(path, formatted)
    for path in changed:
        print(f"would reformat {path}" if args.check else f"reformatted {path}")
    return EXIT_ERRORS if status or (args.check and changed) else EXIT_OK


def _plan(args: argparse.Namespace) -> int:
    from compiler.plan import plan_program
    from runner.report import plan_json, plan_table

    loaded, result = load_checked(args.file)
    if result is None or result.program is None:
        return EXIT_ERRORS
    program = result.program
    known = {m.name for m in program.mixes} | {s.name for s in program.sweeps}
    if args.mix and args.mix not in known:
        print(f"mixc: error: no mix or sweep named `{args.mix}` in {args.file}", file=sys.stderr)
        return EXIT_USAGE
    try:
        plans, problems = plan_program(program, args.mix)
    except MixError as e:
        return _report(e.diagnostics, loaded)
    print(json.dumps(plan_json(plans), indent=2) if args.json else plan_table(plans))
    return _report(problems, loaded) if problems else EXIT_OK


def _compile(args: argparse.Namespace) -> int:
    from compiler.build import BuildOptions, compile_program
    from runner.report import build_table

    loaded, result = load_checked(args.file)
    if result is None or result.program is None:
        return EXIT_ERRORS
    if args.jobs < 1 or args.shard_mb <= 0:
        print("mixc: error: --jobs and --shard-mb must be positive", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.file)), "build")
    options = BuildOptions(out=out, jobs=args.jobs, shard_bytes=int(args.shard_mb * 2**20), only=args.mix,
                           locked=args.locked, log=lambda m: print(m, file=sys.stderr))
    try:
        built = compile_program(result.program, loaded.texts, options)
    except MixError as e:
        return _report(e.diagnostics, loaded)
    print(build_table(built.report))
    print(f"\nbuild: {out}\nlock:  {built.lock['fingerprint']}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from compiler.lock import verify

    try:
        problems = verify(args.build)
    except MixError as e:
        print(render_all(e.diagnostics, {}), file=sys.stderr)
        return EXIT_ERRORS
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s)" if problems else f"ok: every shard of {args.build} matches its lock")
    return EXIT_ERRORS if problems else EXIT_OK


def _report(diagnostics: Sequence[Diagnostic], loaded: LoadResult) -> int:
    print(render_all(diagnostics, loaded.texts), file=sys.stderr)
    return EXIT_ERRORS if any(d.is_error for d in diagnostics) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
