"""Shared fixtures: a tiny local tokenizer + model, built once per test session, and an
isolated token cache for every test. No test reaches a model hub."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # a missing local model fails at once instead of retrying a hub
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_tiny_model", ROOT / "scripts" / "make_tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> pathlib.Path:
    """examples-trained BPE (merges cross word boundaries) with a ChatML template, and a tiny Llama."""
    out = tmp_path_factory.mktemp("models") / "tiny"
    _script().build(out)
    return out


@pytest.fixture(scope="session")
def tiny_plain_model(tmp_path_factory) -> pathlib.Path:
    """The same tokenizer without a chat template (chat falls back to mixlang's default)."""
    out = tmp_path_factory.mktemp("models") / "plain"
    _script().build(out, chat_template=False)
    return out


@pytest.fixture(autouse=True)
def token_cache(tmp_path_factory, monkeypatch) -> pathlib.Path:
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MIXLANG_CACHE", str(path))
    return path
