"""The rendered `train.py` end to end: a real build of the tiny model, the script run as a user runs it.

The template is rendered here as `compiler/scripts.py` renders it (StrictUndefined, `header` +
`config_literal`), into `build/m/customer_sft/train.py`. One uninterrupted run is the reference;
a second run is stopped by `--max-steps`, restarted and stopped by SIGTERM, restarted again, and
must end with the same weights, bit for bit. The packed-attention tests import the script's own
functions (`runpy`) and check that a row of two samples scores exactly as the two apart.
"""

from __future__ import annotations

import ast
import json
import math
import os
import pathlib
import pprint
import runpy
import signal
import subprocess
import sys

import jinja2
import numpy as np
import pytest

from compiler.shards import read_shard
from tests.compiler.test_build import compile_ok, make_project

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "compiler" / "templates" / "train.py.j2"
HEADER = {"spec": "m.mix", "fingerprint": "f" * 64, "recreate": "mixc compile m.mix"}
STEPS = 9  # about 60 rows x 1.1 epochs / 8 rows per step, rounded up: step 8 spans epochs 0 and 1
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
STANDALONE = {"argparse", "contextlib", "functools", "json", "math", "os", "random", "shutil", "signal",
              "struct", "subprocess", "sys", "time", "numpy", "torch", "transformers"}


def render(target: pathlib.Path, model: pathlib.Path, **overrides: object) -> pathlib.Path:
    index = json.loads((target / "index.json").read_text())
    config = {
        "train": "customer_sft", "target": index["name"], "model": str(model), "data_dir": "..",
        "train_shards": [s["name"] for s in index["train"]["shards"]],
        "sources": [t["source"] for t in index["takes"]], "seq_len": index["seq_len"],
        "packing": index["packing"], "epochs": 1.1, "lr": 3e-3, "batch": 8, "micro_batch": 2, "warmup": 0.1,
        "precision": "bf16", "seed": 3, "checkpoint_every": 2, "vocab_size": index["vocab_size"], **overrides,
    }
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = env.from_string(TEMPLATE.read_text()).render(
        header=HEADER, config_literal=pprint.pformat(config, width=100, sort_dicts=False))
    path = target / "customer_sft" / "train.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def start(script: pathlib.Path, run_dir: pathlib.Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), "--out", str(run_dir), *args], env=ENV, cwd=run_dir.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, expected_rc: int = 0) -> str:
    output = process.communicate(timeout=300)[0]
    assert process.returncode == expected_rc, output
    return output


