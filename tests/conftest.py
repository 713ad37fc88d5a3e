"""Shared fixtures: a tiny local tokenizer + model, built once per test session, and an
isolated token cache for every test. No test reaches a model hub."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess

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


# ---- the real single-node Slurm cluster (scripts/slurm_up.sh; `make test` and CI start it) ----

START_HINT = "start it with `bash scripts/slurm_up.sh` (as root; see the header of that script)"


def _run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    """The finished command, or None when it did not answer within 5 s."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Fails (never skips) unless the local Slurm cluster answers with a usable node and sacct."""
    for tool in ("sinfo", "sbatch", "srun", "sacct", "scancel"):
        if shutil.which(tool) is None:
            pytest.fail(f"Slurm is not installed (`{tool}` not on PATH): {START_HINT}", pytrace=False)
    node = _run(["sinfo", "-h", "-p", "debug", "-o", "%T"])
    if node is None:
        pytest.fail(f"`sinfo` did not answer within 5 s (slurmctld down or hung): {START_HINT}", pytrace=False)
    states = node.stdout.split()
    if node.returncode != 0 or not {"idle", "mixed"} & set(states):
        pytest.fail(
            f"no idle/mixed node in Slurm partition `debug` (sinfo rc={node.returncode}, "
            f"states={states}, stderr={node.stderr.strip()!r}): {START_HINT}",
            pytrace=False,
        )
    acct = _run(["sacct", "-n", "-X", "-S", "now"])
    if acct is None:
        pytest.fail(f"`sacct` did not answer within 5 s (slurmdbd down?): {START_HINT}", pytrace=False)
    if acct.returncode != 0:
        pytest.fail(
            f"`sacct` fails ({acct.stderr.strip()!r}); submitit reads job states only through sacct, "
            f"so the cluster needs accounting (SLURM_ACCT=dbd, the default): {START_HINT}",
            pytrace=False,
        )
