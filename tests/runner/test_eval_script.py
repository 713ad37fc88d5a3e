"""The generated `eval.py`: rendered from `compiler/templates/eval.py.j2`, run as a job would run it.

One real build (source `p` has a holdout) and one rendered script at `build/m/sft/eval.py` per
module. The script is run twice in a subprocess: against the base model itself (base and
candidate must then agree exactly) and against a perturbed copy (they must differ). Its
functions are also imported from the rendered file to check the metric math by hand and the
log-likelihoods against a plain, unbatched forward pass.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib
import pprint
import subprocess
import sys

import jinja2
import numpy as np
import pytest
import torch

from compiler.shards import read_shard
from tests.compiler.test_build import compile_ok, make_project

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "compiler" / "templates" / "eval.py.j2"
CUSTOMER = ROOT / "examples" / "data" / "customer" / "test.jsonl"
MMLU = ROOT / "examples" / "data" / "mmlu" / "test.jsonl"
HEADER = {"spec": "m.mix", "fingerprint": "0123abcd" * 8, "recreate": "mixc compile m.mix"}
PROMPT = "Message: {{ text }}\nCategory: "
LIMIT = 6


def render(config: dict) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        header=HEADER, config_literal=pprint.pformat(config, width=100, sort_dicts=False))


def eval_config(model: pathlib.Path, classify_data: pathlib.Path) -> dict:
    classify = {"data": str(classify_data), "prompt": PROMPT, "label": "category"}
    return {
        "eval": "sft", "model": str(model), "data_dir": "..", "validation_shards": ["validation-00000"],
        "sources": ["p", "c", "t"], "seq_len": 256, "precision": "fp32", "seed": 3, "batch_size": 4,
        "metrics": [
            {"name": "voc_f1", "kind": "classify", "args": {**classify, "average": "macro", "method": "loglik"}},
            {"name": "voc_micro", "kind": "classify", "args": {**classify, "average": "micro"}},
            {"name": "voc_gen", "kind": "classify", "args": {**classify, "method": "generate"}},
            {"name": "mmlu", "kind": "choice", "args": {"data": str(MMLU)}},
            {"name": "p_loss", "kind": "loss", "args": {"source": "p"}},
        ],
    }


def load_script(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(f"eval_script_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(script: pathlib.Path, checkpoint: pathlib.Path, out: pathlib.Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(script), "--checkpoint", str(checkpoint), "--out", str(out),
                           "--limit", str(LIMIT)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def perturbed_copy(model: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """The model with seeded noise on every weight, saved without a tokenizer."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lm.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    lm.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("eval")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIXLANG_CACHE", str(root / "cache"))
        compile_ok(make_project(root, tiny_model))
    classify_data = root / "classify.jsonl"
    classify_data.write_text("".join(CUSTOMER.read_text(encoding="utf-8").splitlines(True)[:16]))
    script = root / "build" / "m" / "sft" / "eval.py"
    script.parent.mkdir()
    script.write_text(render(eval_config(tiny_model, classify_data)))
    perturbed = perturbed_copy(tiny_model, root / "perturbed")
    (root / "out").mkdir()
    same = run_script(script, tiny_model, root / "out" / "same.json")
    other = run_script(script, perturbed, root / "out" / "other.json")
    return {"root": root, "script": script, "same": same, "other": other, "classify_data": classify_data}


@pytest.fixture(scope="module")
def script(project):
    return load_script(project["script"])


@pytest.fixture(scope="module")
def lm(script, tiny_model):
    return script.load(str(tiny_model), str(tiny_model))


