"""The run ledger: what a submission sent where, kept in the build as `runs/<id>/run.json`.

Takes the entries a submission made (per target and train: its run folder and its jobs);
produces a `RunRecord` on disk that another shell can reattach to: `mixc status`, `logs`,
`cancel`, `gate` and `report` read it. Written atomically; timestamps are fine here (a
ledger records what happened, unlike the lock).
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import secrets
from dataclasses import asdict, dataclass, field

from compiler.files import write_json
from mixlang.diagnostics import MixError, error
from runner.jobs import JobRef


@dataclass
class EntryRecord:
    target: str  # the mix or sweep point
    directory: str  # its folder in the build
    train: str
    point: dict
    run_dir: str  # where train.py and eval.py write: checkpoints, final/, metrics.json, verdict.json
    jobs: dict[str, JobRef] = field(default_factory=dict)  # role -> job
    gates: list[dict] = field(default_factory=list)


@dataclass
class RunRecord:
    id: str
    spec: str
    build: str
    cluster: str
    created: str
    entries: list[EntryRecord] = field(default_factory=list)

    @property
    def folder(self) -> str:
        return os.path.join(self.build, "runs", self.id)


def new_run_id() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def save(run: RunRecord) -> str:
    os.makedirs(run.folder, exist_ok=True)
    path = os.path.join(run.folder, "run.json")
    write_json(path, asdict(run))
    return path


def load(where: str) -> RunRecord:
    """A run by its folder, its run.json, or its id (looked up under ./build/runs and
    ./*/build/runs)."""
    path = _find(where)
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    entries = [EntryRecord(**{**e, "jobs": {k: JobRef(**j) for k, j in e["jobs"].items()}}) for e in raw.pop("entries")]
    return RunRecord(**raw, entries=entries)


def _find(where: str) -> str:
    candidates = [where, os.path.join(where, "run.json")]
    candidates += glob.glob(os.path.join("build", "runs", where, "run.json"))
    candidates += glob.glob(os.path.join("*", "build", "runs", where, "run.json"))
    for path in candidates:
        if os.path.isfile(path) and path.endswith("run.json"):
            return path
    raise MixError(error("E801", f"no run `{where}`: give a run folder (build/runs/ID) or an id found "
                                 "under ./build/runs", help="`mixc submit` and `mixc run` print the run folder"))
