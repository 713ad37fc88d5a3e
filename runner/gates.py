"""Gates: an eval's metrics in, a verdict per gate out.

Takes `metrics.json` (the base model's and the candidate's value of every metric, written by
the generated `eval.py`) and the eval's gates; produces `GateVerdict`s: metric, base value,
candidate value, threshold (a number, or `base`, `base + x`, `base - x`, `base * x`), and
whether the candidate passes. A gate on a metric the eval did not produce fails, and says so.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Sequence

COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
EXIT_GATE_FAILED = 3


@dataclass(frozen=True)
class GateVerdict:
    metric: str
    comparator: str
    rule: str  # as written: `0.5`, `base`, `base - 0.02`
    base: float | None
    candidate: float | None
    threshold: float | None
    passed: bool
    reason: str = ""


def rule_text(gate: dict) -> str:
    if not gate["uses_base"]:
        return f"{gate['value']:g}"
    return "base" if gate["base_op"] is None else f"base {gate['base_op']} {gate['value']:g}"


def threshold(gate: dict, base: float | None) -> float | None:
    if not gate["uses_base"]:
        return float(gate["value"])
    if base is None:
        return None
    x = float(gate["value"] or 0.0)
    return {None: base, "+": base + x, "-": base - x, "*": base * x}[gate["base_op"]]


def judge(gates: Sequence[dict], metrics: dict) -> list[GateVerdict]:
    verdicts = []
    for gate in gates:
        name = gate["metric"]
        base, candidate = metrics.get("base", {}).get(name), metrics.get("candidate", {}).get(name)
        limit = threshold(gate, base)
        if candidate is None or limit is None:
            verdicts.append(GateVerdict(name, gate["comparator"], rule_text(gate), base, candidate, limit, False,
                                        f"metric `{name}` is missing from metrics.json"))
            continue
        passed = COMPARE[gate["comparator"]](float(candidate), limit)
        verdicts.append(GateVerdict(name, gate["comparator"], rule_text(gate), base, candidate, limit, passed))
    return verdicts


def verdict_json(verdicts: Sequence[GateVerdict]) -> dict:
    return {"passed": all(v.passed for v in verdicts), "gates": [asdict(v) for v in verdicts]}
