"""Train, evaluate, gate: real jobs through submitit, locally and on the real Slurm cluster.

A tiny Llama really trains on CPU on a compiled mix; eval.py scores it and its base model;
gates judge. Nothing mocks sbatch or submitit. The Slurm tests need `bash scripts/slurm_up.sh`
(`make test` and CI run it) and fail, never skip, without it.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import time


from runner.cli import main
from runner.ledger import load
from tests.compiler.test_build import make_project

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "data"


def make_run_project(root: pathlib.Path, model: pathlib.Path, epochs: str = "1", train_model: str | None = None,
                     resources: str = 'cpus_per_task 1\n    time "00:10:00"', extra: str = "",
                     with_eval: bool = True) -> pathlib.Path:
    spec = make_project(root, model)
    (root / "data" / "test.jsonl").write_text("\n".join(
        EXAMPLES.joinpath("customer", "test.jsonl").read_text().splitlines()[:24]) + "\n")
    (root / "data" / "mmlu.jsonl").write_text("\n".join(
        EXAMPLES.joinpath("mmlu", "test.jsonl").read_text().splitlines()[:16]) + "\n")
    train = f"""
train sft {{
  data        m
  model       "{train_model or model}"
  epochs      {epochs}
  lr          3e-3
  batch       4
  micro_batch 2
  precision   fp32
  resources {{
    {resources}
  }}
}}
"""
    evaluation = """