def weights(folder: pathlib.Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def log(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def checkpoints(run_dir: pathlib.Path) -> list[str]:
    return sorted(os.listdir(run_dir / "checkpoints"))


@pytest.fixture(scope="module")
def target(tmp_path_factory, tiny_model) -> pathlib.Path:
    root = tmp_path_factory.mktemp("train")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXLANG_CACHE", str(root / "cache"))
        compile_ok(make_project(root, tiny_model))
    return root / "build" / "m"


@pytest.fixture(scope="module")
def script(target, tiny_model) -> pathlib.Path:
    return render(target, tiny_model)


@pytest.fixture(scope="module")
def runs(script, tmp_path_factory) -> dict:
    """`whole`: one uninterrupted run. `resumed`: stopped by --max-steps 3 (last checkpoint: step
    2), then by SIGTERM once its first step is logged, then run to the end."""
    root = tmp_path_factory.mktemp("runs")
    whole, resumed = root / "whole", root / "resumed"
    reference, first = start(script, whole), start(script, resumed, "--max-steps", "3")
    out = {"whole": whole, "resumed": resumed, "first_output": finish(first)}
    out["first_checkpoints"], out["first_final"] = checkpoints(resumed), (resumed / "final").exists()
    second, seen = start(script, resumed), []
    for line in second.stdout:
        seen.append(line)
        if line.startswith("step "):
            second.send_signal(signal.SIGTERM)
            break
    out["second_output"] = "".join(seen) + finish(second, expected_rc=143)
    out["second_checkpoints"], out["second_final"] = checkpoints(resumed), (resumed / "final").exists()
    finish(start(script, resumed))
    finish(reference)
    return out


def test_the_script_is_standalone_and_says_where_it_came_from(script):
    text = script.read_text()
    assert text.splitlines()[1:4] == [
        f"# Generated by mixlang from m.mix (lock fingerprint {'f' * 64}).",
        "# Re-create it with: mixc compile m.mix  (edits here are lost then).",
        "# Needs torch, transformers and numpy only; it never imports mixlang.",
    ]
    imported = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= STANDALONE, imported - STANDALONE


def test_a_run_writes_a_changed_model_its_tokenizer_and_the_last_two_checkpoints(runs, tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = runs["whole"] / "final"
    AutoModelForCausalLM.from_pretrained(final)
    assert AutoTokenizer.from_pretrained(final).eos_token == "<|endoftext|>"
    trained, base = weights(final), weights(tiny_model)
    assert trained.keys() == base.keys()
    assert all(not (trained[k] == base[k]).all() for k in base)
    assert checkpoints(runs["whole"]) == [f"step-{STEPS - 1:08d}", f"step-{STEPS:08d}"]
    assert sorted(os.listdir(runs["whole"] / "checkpoints" / f"step-{STEPS:08d}")) == [
        "config.json", "generation_config.json", "model.safetensors", "state.pt"]


def test_the_log_has_a_line_per_step_with_per_source_losses_and_the_loss_falls(runs, target):
    rows = json.loads((target / "index.json").read_text())["train"]["rows"]
    assert math.ceil(rows * 1.1 / 8) == STEPS, rows
    lines = log(runs["whole"])
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))
    assert lines[-1]["epoch"] == pytest.approx(STEPS * 8 / rows, abs=1e-3)
    assert {name for x in lines for name in x["loss_by_source"]} == {"p", "c", "t"}
    for x in lines:
        assert x.keys() == {"step", "epoch", "lr", "loss", "loss_by_source", "tokens", "world_size", "seconds"}
        assert min(x["loss_by_source"].values()) <= x["loss"] <= max(x["loss_by_source"].values())
        assert 0 < x["tokens"] <= 8 * 256
    assert lines[0]["lr"] == pytest.approx(3e-3) and lines[-1]["lr"] < 3e-4
    losses = [x["loss"] for x in lines]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3, losses


def test_an_interrupted_run_resumes_to_the_same_weights(runs):
    assert runs["first_checkpoints"] == ["step-00000002"] and not runs["first_final"]
    assert "resumed from" in runs["second_output"] and not runs["second_final"]
    stopped_at = int(runs["second_checkpoints"][-1].removeprefix("step-"))
    assert 3 <= stopped_at < STEPS, runs["second_output"]
    assert [x["step"] for x in log(runs["resumed"])] == list(range(1, STEPS + 1))
    resumed, whole = weights(runs["resumed"] / "final"), weights(runs["whole"] / "final")
    assert resumed.keys() == whole.keys()
    assert all(resumed[k].equal(whole[k]) for k in whole), [k for k in whole if not resumed[k].equal(whole[k])]


@pytest.fixture(scope="module")
def functions(script) -> dict:
    return runpy.run_path(str(script), run_name="train_functions")


def test_each_epoch_visits_every_row_once_in_its_own_order(functions):
    step_rows = functions["step_rows"]
    stream = [row for step in range(STEPS) for row in step_rows(step, 60)]
    assert sorted(stream[:60]) == list(range(60)) and len(set(stream[60:])) == len(stream[60:])
    assert stream[60:] != stream[:len(stream) - 60]


def packed_and_apart(target: pathlib.Path) -> tuple[list, list]:
    row = next(r for r in read_shard(str(target), "train-00000") if len(r) >= 2)
    return [row[:2]], [[row[0]], [row[1]]]


def test_packed_samples_score_as_the_samples_apart(functions, target, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    packed, apart = packed_and_apart(target)
    make_batch, token_losses = functions["make_batch"], functions["token_losses"]
    with torch.no_grad():
        together = token_losses(model, make_batch(packed, 256)).sum()
        alone = token_losses(model, make_batch(apart, 256)).sum()
        batch = make_batch(packed, 256)
        batch["position_ids"] = torch.arange(256)[None]  # one sequence: the second sample sees the first
        leaky = token_losses(model, batch).sum()
    assert together.item() == pytest.approx(alone.item(), rel=1e-5)
    assert abs(leaky.item() - alone.item()) > 1e-3  # the test can fail
    functions["check_sample_isolation"](model, torch.device("cpu"))


def test_a_model_that_ignores_positions_is_refused(functions, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    class OneSequence(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model, self.config = model, model.config

        def forward(self, input_ids, position_ids, use_cache):
            return self.model(input_ids=input_ids, use_cache=False)

    model = OneSequence(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32))
    with pytest.raises(SystemExit, match="packed samples attend to each other"):
        functions["check_sample_isolation"](model, torch.device("cpu"))
