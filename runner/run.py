"""Submitting a build's train and eval jobs, waiting for them, and gating the result.

Takes a finished build (its `report.json` lists the targets; each `TARGET/TRAIN/` folder holds
the rendered scripts and `job.json`); produces a `RunRecord` in `build/runs/<id>/` and, once
the jobs are done, `verdict.json` per entry. `submit` returns at once; `wait` polls the
jobs' states (sacct on Slurm, result files and processes locally); `gate` judges each entry's
`metrics.json` against its gates.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

from compiler.files import write_json
from mixlang.diagnostics import MixError, error
from runner import gates as gating
from runner import jobs
from runner.ledger import EntryRecord, RunRecord, new_run_id, now, save


def _entries(build: str, run_folder: str, only: str | None) -> list[EntryRecord]:
    with open(os.path.join(build, "report.json"), encoding="utf-8") as f:
        report = json.load(f)
    entries = []
    for name, index in report["targets"].items():
        if only and only not in (index["mix"], index["sweep"], name):
            continue
        folder = os.path.join(build, index["directory"])
        for train in sorted(os.listdir(folder)):
            if os.path.isfile(os.path.join(folder, train, "job.json")):
                job = jobs.read_job_json(os.path.join(folder, train))
                run_dir = os.path.abspath(os.path.join(run_folder, index["directory"], train))
                entries.append(EntryRecord(name, index["directory"], train, index["point"], run_dir,
                                           gates=job.get("eval", {}).get("gates", [])))
    return entries


def submit(build: str, spec: str, cluster: str, only: str | None = None, parallel: int = 1) -> RunRecord:
    run = RunRecord(new_run_id(), os.path.abspath(spec), os.path.abspath(build), cluster, now())
    run.entries = _entries(run.build, run.folder, only)
    if not run.entries:
        raise MixError(error("E802", "nothing to run: no `train` block uses a mix of this build",
                             help="add a `train` block whose `data` is one of the mixes"))
    logs = os.path.join(run.folder, "logs")
    for entry in run.entries:
        os.makedirs(entry.run_dir, exist_ok=True)
    if cluster == "slurm":
        _submit_slurm(run, logs)
    else:
        _submit_local(run, logs, parallel)
    save(run)
    return run


def _scripts(run: RunRecord, entry: EntryRecord) -> tuple[str, str, dict]:
    folder = os.path.join(run.build, entry.directory, entry.train)
    return os.path.join(folder, "train.py"), os.path.join(folder, "eval.py"), jobs.read_job_json(folder)


def _train_job(run: RunRecord, entry: EntryRecord, **waits: list[str]) -> jobs.ScriptJob:
    train_py, _, _ = _scripts(run, entry)
    return jobs.ScriptJob(train_py, ["--out", entry.run_dir], entry.run_dir, "train", **waits)


def _eval_job(run: RunRecord, entry: EntryRecord, **waits: list[str]) -> jobs.ScriptJob:
    _, eval_py, _ = _scripts(run, entry)
    args = ["--checkpoint", os.path.join(entry.run_dir, "final"), "--out", os.path.join(entry.run_dir, "metrics.json")]
    return jobs.ScriptJob(eval_py, args, entry.run_dir, "eval", **waits)


def _submit_slurm(run: RunRecord, logs: str) -> None:
    """Per train: its points' trains as one job array (one job when there is one point), and
    their evals as an array whose task i starts after train task i succeeded (`aftercorr`),
    and is cancelled if it failed (`kill-on-invalid-dep`)."""
    for train in dict.fromkeys(e.train for e in run.entries):
        group = [e for e in run.entries if e.train == train]
        job = _scripts(run, group[0])[2]
        ex = jobs.executor(logs, "slurm", job["train"]["parameters"], f"mixlang-train-{train}")
        with ex.batch():
            submitted = [ex.submit(_train_job(run, e)) for e in group]
        for entry, sub in zip(group, submitted):
            entry.jobs["train"] = jobs.JobRef(sub.job_id, logs, "slurm")
        if "eval" not in job:
            continue
        array_id = submitted[0].job_id.split("_")[0]
        dependency = f"aftercorr:{array_id}" if len(submitted) > 1 else f"afterok:{submitted[0].job_id}"
        ex = jobs.executor(logs, "slurm", job["eval"]["parameters"], f"mixlang-eval-{train}", dependency)
        with ex.batch():
            evals = [ex.submit(_eval_job(run, e)) for e in group]
        for entry, sub in zip(group, evals):
            entry.jobs["eval"] = jobs.JobRef(sub.job_id, logs, "slurm")


def _submit_local(run: RunRecord, logs: str, parallel: int) -> None:
    """Local processes: each eval waits for its train; sweep points run `parallel` at a time."""
    finished = []
    for i, entry in enumerate(run.entries):
        gate = finished[i - parallel] if i >= parallel else []
        train = _train_job(run, entry, wait_for=gate, fail_if=[])
        params = _scripts(run, entry)[2]
        job = jobs.executor(logs, "local", params["train"]["parameters"], f"train-{entry.train}").submit(train)
        entry.jobs["train"] = jobs.JobRef(job.job_id, logs, "local")
        done = [os.path.join(entry.run_dir, "train.done")]
        failed = [os.path.join(entry.run_dir, "train.failed")]
        if "eval" in params:
            ev = _eval_job(run, entry, wait_for=done, fail_if=failed)
            job = jobs.executor(logs, "local", params["eval"]["parameters"], f"eval-{entry.train}").submit(ev)
            entry.jobs["eval"] = jobs.JobRef(job.job_id, logs, "local")
            done = [os.path.join(entry.run_dir, "eval.done")]
        finished.append(done)


def states(run: RunRecord) -> list[tuple[EntryRecord, str, jobs.JobRef, str]]:
    return [(e, role, ref, jobs.job_state(ref)) for e in run.entries for role, ref in e.jobs.items()]


def wait(run: RunRecord, report: Callable[[str], None] = lambda line: None, poll_s: float = 2.0,
         timeout_s: float | None = None) -> list[tuple[EntryRecord, str, jobs.JobRef, str]]:
    """Poll until every job has finished; returns the final states."""
    start, last = time.monotonic(), ""
    while True:
        current = states(run)
        line = ", ".join(f"{e.target}/{role} {state}" for e, role, _, state in current)
        if line != last:
            report(line)
            last = line
        if all(jobs.is_finished(state) for *_, state in current):
            return current
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"jobs still running after {timeout_s:.0f} s: {line}")
        time.sleep(poll_s)


def gate(run: RunRecord) -> list[tuple[EntryRecord, list[gating.GateVerdict] | None]]:
    """Judge every entry that has metrics; writes its verdict.json. None where there are no metrics."""
    out = []
    for entry in run.entries:
        path = os.path.join(entry.run_dir, "metrics.json")
        if not os.path.exists(path):
            out.append((entry, None))
            continue
        with open(path, encoding="utf-8") as f:
            verdicts = gating.judge(entry.gates, json.load(f))
        write_json(os.path.join(entry.run_dir, "verdict.json"), gating.verdict_json(verdicts))
        out.append((entry, verdicts))
    return out