eval sft {
  metric f1   = classify(data = "data/test.jsonl", prompt = "Feedback: {{ text }}\\nCategory: ", label = "category")
  metric mmlu = choice(data = "data/mmlu.jsonl")
  metric held = loss(source = p)

  gate f1   >= 0
  gate mmlu >= base - 1
  gate held <= base * 10
  resources { cpus_per_task 1 time "00:10:00" }
}
"""
    spec.write_text(spec.read_text() + train + (evaluation if with_eval else "") + extra)
    return spec


def _check_finished_entry(entry) -> None:
    run_dir = pathlib.Path(entry.run_dir)
    assert (run_dir / "final" / "model.safetensors").exists()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["base"]) == set(metrics["candidate"]) == {"f1", "mmlu", "held"}
    assert metrics["samples"]["mmlu"] == 16
    verdict = json.loads((run_dir / "verdict.json").read_text())
    assert verdict["passed"] is True and [g["metric"] for g in verdict["gates"]] == ["f1", "mmlu", "held"]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert log and set(log[-1]["loss_by_source"]) <= {"p", "c", "t"}


def test_local_run_trains_evaluates_and_gates(tmp_path, tiny_model, capsys):
    spec = make_run_project(tmp_path, tiny_model)
    assert main(["run", str(spec), "--cluster", "local", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "verdict: PASS" in out
    run = load(str(next((tmp_path / "build" / "runs").iterdir())))
    assert run.cluster == "local" and [e.train for e in run.entries] == ["sft"]
    _check_finished_entry(run.entries[0])
    for verb in ("status", "logs", "gate", "report"):
        assert main([verb, run.folder]) == 0, verb
    text = capsys.readouterr().out
    assert "COMPLETED" in text and "f1" in text


def test_a_failing_gate_exits_3(tmp_path, tiny_model, capsys):
    spec = make_run_project(tmp_path, tiny_model)
    spec.write_text(spec.read_text().replace("gate f1   >= 0", "gate f1   > 1"))
    assert main(["run", str(spec), "--cluster", "local", "--jobs", "1"]) == 3
    assert "verdict: FAIL" in capsys.readouterr().out


def _wait_run(run_folder: str, timeout: float = 240) -> list:
    from runner.run import wait

    return wait(load(run_folder), poll_s=1.0, timeout_s=timeout)


def test_slurm_run_end_to_end(slurm_cluster, tmp_path, tiny_model, capsys):
    spec = make_run_project(tmp_path, tiny_model)
    assert main(["run", str(spec), "--cluster", "slurm", "--jobs", "1"]) == 0
    run = load(str(next((tmp_path / "build" / "runs").iterdir())))
    assert run.cluster == "slurm"
    entry = run.entries[0]
    assert entry.jobs["train"].job_id.isdigit() and entry.jobs["eval"].job_id.isdigit()
    states = {role: s for _, role, _, s in _wait_run(run.folder)}
    assert states == {"train": "COMPLETED", "eval": "COMPLETED"}
    _check_finished_entry(entry)


def test_a_sweep_goes_out_as_one_job_array(slurm_cluster, tmp_path, tiny_model, capsys):
    spec = make_run_project(tmp_path, tiny_model, extra="\nsweep s {\n  vary m.p in [60%, 20%]\n}\n")
    assert main(["submit", str(spec), "--cluster", "slurm", "--mix", "s", "--jobs", "1"]) == 0
    run = load(str(next((tmp_path / "build" / "runs").iterdir())))
    train_ids = [e.jobs["train"].job_id for e in run.entries]
    assert len(train_ids) == 2 and len({i.split("_")[0] for i in train_ids}) == 1 and all("_" in i for i in train_ids)
    final = _wait_run(run.folder)
    assert all(state == "COMPLETED" for *_, state in final), final
    capsys.readouterr()
    assert main(["report", run.folder]) == 0
    report = capsys.readouterr().out
    assert "m.p=60%" in report and "m.p=20%" in report


def test_a_failed_train_cancels_its_eval(slurm_cluster, tmp_path, tiny_model):
    missing = tmp_path / "no-such-model"
    missing.mkdir()  # a directory, so it is local; empty, so loading it fails inside the job
    spec = make_run_project(tmp_path, tiny_model, train_model=str(missing))
    assert main(["submit", str(spec), "--cluster", "slurm", "--jobs", "1"]) == 0
    run = load(str(next((tmp_path / "build" / "runs").iterdir())))
    states = {role: s for _, role, _, s in _wait_run(run.folder, timeout=120)}
    assert states["train"] == "FAILED" and states["eval"].startswith("CANCELLED")
    assert (pathlib.Path(run.entries[0].run_dir) / "train.failed").exists()


def test_requeue_mid_training_resumes_and_reaches_the_same_weights(slurm_cluster, tmp_path, tiny_model):
    """Two identical trainings side by side; one is requeued by Slurm after its first checkpoint."""
    from safetensors.numpy import load_file

    runs = []
    for name in ("straight", "requeued"):
        spec = make_run_project(tmp_path / name, tiny_model, epochs="2", with_eval=False)
        assert main(["submit", str(spec), "--cluster", "slurm", "--jobs", "1"]) == 0
        runs.append(load(str(next((tmp_path / name / "build" / "runs").iterdir()))))
    entry = runs[1].entries[0]
    checkpoints = pathlib.Path(entry.run_dir) / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.exists() and any(p.name.startswith("step-") for p in checkpoints.iterdir())):
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    assert not (pathlib.Path(entry.run_dir) / "final").exists(), "training finished before the requeue"
    subprocess.run(["scontrol", "requeue", entry.jobs["train"].job_id], check=True)
    finals = []
    for run in runs:
        states = {role: s for _, role, _, s in _wait_run(run.folder, timeout=300)}
        assert states["train"] == "COMPLETED", states
        finals.append(load_file(str(pathlib.Path(run.entries[0].run_dir) / "final" / "model.safetensors")))
    # sacct --duplicates lists every run of the job: requeued once, then completed
    history = subprocess.run(["sacct", "-j", entry.jobs["train"].job_id, "-D", "-X", "-n", "-o", "State"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "REQUEUED" in history and history[-1] == "COMPLETED", history
    assert finals[0].keys() == finals[1].keys()
    for key in finals[0]:
        assert (finals[0][key] == finals[1][key]).all(), key


def test_cancel_stops_a_running_run(slurm_cluster, tmp_path, tiny_model, capsys):
    spec = make_run_project(tmp_path, tiny_model, epochs="20")
    assert main(["submit", str(spec), "--cluster", "slurm", "--jobs", "1"]) == 0
    run = load(str(next((tmp_path / "build" / "runs").iterdir())))
    assert main(["cancel", run.folder]) == 0
    assert "cancelled m/train" in capsys.readouterr().out
    states = {role: s for _, role, _, s in _wait_run(run.folder, timeout=60)}
    assert all(s.startswith("CANCELLED") for s in states.values()), states


def test_two_gpus_per_node_launch_one_process_each_with_a_rendezvous(slurm_cluster, tmp_path, tiny_model):
    """The cluster's GPUs are fake, so each rank trains on the CPU, but Slurm really starts one
    task per GPU and they really form one gloo process group (DDP) through the rendezvous."""
    spec = make_run_project(tmp_path, tiny_model, with_eval=False,
                            resources='gpus_per_node 2\n    cpus_per_task 1\n    time "00:10:00"')
    assert main(["submit", str(spec), "--cluster", "slurm", "--jobs", "1"]) == 0
    run = load(str(next((tmp_path / "build" / "runs").iterdir())))
    states = {role: s for _, role, _, s in _wait_run(run.folder, timeout=300)}
    assert states == {"train": "COMPLETED"}, states
    entry = run.entries[0]
    logs = pathlib.Path(entry.jobs["train"].folder)
    job_id = entry.jobs["train"].job_id
    assert (logs / f"{job_id}_0_log.out").exists() and (logs / f"{job_id}_1_log.out").exists()
    assert (pathlib.Path(entry.run_dir) / "final" / "model.safetensors").exists()
    log = [json.loads(x) for x in (pathlib.Path(entry.run_dir) / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["world_size"] == 2


def test_local_sweep_points_run_one_after_another(tmp_path, tiny_model, capsys):
    spec = make_run_project(tmp_path, tiny_model, with_eval=False, extra="\nsweep s {\n  vary m.p in [60%, 20%]\n}\n")
    assert main(["submit", str(spec), "--cluster", "local", "--mix", "s", "--jobs", "1"]) == 0
    run = load(str(next((tmp_path / "build" / "runs").iterdir())))
    final = _wait_run(run.folder, timeout=300)
    assert [s for *_, s in final] == ["COMPLETED", "COMPLETED"]
    first, second = (pathlib.Path(e.run_dir) for e in run.entries)
    assert (first / "train.done").stat().st_mtime <= min(p.stat().st_mtime for p in (second / "checkpoints").iterdir())