def test_rendered_script_has_the_header_and_imports_no_mixlang(project):
    text = project["script"].read_text()
    head = "\n".join(text.splitlines()[:4])
    assert text.startswith("#!/usr/bin/env python3\n")
    assert "m.mix" in head and HEADER["fingerprint"] in head and "mixc compile m.mix" in head
    assert "needs torch, transformers and numpy only" in head.lower()
    roots = {(node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
             for node in ast.walk(ast.parse(text)) if isinstance(node, (ast.Import, ast.ImportFrom))
             for alias in node.names}
    assert roots <= {"os", "argparse", "json", "math", "struct", "sys", "tempfile", "time", "dataclasses",
                     "numpy", "torch", "jinja2", "transformers"}


def test_base_as_checkpoint_gives_identical_scores(project):
    out = project["same"]
    names = {"voc_f1", "voc_micro", "voc_gen", "mmlu", "p_loss"}
    assert set(out) == {"base", "candidate", "samples", "details", "header"}
    assert set(out["base"]) == names and out["base"] == out["candidate"]
    assert out["details"] == {n: {"base": d["base"], "candidate": d["base"]} for n, d in out["details"].items()}
    assert out["samples"] == {n: LIMIT for n in names}
    assert out["header"]["fingerprint"] == HEADER["fingerprint"] and out["header"]["limit"] == LIMIT
    for name in ("voc_f1", "voc_micro", "voc_gen", "mmlu"):
        assert 0.0 <= out["base"][name] <= 1.0
    assert out["details"]["voc_f1"]["base"]["unparseable"] == 0
    assert out["base"]["voc_micro"] == out["details"]["voc_micro"]["base"]["accuracy"]
    assert out["base"]["p_loss"] > 0 and out["details"]["p_loss"]["base"]["loss_tokens"] > 0
    assert sorted(os.listdir(project["root"] / "out")) == ["other.json", "same.json"]  # no temp files left


def test_perturbed_checkpoint_scores_differ_and_base_is_reproducible(project):
    same, other = project["same"], project["other"]
    assert other["base"] == same["base"]
    assert other["candidate"]["p_loss"] != other["base"]["p_loss"]
    assert other["details"]["voc_f1"]["candidate"] != other["details"]["voc_f1"]["base"]


def test_f1_macro_and_micro_by_hand(script):
    scores = script.f1_scores(["a", "b", "b", "c"], ["a", "b", "c", "c"], ["a", "b", "c"])
    assert scores["macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert scores["micro"] == scores["accuracy"] == pytest.approx(0.75)
    # one unparseable output (None): wrong, yet no false positive for any class
    scores = script.f1_scores(["a", "a", "a", "b", "c"], ["a", "a", "b", "b", None], ["a", "b", "c"])
    assert [scores["per_class"][c]["f1"] for c in "abc"] == pytest.approx([0.8, 2 / 3, 0.0])
    assert scores["macro"] == pytest.approx((0.8 + 2 / 3) / 3)
    assert scores["micro"] == pytest.approx(6 / 9) and scores["accuracy"] == pytest.approx(0.6)
    assert scores["per_class"]["c"]["support"] == 1


def test_generated_text_matches_a_label_on_its_first_line(script):
    labels = ["pricing", "shipping"]
    assert script.parse_label("  Pricing\nshipping", labels) == "pricing"
    assert script.parse_label("\n shipping \n", labels) == "shipping"
    assert script.parse_label("pricing.", labels) is None
    assert script.parse_label("", labels) is None


def test_choice_prompt_and_accuracy(script, tmp_path, monkeypatch):
    record = {"question": " What is 2 + 2? ", "choices": ["3", "4", "5", "22"], "answer": 1}
    assert script.choice_prompt(record) == "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps({**record, "answer": a}) + "\n" for a in (0, 1, 2, 3)))
    seen = {}

    def fake_best(lm, prompts, options):
        seen["options"] = options
        return [1, 1, 2, 0]

    monkeypatch.setattr(script, "best_options", fake_best)
    value, n, details = script.choice(None, {"data": str(data)}, None)
    assert (value, n, details["correct"]) == (0.5, 4, 2)
    assert seen["options"] == [[" A", " B", " C", " D"]] * 4


def manual_loglik(lm, ids: list[int], n: int) -> float:
    """Sum of log p over the last n tokens, one unpadded sequence, plain transformers."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    return float(logp[len(logp) - n:].sum())


def test_loglik_classify_picks_the_label_the_model_prefers(script, lm, project):
    records = [json.loads(line) for line in project["classify_data"].read_text().splitlines()][:LIMIT]
    labels = sorted({r["category"] for r in records})
    prompts = [PROMPT.replace("{{ text }}", r["text"]) for r in records]
    picked = script.best_options(lm, prompts, [labels] * len(prompts))
    spread = 0.0
    for prompt, choice in zip(prompts, picked):
        context = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        scores = []
        for label in labels:
            after = lm.tokenizer(label, add_special_tokens=False)["input_ids"]
            scores.append(manual_loglik(lm, context + after, len(after)))
        assert choice == int(np.argmax(scores))
        spread = max(spread, max(scores) - min(scores))
    assert spread > 0.01  # the choice is not a tie broken by label order


def test_batched_logprobs_match_unpadded_ones(script, lm):
    sequences = [[5, 9, 40, 3, 7, 100], [11, 12], [7, 8, 9, 10, 300, 2, 4, 1, 0]]
    for seq, logp in zip(sequences, script.token_logprobs(lm, sequences)):
        assert len(logp) == len(seq) - 1
        assert float(logp.sum()) == pytest.approx(manual_loglik(lm, seq, len(seq) - 1), abs=1e-4)


def test_loss_reads_the_holdout_and_matches_a_manual_computation(script, lm, project):
    directory = project["root"] / "build" / "m"
    expected = [(ids, mask) for row in read_shard(str(directory), "validation-00000")
                for ids, mask, source in row if source == 0]
    got = script.holdout_samples("p", None)
    assert len(got) == len(expected) > LIMIT
    assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(got, expected))
    nll, tokens = 0.0, 0
    for ids, mask in expected[:3]:
        with torch.no_grad():
            logits = lm.model(torch.from_numpy(ids.astype(np.int64))[None]).logits[0]
        losses = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:].astype(np.int64)), reduction="none")
        keep = torch.tensor(mask[1:] == 1)
        nll, tokens = nll + float(losses[keep].sum()), tokens + int(keep.sum())
    value, n, details = script.loss(lm, {"source": "p"}, 3)
    assert (n, details["loss_tokens"]) == (3, tokens)
    assert value == pytest.approx(nll / tokens, rel=1e-5)


def test_generate_with_left_padding_matches_one_prompt_at_a_time(script, lm):
    prompts = ["Message: Hi\nCategory: ", "Message: my parcel never arrived, where is it?\nCategory: ", ""]
    batched = script.generate(lm, prompts)
    assert batched == [script.generate(lm, [p])[0] for p in prompts]


def test_generate_method_counts_unparseable_outputs_as_wrong(script, tmp_path, monkeypatch):
    data = tmp_path / "c.jsonl"
    gold = ["pricing", "shipping", "shipping", "other"]
    data.write_text("".join(json.dumps({"text": f"t{i}", "category": c}) + "\n" for i, c in enumerate(gold)))
    monkeypatch.setattr(script, "generate", lambda lm, prompts: [" Pricing\n", "shipping", "ship it", "OTHER."])
    args = {"data": str(data), "prompt": "{{ text }}", "label": "category", "method": "generate", "average": "micro"}
    value, n, details = script.classify(None, args, None)
    assert (n, details["unparseable"], details["accuracy"]) == (4, 2, 0.5)
    assert value == pytest.approx(2 * 2 / (2 * 2 + 0 + 2))  # micro: TP 2, FP 0, FN 2
