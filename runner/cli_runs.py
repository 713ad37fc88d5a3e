"""The `mixc` verbs that run jobs: submit, run, status, logs, cancel, gate, report.

Part of the CLI (see `runner.cli`): each verb parses its flags, calls one function of
`runner.run`, prints, and returns an exit status: 0 fine, 1 errors (a job failed, no metrics),
2 usage, 3 a gate failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from mixlang.diagnostics import MixError, render_all
from runner.gates import EXIT_GATE_FAILED

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def add_parsers(sub: Any) -> None:
    for verb, text in (("submit", "compile, then submit the train and eval jobs; return at once"),
                       ("run", "compile, submit, wait, gate; print the verdict table (exit 3 if a gate fails)")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("file", metavar="FILE")
        p.add_argument("-o", "--out", metavar="DIR", help="build directory (default: build/ beside the spec)")
        p.add_argument("--mix", metavar="NAME", help="only this mix (or sweep)")
        p.add_argument("--cluster", choices=("local", "slurm"), help="default: slurm when sbatch is on PATH")
        p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N", help="tokenizer processes")
        p.add_argument("--parallel", type=int, default=1, metavar="N", help="local sweep points at a time")
    for verb, text in (("status", "the state of every job of a run"), ("logs", "where a run's logs are, and their ends"),
                       ("cancel", "cancel every unfinished job of a run"), ("gate", "judge a run's metrics"),
                       ("report", "one row per entry: shares, metrics, gate verdicts")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("run", metavar="RUN", help="a run folder (build/runs/ID) or its id")
        if verb == "logs":
            p.add_argument("--lines", type=int, default=20, help="lines of each log to show")


def verbs() -> dict:
    return {"submit": _submit, "run": _run, "status": _status, "logs": _logs, "cancel": _cancel,
            "gate": _gate, "report": _report}


def _compile_and_submit(args: argparse.Namespace) -> Any:
    from compiler.build import BuildOptions, compile_program
    from runner import jobs
    from runner.cli import load_checked
    from runner.run import submit

    loaded, result = load_checked(args.file)
    if result is None or result.program is None:
        return None
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.file)), "build")
    options = BuildOptions(out=out, jobs=args.jobs, only=args.mix, log=lambda m: print(m, file=sys.stderr))
    cluster = args.cluster or jobs.default_cluster()
    try:
        compile_program(result.program, loaded.texts, options)
        run = submit(out, args.file, cluster, args.mix, max(args.parallel, 1))
    except MixError as e:
        print(render_all(e.diagnostics, loaded.texts), file=sys.stderr)
        return None
    print(f"run {run.id} on {cluster}: {len(run.entries)} entr{'y' if len(run.entries) == 1 else 'ies'}")
    print(f"ledger: {run.folder}")
    return run


def _submit(args: argparse.Namespace) -> int:
    return EXIT_OK if _compile_and_submit(args) else EXIT_ERRORS


def _run(args: argparse.Namespace) -> int:
    from runner.run import wait

    run = _compile_and_submit(args)
    if run is None:
        return EXIT_ERRORS
    final = wait(run, report=lambda line: print(line, file=sys.stderr))
    return _judge_and_print(run, final)


def _judge_and_print(run: Any, final: list | None = None) -> int:
    from runner.report import verdict_table
    from runner.run import gate

    judged = gate(run)
    print(verdict_table(judged))
    failed_jobs = [f"{e.target}/{role} {state}" for e, role, _, state in (final or []) if state != "COMPLETED"]
    if failed_jobs:
        print("jobs that did not complete: " + ", ".join(failed_jobs), file=sys.stderr)
    if any(v is None for _, v in judged) or failed_jobs:
        return EXIT_ERRORS
    return EXIT_OK if all(x.passed for _, verdicts in judged for x in verdicts) else EXIT_GATE_FAILED


def _load(args: argparse.Namespace) -> Any:
    from runner.ledger import load

    return load(args.run)


def _status(args: argparse.Namespace) -> int:
    from runner.report import table
    from runner.run import states

    run = _load(args)
    rows = [[e.target, e.train, role, ref.cluster, ref.job_id, state] for e, role, ref, state in states(run)]
    print(f"run {run.id} ({run.cluster}), created {run.created}, ledger {run.folder}")
    print(table(["entry", "train", "job", "cluster", "job id", "state"], rows, left=6))
    return EXIT_OK


def _logs(args: argparse.Namespace) -> int:
    from runner.jobs import log_paths

    run = _load(args)
    for entry in run.entries:
        for role, ref in entry.jobs.items():
            for path in log_paths(ref):
                print(f"==> {entry.target}/{role} {path}")
                print(_tail(path, args.lines))
        print(f"==> {entry.target} run folder: {entry.run_dir}")
    return EXIT_OK


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log yet)"


def _cancel(args: argparse.Namespace) -> int:
    from runner.jobs import cancel, is_finished
    from runner.run import states

    run = _load(args)
    for entry, role, ref, state in states(run):
        if not is_finished(state):
            cancel(ref)
            print(f"cancelled {entry.target}/{role} ({ref.job_id})")
    return EXIT_OK


def _gate(args: argparse.Namespace) -> int:
    return _judge_and_print(_load(args))


def _report(args: argparse.Namespace) -> int:
    from runner.report import run_table
    from runner.run import gate

    print(run_table(gate(_load(args))))
    return EXIT_OK
