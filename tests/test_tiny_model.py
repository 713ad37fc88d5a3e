"""scripts/make_tiny_model.py builds a tokenizer + model directory that loads like a hub model.

Three builds into tmp: the default one in-process, the same one through the CLI in a fresh
process (so determinism is checked across processes, not just within one), and one without a
chat template.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "make_tiny_model.py"
MESSAGES = [
    {"role": "system", "content": "You classify customer feedback."},
    {"role": "user", "content": "Classify this feedback: the kettle leaks."},
    {"role": "assistant", "content": "product_quality"},
]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_tiny_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    again = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(root / "again")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    script = load_script()
    script.main(["--out", str(root / "default")])
    script.main(["--out", str(root / "plain"), "--no-chat-template"])
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 0, output
    assert "model.safetensors" in output and "tokenizer.json" in output
    return {name: root / name for name in ("default", "plain", "again")}


def test_loads_like_a_hub_model_and_runs_forward(builds: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(builds["default"])
    model = transformers.AutoModelForCausalLM.from_pretrained(builds["default"])
    assert model.config.vocab_size == len(tokenizer) == 1024
    assert model.config.tie_word_embeddings
    ids = tokenizer("Question: Calculate 4 * 8.\nAnswer: 32", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


def test_special_tokens_are_set(builds: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(builds["default"])
    config = transformers.AutoConfig.from_pretrained(builds["default"])
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == eos
    assert config.eos_token_id == config.pad_token_id == config.bos_token_id == eos
    for token in ("<|im_start|>", "<|im_end|>"):
        assert tokenizer(token, add_special_tokens=False).input_ids == [tokenizer.convert_tokens_to_ids(token)]
    assert tokenizer.decode(tokenizer("Ma sœur, à l'école.").input_ids) == "Ma sœur, à l'école."


def test_chat_template_renders_chatml(builds: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(builds["default"])
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert text == ("<|im_start|>system\nYou classify customer feedback.<|im_end|>\n"
                    "<|im_start|>user\nClassify this feedback: the kettle leaks.<|im_end|>\n"
                    "<|im_start|>assistant\nproduct_quality<|im_end|>\n")
    prompt = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_no_chat_template_flag(builds: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(builds["plain"])
    assert not tokenizer.chat_template
    assert not (builds["plain"] / "chat_template.jinja").exists()
    with pytest.raises(ValueError):
        tokenizer.apply_chat_template(MESSAGES, tokenize=False)


def test_builds_are_byte_identical(builds: dict[str, Path]) -> None:
    names = sorted(p.name for p in builds["default"].iterdir())
    assert "model.safetensors" in names and "tokenizer.json" in names
    assert names == sorted(p.name for p in builds["again"].iterdir())
    for name in names:
        assert (builds["default"] / name).read_bytes() == (builds["again"] / name).read_bytes(), name
    plain = builds["plain"] / "model.safetensors"
    assert plain.read_bytes() == (builds["default"] / "model.safetensors").read_bytes()
    assert not list(builds["default"].parent.glob(".*"))  # no temp dirs left behind


def test_merges_cross_the_prompt_response_boundary(builds: dict[str, Path]) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(builds["default"])

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    prompt, response = "Question: Is 219 even or odd?\nAnswer:", " odd"
    together, apart = encode(prompt + response), encode(prompt) + encode(response)
    assert together != apart
    assert tokenizer.decode(together) == tokenizer.decode(apart) == prompt + response
    assert ": " in tokenizer.convert_ids_to_tokens(together)[-2].replace("Ġ", " ")
