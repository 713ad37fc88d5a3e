#!/usr/bin/env python3
"""Build the tiny local tokenizer + causal LM that the examples and tests use instead of a hub model.

Takes the example data (`examples/data/**/*.jsonl`) and produces one directory, loadable exactly
like a hub model with `AutoTokenizer.from_pretrained(dir)` and
`AutoModelForCausalLM.from_pretrained(dir)`:

    tokenizer.json, tokenizer_config.json, chat_template.jinja   byte-level BPE, ChatML template
    config.json, generation_config.json, model.safetensors      a 2-layer Llama, random weights

The BPE pre-tokenizer is ByteLevel with `use_regex=False`, so merges cross spaces and word
boundaries (": y" can be one token): tokenizing a prompt and its response together can differ
from tokenizing them apart, which the encoding tests rely on. The build is deterministic (sorted
input, one training thread, seeded weights) and written to a temp dir that is renamed into place.

Usage: python scripts/make_tiny_model.py [--out examples/models/tiny] [--vocab 1024]
                                         [--no-chat-template] [--seed 0]
"""

from __future__ import annotations

import os

# One rayon thread: BPE training then sees its words in one order and breaks ties the same way.
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "examples" / "data"
DEFAULT_OUT = ROOT / "examples" / "models" / "tiny"
EOS, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def string_fields(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, depth first, in key order as written."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from string_fields(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_fields(item)


def corpus_texts(data_dir: Path) -> list[str]:
    """All string fields of all jsonl records under `data_dir`, files in sorted path order."""
    texts: list[str] = []
    for path in sorted(data_dir.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    texts.extend(string_fields(json.loads(line)))
    if not texts:
        raise SystemExit(f"error: no jsonl records under {data_dir} (run examples/make_data.py)")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int, chat_template: bool) -> Any:
    """A byte-level BPE whose merges cross word boundaries, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, IM_START, IM_END], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2)
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, pad_token=EOS,
        additional_special_tokens=[IM_START, IM_END], model_max_length=1024)
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: Any, seed: int) -> Any:
    """A 2-layer Llama sized to the tokenizer, with weights drawn from `seed`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=1024,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def replace_dir(built: Path, out: Path) -> None:
    """Move `built` to `out`, swapping out any previous `out` (both renames on one filesystem)."""
    umask = os.umask(0)
    os.umask(umask)
    built.chmod(0o777 & ~umask)  # mkdtemp (and the weight writer) use private modes
    for path in built.iterdir():
        path.chmod(0o666 & ~umask)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    built.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def build(out: Path, vocab_size: int = 1024, chat_template: bool = True, seed: int = 0,
          data_dir: Path = DATA_DIR) -> Path:
    """Train the tokenizer, build the model, write both into `out`; returns `out`."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    out = Path(out).resolve()
    tokenizer = train_tokenizer(corpus_texts(data_dir), vocab_size, chat_template)
    model = build_model(tokenizer, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tokenizer.save_pretrained(tmp)
        model.save_pretrained(tmp, safe_serialization=True)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--vocab", type=int, default=1024, help="BPE vocabulary size, special tokens included")
    p.add_argument("--no-chat-template", action="store_true", help="save no chat template")
    p.add_argument("--seed", type=int, default=0, help="torch seed for the model weights")
    p.add_argument("--data", type=Path, default=DATA_DIR, help="folder of example jsonl files")
    args = p.parse_args(argv)
    start = time.perf_counter()
    out = build(args.out, args.vocab, not args.no_chat_template, args.seed, args.data)
    for path in sorted(out.iterdir()):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"built in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
