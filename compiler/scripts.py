"""Rendering the training and evaluation scripts and the job configuration into a build.

Takes the checked program, a built target (its `index.json`), and the lock fingerprint;
produces, for every `train` whose data is the target's mix, a folder `TARGET/TRAIN/` holding
`train.py`, `eval.py` (when the train has an eval), `job.json` (the Slurm resources as
submitit parameters, and the commands) and `sbatch_train.sh` (the same job for plain
`sbatch`). The scripts come from jinja2 templates rendered with StrictUndefined; every value
that reaches a shell line is quoted. They need torch, transformers and numpy, not mixlang,
and their header says which `.mix` and lock fingerprint produced them.
"""

from __future__ import annotations

import math
import os
import pprint
import shlex
from importlib import resources
from typing import Any

from compiler.files import canonical_json, write_text
from mixlang.program import CheckedProgram, EvalSpec, ResourcesSpec, TrainSpec

EVAL_BATCH = 8


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    env.filters["shell"] = lambda value: shlex.quote(str(value))
    return env


def _template(name: str) -> str:
    return resources.files("compiler").joinpath("templates", name).read_text(encoding="utf-8")


def render_target(program: CheckedProgram, target_dir: str, index: dict, fingerprint: str) -> list[str]:
    """Render every train (and its eval) on this target's mix; returns the folders written."""
    written = []
    header = {"spec": os.path.basename(program.path), "fingerprint": fingerprint,
              "recreate": f"mixc compile {shlex.quote(os.path.basename(program.path))}"}
    evals = {e.name: e for e in program.evals}
    for train in (t for t in program.trains if t.data == index["mix"]):
        folder = os.path.join(target_dir, train.name)
        os.makedirs(folder, exist_ok=True)
        _render_train(folder, train, index, header)
        if train.name in evals:
            _render_eval(folder, evals[train.name], train, index, header)
        _write(os.path.join(folder, "job.json"), _job_json(train, evals.get(train.name)))
        _write(os.path.join(folder, "sbatch_train.sh"), _sbatch(train, header), executable=True)
        written.append(folder)
    return written


def total_steps(index: dict, train: TrainSpec) -> int:
    return max(1, math.ceil(index["train"]["rows"] * float(train.epochs) / train.batch))


def train_config(train: TrainSpec, index: dict) -> dict:
    steps = total_steps(index, train)
    return {
        "train": train.name, "target": index["name"], "model": train.model, "data_dir": "..",
        "train_shards": [s["name"] for s in index["train"]["shards"]],
        "sources": [t["source"] for t in index["takes"]], "seq_len": index["seq_len"],
        "packing": index["packing"], "epochs": float(train.epochs), "lr": float(train.lr),
        "batch": train.batch, "micro_batch": train.micro_batch, "warmup": float(train.warmup),
        "precision": train.precision, "seed": index["seed"], "checkpoint_every": max(1, steps // 4),
        "vocab_size": index.get("vocab_size", 0),
    }


def eval_config(spec: EvalSpec, train: TrainSpec, index: dict) -> dict:
    return {
        "eval": spec.name, "model": train.model, "data_dir": "..",
        "validation_shards": [s["name"] for s in index["validation"]["shards"]],
        "sources": [t["source"] for t in index["takes"]], "seq_len": index["seq_len"],
        "precision": train.precision, "seed": index["seed"], "batch_size": EVAL_BATCH,
        "metrics": [{"name": m.name, "kind": m.kind, "args": {k: _plain(v) for k, v in m.args}} for m in spec.metrics],
    }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _render_train(folder: str, train: TrainSpec, index: dict, header: dict) -> None:
    text = _environment().from_string(_template("train.py.j2")).render(
        header=header, config_literal=pprint.pformat(train_config(train, index), width=100, sort_dicts=False))
    _write(os.path.join(folder, "train.py"), text, executable=True)


def _render_eval(folder: str, spec: EvalSpec, train: TrainSpec, index: dict, header: dict) -> None:
    text = _environment().from_string(_template("eval.py.j2")).render(
        header=header, config_literal=pprint.pformat(eval_config(spec, train, index), width=100, sort_dicts=False))
    _write(os.path.join(folder, "eval.py"), text, executable=True)


def submitit_parameters(resources_spec: ResourcesSpec) -> dict[str, Any]:
    """A `resources` block as submitit executor parameters (one task per GPU)."""
    values = dict(resources_spec.values)
    params: dict[str, Any] = {}
    for key in ("nodes", "gpus_per_node", "cpus_per_task"):
        if key in values:
            params[key] = values[key]
    gpus = int(values.get("gpus_per_node", 0) or 0)
    params["tasks_per_node"] = values.get("tasks_per_node", max(gpus, 1))
    if "time" in values:
        params["timeout_min"] = slurm_minutes(values["time"])
    if "mem" in values:
        params["slurm_mem"] = values["mem"]
    for key in ("partition", "account", "qos", "constraint", "reservation", "comment", "gres",
                "mem_per_cpu", "mem_per_gpu", "exclusive"):
        if key in values:
            params[f"slurm_{key}"] = values[key]
    return params


def slurm_minutes(value: str | int) -> int:
    """Slurm time (`MM`, `HH:MM:SS`, `D-HH:MM:SS`, or minutes as a number) in whole minutes."""
    if isinstance(value, int):
        return value
    days, _, clock = value.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = (parts[0], parts[1], 0) if days else (0, parts[0], parts[1])
    else:
        hours, minutes, seconds = parts
    return max(1, int(days or 0) * 1440 + hours * 60 + minutes + math.ceil(seconds / 60))


def _job_json(train: TrainSpec, spec: EvalSpec | None) -> dict:
    job = {"train": {"script": "train.py", "parameters": submitit_parameters(train.resources)}}
    if spec is not None:
        job["eval"] = {"script": "eval.py", "parameters": submitit_parameters(spec.resources),
                       "gates": [{"metric": g.metric, "comparator": g.comparator,
                                  "value": None if g.value is None else float(g.value),
                                  "base_op": g.base_op, "uses_base": g.uses_base} for g in spec.gates]}
    return job


def _sbatch(train: TrainSpec, header: dict) -> str:
    params = submitit_parameters(train.resources)
    lines = ["#!/bin/bash", f"# generated by mixlang from {header['spec']} (lock {header['fingerprint']});",
             f"# re-create with: {header['recreate']}. Submit by hand, from this folder: sbatch sbatch_train.sh RUN_DIR",
             f"#SBATCH --job-name={shlex.quote('mixlang-' + train.name)}"]
    flags = {"nodes": "nodes", "gpus_per_node": "gpus-per-node", "cpus_per_task": "cpus-per-task",
             "tasks_per_node": "ntasks-per-node", "timeout_min": "time", "slurm_mem": "mem",
             "slurm_partition": "partition", "slurm_account": "account", "slurm_qos": "qos",
             "slurm_constraint": "constraint", "slurm_reservation": "reservation"}
    lines += [f"#SBATCH --{flag}={shlex.quote(str(params[key]))}" for key, flag in flags.items() if key in params]
    lines += ['set -euo pipefail', 'RUN_DIR="${1:?usage: sbatch sbatch_train.sh RUN_DIR}"',
              'cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")}"', 'srun python train.py --out "$RUN_DIR"']
    return "\n".join(lines) + "\n"


def _write(path: str, value: Any, executable: bool = False) -> None:
    text = value if isinstance(value, str) else canonical_json(value)
    write_text(path, text, 0o755 if executable else 0o644)
