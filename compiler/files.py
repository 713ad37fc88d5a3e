"""Writing files so that no reader ever sees half of one.

Takes a path and text (or a JSON value); writes a temporary file beside it, flushes it to
disk and renames it into place. Every output of the project goes through here: locks,
reports, indexes, rendered scripts, the run ledger, formatted `.mix` files.
"""

from __future__ import annotations

import json
import os
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, one-space indent, UTF-8 as is, a final newline: the same value, the same bytes."""
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_text(path: str, text: str, mode: int | None = None) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_json(path: str, value: Any) -> None:
    write_text(path, canonical_json(value))
