"""Typed readings of syntax values, for the checker.

Each reader takes a syntax value (and the key it was given for) and returns a Python value, or
raises `BadValue` with a message and help saying what was expected and what was found. The
checker turns `BadValue` into a diagnostic at the value's span. Pure: no I/O.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Callable

from mixlang import syntax as s
from mixlang.diagnostics import did_you_mean
from mixlang.program import SizeSpec

Reader = Callable[[s.Value, str], object]

_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_MEMORY = re.compile(r"^\d+[KMGT]?$")


class BadValue(Exception):
    def __init__(self, message: str, help: str | None = None) -> None:
        super().__init__(message)
        self.message, self.help = message, help


def describe(v: s.Value) -> str:
    if isinstance(v, s.Num):
        return f"the number `{v.text}`"
    if isinstance(v, s.Word):
        return f"the name `{v.name}`"
    names = {s.Str: "a string", s.Size: "a size", s.Bool: "a boolean", s.ListVal: "a list",
             s.Call: "a call"}
    return names[type(v)]


def _expect(v: s.Value, key: str, what: str, kind: type) -> None:
    if not isinstance(v, kind):
        raise BadValue(f"`{key}` expects {what}, found {describe(v)}")


def string(v: s.Value, key: str) -> str:
    _expect(v, key, "a string", s.Str)
    return v.value  # type: ignore[union-attr]


def number(v: s.Value, key: str) -> Fraction:
    _expect(v, key, "a number", s.Num)
    return v.value  # type: ignore[union-attr]


def positive(v: s.Value, key: str) -> Fraction:
    value = number(v, key)
    if value <= 0:
        raise BadValue(f"`{key}` must be above 0, found `{v.text}`")  # type: ignore[union-attr]
    return value


def integer(v: s.Value, key: str) -> int:
    _expect(v, key, "a whole number", s.Num)
    value = v.value  # type: ignore[union-attr]
    if value.denominator != 1 or v.is_percent:  # type: ignore[union-attr]
        raise BadValue(f"`{key}` expects a whole number, found `{v.text}`")  # type: ignore[union-attr]
    return int(value)


def positive_integer(v: s.Value, key: str) -> int:
    value = integer(v, key)
    if value <= 0:
        raise BadValue(f"`{key}` must be above 0, found `{v.text}`")  # type: ignore[union-attr]
    return value


def natural(v: s.Value, key: str) -> int:
    value = integer(v, key)
    if value < 0:
        raise BadValue(f"`{key}` must not be negative, found `{v.text}`")  # type: ignore[union-attr]
    return value


def fraction(v: s.Value, key: str) -> Fraction:
    """A share or fraction in [0, 1]: `75%` or `0.75`."""
    value = number(v, key)
    if 0 <= value <= 1:
        return value
    hint = f"write `{v.text}%` for a percentage" if 1 < value <= 100 and not v.is_percent else None  # type: ignore[union-attr]
    raise BadValue(f"`{key}` must be between 0% and 100%, found `{v.text}`", hint)  # type: ignore[union-attr]


def boolean(v: s.Value, key: str) -> bool:
    _expect(v, key, "`true` or `false`", s.Bool)
    return v.value  # type: ignore[union-attr]


def name(v: s.Value, key: str) -> str:
    _expect(v, key, "a name", s.Word)
    return v.name  # type: ignore[union-attr]


def choice(*options: str) -> Reader:
    def read(v: s.Value, key: str) -> str:
        listed = ", ".join(f"`{o}`" for o in options)
        if not isinstance(v, s.Word):
            raise BadValue(f"`{key}` expects one of {listed}, found {describe(v)}")
        if v.name not in options:
            raise BadValue(f"unknown `{key}` value `{v.name}`; expected one of {listed}",
                           did_you_mean(v.name, options))
        return v.name
    return read


def size(*units: str) -> Reader:
    def read(v: s.Value, key: str) -> SizeSpec:
        if isinstance(v, s.Num):
            raise BadValue(f"`{key}` needs a unit", f"write `{v.text} {units[0]}`")
        _expect(v, key, "a size such as `40M tokens` or `100K samples`", s.Size)
        amount = v.amount.value  # type: ignore[union-attr]
        if amount.denominator != 1 or amount < 0:
            raise BadValue(f"`{key}` must be a whole, non-negative amount, found `{v.amount.text}`")  # type: ignore[union-attr]
        if v.unit not in units:  # type: ignore[union-attr]
            raise BadValue(f"`{key}` is counted in {' or '.join(units)}, not {v.unit}")  # type: ignore[union-attr]
        return SizeSpec(int(amount), v.unit)  # type: ignore[union-attr]
    return read


def share_list(v: s.Value, key: str) -> tuple[Fraction, ...]:
    _expect(v, key, "a list of shares such as `[100%, 75%, 50%]`", s.ListVal)
    if not v.items:  # type: ignore[union-attr]
        raise BadValue(f"`{key}` needs at least one value")
    return tuple(fraction(item, key) for item in v.items)  # type: ignore[union-attr]


def slurm_time(v: s.Value, key: str) -> str | int:
    if isinstance(v, s.Num):
        return positive_integer(v, key)
    text = string(v, key)
    if not _TIME.match(text):
        raise BadValue(f"`{key}` is not a Slurm time: `{text}`",
                       'write minutes, "HH:MM:SS" or "D-HH:MM:SS"')
    return text


def memory(v: s.Value, key: str) -> str:
    text = string(v, key)
    if not _MEMORY.match(text):
        raise BadValue(f"`{key}` is not a Slurm memory size: `{text}`", 'write e.g. "64G" or "512000M"')
    return text


# Slurm parameters a `resources` block may set, by their submitit (`slurm_*`) names.
RESOURCES: dict[str, Reader] = {
    "nodes": positive_integer, "gpus_per_node": natural, "cpus_per_task": positive_integer,
    "tasks_per_node": positive_integer, "mem": memory, "mem_per_cpu": memory,
    "mem_per_gpu": memory, "time": slurm_time, "partition": string, "account": string,
    "qos": string, "constraint": string, "reservation": string, "exclusive": boolean,
    "comment": string, "gres": string,
}
