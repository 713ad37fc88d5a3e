"""submitit against the real single-node Slurm cluster of `bash scripts/slurm_up.sh` (no mocks).

These tests need the cluster (CI starts it in .ci/run). Without it they FAIL, on purpose, with a
message saying how to start it: they are never skipped.

The functions below run inside Slurm jobs. submitit pickles them with cloudpickle; they are
registered to be pickled *by value*, so the job does not have to import this test module (which
would only work when the job's working directory, pytest's, happens to be the repository root).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import cloudpickle
import pytest
import submitit
from submitit.core.utils import FailedJobError

cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOB_TIMEOUT_S = 30  # no job here should take more than a few seconds; never wait forever


# ---- functions that run in the jobs ------------------------------------------------------------

def add(a: int, b: int) -> dict:
    return {"sum": a + b, "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "python": sys.executable}


def fail() -> None:
    raise ValueError("intentional failure")


def write_marker_after(path: str, seconds: float) -> float:
    time.sleep(seconds)
    pathlib.Path(path).write_text("parent done")
    return time.time()


def read_marker(path: str) -> tuple[str, float]:
    return pathlib.Path(path).read_text(), time.time()


def gpu_env() -> dict:
    return {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "SLURM_GPUS_ON_NODE")}


# ---- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture
def executor(slurm_cluster, tmp_path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    # timeout_min >= 10: with smaller limits Slurm may send submitit's USR2 "time-out" signal early
    ex.update_parameters(timeout_min=10, slurm_partition="debug", cpus_per_task=1, mem_gb=1)
    return ex


def _wait(job: submitit.Job, timeout: float = JOB_TIMEOUT_S):
    """job.result(), but fails instead of hanging when the job is not done within `timeout` s."""
    deadline = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > deadline:
            state = job.get_info(mode="force").get("State", "?")
            job.cancel(check=False)
            pytest.fail(
                f"job {job.job_id} not done after {timeout} s (state {state}); "
                f"stderr:\n{job.stderr() or ''}\nSlurm logs: /var/log/slurm/"
            )
        time.sleep(0.2)
    return job.result()


def _sacct_state(job: submitit.Job, timeout: float = 15) -> str:
    """The job's state as sacct reports it, once it is final (sacct lags a job's end by ~2-3 s)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = job.get_info(mode="force").get("State", "")  # a fresh `sacct` call
        if state and state.split()[0] not in {"PENDING", "RUNNING", "COMPLETING", "REQUEUED"}:
            return state
        time.sleep(0.5)
    return state


# ---- tests -----------------------------------------------------------------------------------

def test_plain_job_returns_its_result(executor):
    job = executor.submit(add, 2, 3)
    assert isinstance(job, submitit.SlurmJob)
    out = _wait(job)
    assert out["sum"] == 5
    assert out["slurm_job_id"] == job.job_id  # it really ran as that Slurm job
    assert out["python"] == sys.executable
    assert _sacct_state(job) == "COMPLETED"


def test_failing_job_raises_failed_job_error(executor):
    job = executor.submit(fail)
    with pytest.raises(FailedJobError, match="intentional failure"):
        _wait(job)


def test_afterok_dependency_runs_after_its_parent(executor, tmp_path):
    marker = str(tmp_path / "marker")
    parent = executor.submit(write_marker_after, marker, 3)
    executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{parent.job_id}"})
    child = executor.submit(read_marker, marker)
    time.sleep(1)
    held = subprocess.run(["squeue", "-h", "-j", child.job_id, "-o", "%T %r"], capture_output=True, text=True).stdout
    assert held.strip() == "PENDING Dependency"  # held while the parent runs
    parent_end = _wait(parent)
    text, child_start = _wait(child)
    assert text == "parent done"
    assert child_start >= parent_end


def test_map_array_returns_all_results(executor):
    executor.update_parameters(slurm_array_parallelism=2)
    jobs = executor.map_array(add, [1, 2, 3, 4], [10, 20, 30, 40])
    assert len({j.job_id.split("_")[0] for j in jobs}) == 1  # one Slurm array
    assert [_wait(j)["sum"] for j in jobs] == [11, 22, 33, 44]


def test_gpu_request_schedules_on_fake_gpus(executor):
    """`gpus_per_node` (a mixlang `resources` key) must schedule: slurm_up.sh's FAKE_GPUS GRES."""
    executor.update_parameters(gpus_per_node=2)
    assert _wait(executor.submit(gpu_env)) == {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_GPUS_ON_NODE": "2"}


# last: the cancelled job holds its CPU for KillWait (5 s), which would delay the next test's job
def test_cancel_makes_job_done_and_cancelled(executor):
    job = executor.submit(time.sleep, 300)
    deadline = time.monotonic() + 15
    while job.get_info(mode="force").get("State") != "RUNNING":
        assert time.monotonic() < deadline, f"job {job.job_id} did not start within 15 s"
        time.sleep(0.3)
    job.cancel()
    deadline = time.monotonic() + 15
    while not job.done(force_check=True):
        assert time.monotonic() < deadline, f"job {job.job_id} not done() 15 s after cancel()"
        time.sleep(0.3)
    assert _sacct_state(job).startswith("CANCELLED")  # sacct says e.g. "CANCELLED by 0"
