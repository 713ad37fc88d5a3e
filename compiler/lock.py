"""The lock file: every input's hash and every count of a build, as canonical JSON.

Takes the checked program, the texts of its `.mix` files, each source's content hash, the
tokenizers and the built targets; produces the lock: sorted keys, no timestamps, paths relative
to the spec, and a `fingerprint` over all of it. Compiling the same inputs twice gives the same
bytes. `drift` compares a lock with the current inputs and names what changed (`--locked`);
`verify` rechecks every shard file's sha256 against a build's lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from fractions import Fraction
from typing import Any, Mapping

from compiler.files import canonical_json, write_json
from mixlang.diagnostics import MixError, error
from mixlang.program import CheckedProgram

LOCK_VERSION = 1
BUILD_FORMAT = 2


def spec_json(value: Any) -> Any:
    """A spec dataclass as plain JSON values: spans left out, fractions as exact strings."""
    if dataclasses.is_dataclass(value):
        return {f.name: spec_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "span"} | {
            "kind": type(value).__name__}
    if isinstance(value, (tuple, list)):
        return [spec_json(v) for v in value]
    if isinstance(value, Fraction):
        return str(value)
    return value


def write_lock(path: str, lock: dict) -> None:
    write_json(path, lock)


def lock_path(spec_path: str) -> str:
    base = spec_path[:-4] if spec_path.endswith(".mix") else spec_path
    return base + ".lock.json"


def spec_sha256(texts: Mapping[str, str], root: str) -> str:
    """sha256 over every `.mix` file of the program, by path relative to the root file's folder."""
    h = hashlib.sha256()
    for path in sorted(texts, key=lambda p: _relative(p, root)):
        h.update(_relative(path, root).encode() + b"\0" + texts[path].encode() + b"\0")
    return h.hexdigest()


def _relative(path: str, root: str) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(root)))


def make_lock(program: CheckedProgram, texts: Mapping[str, str], content: Mapping[str, str],
              tokenizers: Mapping[str, Any], targets: Mapping[str, dict], files: Mapping[str, tuple[str, ...]]) -> dict:
    from compiler.cache import library_versions

    lock = {
        "version": LOCK_VERSION,
        "spec": {"path": os.path.basename(program.path), "sha256": spec_sha256(texts, program.path)},
        "libraries": library_versions(),
        "tokenizers": {name: {"identity": t.identity, "chat_template_sha256": t.chat_template_sha256,
                              "vocab_size": t.vocab_size} for name, t in sorted(tokenizers.items())},
        "sources": {name: {"content_sha256": sha, "files": [_relative(f, program.path) for f in files[name]]}
                    for name, sha in sorted(content.items())},
        "targets": {name: _target_entry(index) for name, index in sorted(targets.items())},
    }
    lock["fingerprint"] = hashlib.sha256(canonical_json(lock).encode()).hexdigest()
    return lock


def _target_entry(index: dict) -> dict:
    keep = ("mix", "sweep", "point", "seq_len", "packing", "by", "seed", "takes", "sources")
    entry = {k: index[k] for k in keep}
    for split in ("train", "validation"):
        s = index[split]
        entry[split] = {k: s[k] for k in ("samples", "rows", "tokens", "loss_tokens", "packing_efficiency")}
        entry[split]["shards"] = {f: sha for shard in s["shards"] for f, sha in shard["files"].items()}
    return entry


def read_lock(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MixError(error("E711", f"cannot read lock `{path}`: {e}")) from None


def drift(lock: dict, program: CheckedProgram, texts: Mapping[str, str], content: Mapping[str, str],
          tokenizers: Mapping[str, Any]) -> list[str]:
    """What no longer matches the lock, one line each (empty when nothing drifted)."""
    changes = []
    if lock.get("spec", {}).get("sha256") != spec_sha256(texts, program.path):
        changes.append(f"the spec `{os.path.basename(program.path)}` (or a file it imports) changed")
    locked_sources = lock.get("sources", {})
    for name, sha in sorted(content.items()):
        if name not in locked_sources:
            changes.append(f"source `{name}` is new")
        elif locked_sources[name].get("content_sha256") != sha:
            changes.append(f"source `{name}` changed: its content hash is no longer the locked one")
    for name, setup in sorted(tokenizers.items()):
        locked = lock.get("tokenizers", {}).get(name)
        if locked is None:
            changes.append(f"tokenizer `{name}` is new")
        elif locked.get("chat_template_sha256") != setup.chat_template_sha256:
            changes.append(f"the chat template of tokenizer `{name}` changed")
        elif locked.get("identity") != setup.identity:
            changes.append(f"tokenizer `{name}` changed")
    return changes


def verify(build_dir: str) -> list[str]:
    """Every shard file of a build checked against its lock: the problems, one line each."""
    from compiler.shards import sha256_file

    lock = read_lock(os.path.join(build_dir, "mix.lock.json"))
    if lock is None:
        raise MixError(error("E712", f"`{build_dir}` holds no mix.lock.json: it is not a finished build",
                             help="run `mixc compile` (an interrupted compile writes its lock last)"))
    problems = []
    for name, target in sorted(lock["targets"].items()):
        folder = _target_folder(build_dir, name, target)
        for split in ("train", "validation"):
            for file, sha in sorted(target[split]["shards"].items()):
                path = os.path.join(folder, file)
                if not os.path.exists(path):
                    problems.append(f"{path}: missing")
                elif sha256_file(path) != sha:
                    problems.append(f"{path}: sha256 differs from the lock")
    return problems


def _target_folder(build_dir: str, name: str, target: dict) -> str:
    if target.get("sweep") is None:
        return os.path.join(build_dir, name)
    return os.path.join(build_dir, f"{target['sweep']}-{hashlib.sha256(name.encode()).hexdigest()[:8]}")
