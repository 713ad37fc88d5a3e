"""The checker: syntax modules in, a `CheckedProgram` (or every diagnostic it can find) out.

Takes the modules a `load` produced (root first); produces a `CheckResult`. It resolves names
across files, reads every attribute against the schema of its block (unknown keys, duplicates,
wrong types, missing required keys), checks each mix's shares, and every cross-reference
(takes, train data, evals, gates, sweeps). It reports all problems it finds, not just the
first. Relative paths are resolved against the file that wrote them; a `tokenizer` or `model`
that names an existing directory becomes that directory, otherwise it stays a hub name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from mixlang import syntax as s
from mixlang.check_blocks import BlockReader
from mixlang.check_runs import check_eval, check_sweep, check_train
from mixlang.check_sources import check_mix, check_source
from mixlang.diagnostics import Diagnostic, Label, did_you_mean, error
from mixlang.program import CheckedProgram

BLOCK_KINDS = ("source", "mix", "train", "eval", "sweep")
KEYWORDS = BLOCK_KINDS + ("import", "take", "rest", "max_epochs", "metric", "gate", "base", "vary", "in",
                          "resources", "true", "false", "tokens", "samples")


@dataclass(frozen=True)
class CheckResult:
    program: CheckedProgram | None
    diagnostics: tuple[Diagnostic, ...]


def check(modules: Sequence[s.Module]) -> CheckResult:
    """Check a loaded program. `modules[0]` is the root file."""
    diagnostics: list[Diagnostic] = []
    blocks = _declarations(modules, diagnostics)
    reader = BlockReader(diagnostics)
    names = {kind: {b.name.name: b for b in blocks if b.kind.name == kind} for kind in BLOCK_KINDS}
    sources = tuple(filter(None, (check_source(b, reader) for b in names["source"].values())))
    mixes = tuple(filter(None, (check_mix(b, reader, names) for b in names["mix"].values())))
    trains = tuple(filter(None, (check_train(b, reader, names) for b in names["train"].values())))
    evals = tuple(filter(None, (check_eval(b, reader, names, sources) for b in names["eval"].values())))
    sweeps = tuple(filter(None, (check_sweep(b, reader, mixes, names) for b in names["sweep"].values())))
    if any(d.is_error for d in diagnostics):
        return CheckResult(None, tuple(diagnostics))
    root = modules[0].path if modules else ""
    return CheckResult(CheckedProgram(root, sources, mixes, trains, evals, sweeps), tuple(diagnostics))


def _declarations(modules: Sequence[s.Module], diagnostics: list[Diagnostic]) -> list[s.Block]:
    """Every block with a known kind and a unique name. Evals are keyed by the train they
    evaluate, so they share the train's name and have a namespace of their own."""
    seen: dict[tuple[bool, str], s.Block] = {}
    kept: list[s.Block] = []
    for block in (st for m in modules for st in m.statements if isinstance(st, s.Block)):
        kind = block.kind.name
        if kind not in BLOCK_KINDS:
            diagnostics.append(error("E105", f"unknown statement `{kind}`", block.kind.span,
                                     help=did_you_mean(kind, BLOCK_KINDS + ("import",))
                                     or "a file holds import, source, mix, train, eval and sweep statements"))
            continue
        if block.name.name in KEYWORDS:
            diagnostics.append(error("E108", f"`{block.name.name}` is a keyword; it cannot be a name",
                                     block.name.span, help="choose another name"))
        key = (kind == "eval", block.name.name)
        if key in seen:
            diagnostics.append(_duplicate(block, seen[key]))
            continue
        seen[key] = block
        kept.append(block)
    return kept


def _duplicate(block: s.Block, first: s.Block) -> Diagnostic:
    what = "an eval for train" if block.kind.name == "eval" else "the name"
    return error("E106", f"{what} `{block.name.name}` is defined twice", block.name.span,
                 labels=(Label(first.name.span, "first defined here"),) if first.name.span else (),
                 help="names are unique across a file and everything it imports")

