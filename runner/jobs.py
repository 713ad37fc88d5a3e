"""Jobs: the rendered scripts, dispatched through submitit to Slurm or local processes.

Takes a build's target folders (with `TRAIN/job.json`, `train.py`, `eval.py`); produces
submitted jobs and their `JobRef`s for the run ledger. One class, `ScriptJob`, is what every
job runs: it sets the torch.distributed rendezvous from submitit's job environment (one task
per GPU), runs the script with this interpreter, and leaves `ROLE.done` or `ROLE.failed` in
the run folder. It is `Checkpointable`: on preemption or time-out submitit requeues it, and
the training script resumes from its own last checkpoint.

On Slurm the eval job depends on its train (`afterok`, with `kill-on-invalid-dep`, so a failed
train cancels its eval instead of leaving it pending); the points of a sweep go out as one job
array each for trains and evals. Locally, an eval waits for its train's marker, and sweep
points run one after another (or `parallel` at a time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import submitit

POLL_S = 1.0


def default_cluster() -> str:
    """`slurm` when Slurm's commands are on PATH, else `local`."""
    return "slurm" if shutil.which("sbatch") and shutil.which("srun") else "local"


@dataclass(frozen=True)
class JobRef:
    job_id: str
    folder: str  # submitit's folder: the job's pickles and logs
    cluster: str


class ScriptJob(submitit.helpers.Checkpointable):
    def __init__(self, script: str, args: Sequence[str], run_dir: str, role: str,
                 wait_for: Sequence[str] = (), fail_if: Sequence[str] = ()) -> None:
        self.script, self.args, self.run_dir, self.role = script, list(args), run_dir, role
        self.wait_for, self.fail_if = list(wait_for), list(fail_if)

    def __call__(self) -> str:
        env = submitit.JobEnvironment()
        if env.global_rank == 0:
            for name in (f"{self.role}.done", f"{self.role}.failed"):
                _remove(os.path.join(self.run_dir, name))
        self._wait()
        result = subprocess.run([sys.executable, self.script, *self.args], cwd=os.path.dirname(self.script),
                                env={**os.environ, **_rendezvous(env)})
        if result.returncode != 0:
            self._mark("failed", f"{os.path.basename(self.script)} exited with {result.returncode}")
            raise RuntimeError(f"{self.role}: {self.script} exited with status {result.returncode}")
        self._mark("done", "ok")
        return self.run_dir

    def _wait(self) -> None:
        """Locally, wait for the jobs this one depends on (Slurm uses real dependencies)."""
        while self.wait_for and not all(os.path.exists(p) for p in self.wait_for):
            failed = [p for p in self.fail_if if os.path.exists(p)]
            if failed:
                self._mark("failed", f"cancelled: {os.path.basename(failed[0])}")
                raise RuntimeError(f"{self.role} cancelled: its dependency failed ({failed[0]})")
            time.sleep(POLL_S)

    def _mark(self, outcome: str, message: str) -> None:
        if submitit.JobEnvironment().global_rank == 0:
            with open(os.path.join(self.run_dir, f"{self.role}.{outcome}"), "w", encoding="utf-8") as f:
                f.write(message + "\n")

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _rendezvous(env: Any) -> dict[str, str]:
    port = 20000 + int("".join(c for c in str(env.job_id) if c.isdigit())[-4:] or 0) % 20000
    return {"RANK": str(env.global_rank), "WORLD_SIZE": str(env.num_tasks), "LOCAL_RANK": str(env.local_rank),
            "MASTER_ADDR": env.hostnames[0] if env.hostnames else "127.0.0.1", "MASTER_PORT": str(port)}


def executor(folder: str, cluster: str, parameters: dict, name: str, dependency: str | None = None) -> Any:
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params = dict(parameters)
    extra = {}
    if "slurm_reservation" in params:
        extra["reservation"] = params.pop("slurm_reservation")
    if dependency:
        extra.update({"dependency": dependency, "kill-on-invalid-dep": "yes"})
    if cluster == "slurm" and extra:
        params["slurm_additional_parameters"] = extra
    if cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(name=name, **params)
    return ex


def read_job_json(train_dir: str) -> dict:
    with open(os.path.join(train_dir, "job.json"), encoding="utf-8") as f:
        return json.load(f)


# ---- state of a job, from any shell ---------------------------------------------------------


def job_state(ref: JobRef) -> str:
    """PENDING, RUNNING, COMPLETED, FAILED, CANCELLED... (Slurm's words, through sacct), or for
    local jobs: RUNNING, COMPLETED, FAILED or INTERRUPTED."""
    if ref.cluster == "slurm":
        return _sacct_state(ref.job_id)
    outcome = _result_outcome(ref)
    if outcome:
        return outcome
    return "RUNNING" if _pid_alive(ref.job_id) else "INTERRUPTED"


def _sacct_state(job_id: str) -> str:
    """A fresh `sacct` reading (submitit's own watcher backs off to minutes between calls)."""
    try:
        out = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,State"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    for line in out.stdout.splitlines():
        found, _, state = line.partition("|")
        if found == job_id:
            return state.strip() or "UNKNOWN"
    return "PENDING" if out.returncode == 0 else "UNKNOWN"


def _result_outcome(ref: JobRef) -> str | None:
    paths = submitit.core.utils.JobPaths(ref.folder, job_id=ref.job_id, task_id=0)
    if not paths.result_pickle.exists():
        return None
    try:
        tag, _ = submitit.core.utils.pickle_load(paths.result_pickle)
    except Exception:  # noqa: BLE001 - a half-written pickle
        return None
    return "COMPLETED" if tag == "success" else "FAILED"


def _pid_alive(job_id: str) -> bool:
    try:
        pid = int(job_id)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def log_paths(ref: JobRef) -> tuple[str, str]:
    paths = submitit.core.utils.JobPaths(ref.folder, job_id=ref.job_id, task_id=0)
    return str(paths.stdout), str(paths.stderr)


def cancel(ref: JobRef) -> None:
    if ref.cluster == "slurm":
        subprocess.run(["scancel", ref.job_id], check=False, capture_output=True)
    elif _pid_alive(ref.job_id):
        import signal

        try:
            os.killpg(os.getpgid(int(ref.job_id)), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            os.kill(int(ref.job_id), signal.SIGTERM)


FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "INTERRUPTED",
            "BOOT_FAIL", "DEADLINE"}


def is_finished(state: str) -> bool:
    return state.split()[0].rstrip("+") in FINISHED
