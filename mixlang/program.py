"""The checked program: typed specs the checker produces from the AST.

Takes nothing in itself; `mixlang.check` builds these values from the syntax tree. Everything
later (plan, compile, runner) reads only these types, never the syntax tree. Every spec keeps
the span of the statement it came from, so a later stage can still point at the source text.
Paths are resolved against the `.mix` file that names them (absolute strings); hub names stay
as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal, Union

from mixlang.syntax import Span

Unit = Literal["samples", "tokens"]


@dataclass(frozen=True)
class ChatFormat:
    """`chat(messages = FIELD)`: loss on assistant turns only."""

    messages: str = "messages"


@dataclass(frozen=True)
class PromptFormat:
    """`prompt(prompt = TEMPLATE, response = TEMPLATE)`: Jinja templates; loss on the response."""

    prompt: str
    response: str


@dataclass(frozen=True)
class TextFormat:
    """`text(field = FIELD)`: loss on every token."""

    field: str = "text"


FormatSpec = Union[ChatFormat, PromptFormat, TextFormat]


@dataclass(frozen=True)
class SourceSpec:
    """A `source` block. `path` is absolute (or `hf:ORG/NAME`, kept as written)."""

    name: str
    path: str
    format: FormatSpec
    split: str | None = None
    dedup: bool = False
    holdout: Fraction = Fraction(0)
    limit: int | None = None
    on_error: Literal["fail", "skip"] = "fail"
    overlong: Literal["drop", "truncate"] = "drop"
    seed: int = 0
    span: Span | None = field(default=None, compare=False)

    @property
    def is_hub(self) -> bool:
        return self.path.startswith("hf:")


@dataclass(frozen=True)
class SizeSpec:
    """An amount of data: `40M tokens`, `100K samples`."""

    amount: int
    unit: Unit


@dataclass(frozen=True)
class TakeSpec:
    """`take SOURCE [SHARE | rest] [max_epochs N]`. `share` is None for `rest` and unshared takes."""

    source: str
    share: Fraction | None = None
    rest: bool = False
    max_epochs: Fraction | None = None
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class MixSpec:
    """A `mix` block. `tokenizer` is an absolute directory when local, else a hub name."""

    name: str
    takes: tuple[TakeSpec, ...]
    tokenizer: str
    seq_len: int
    packing: bool = False
    seed: int = 0
    total: SizeSpec | None = None
    by: Unit = "samples"
    temperature: Fraction | None = None
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ResourcesSpec:
    """A `resources` block: Slurm parameters by their submitit names (`gpus_per_node`, `mem`...)."""

    values: tuple[tuple[str, int | str | bool], ...] = ()

    def get(self, key: str, default: int | str | bool | None = None) -> int | str | bool | None:
        return dict(self.values).get(key, default)


@dataclass(frozen=True)
class TrainSpec:
    """A `train` block. `data` names a mix; `model` is an absolute directory or a hub name."""

    name: str
    data: str
    model: str
    epochs: Fraction = Fraction(1)
    lr: Fraction = Fraction(1, 100_000)
    batch: int = 8
    micro_batch: int = 1
    warmup: Fraction = Fraction(0)
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    resources: ResourcesSpec = ResourcesSpec()
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class MetricSpec:
    """`metric NAME = KIND(args)`. `args` are the call's keyword arguments, typed by the checker
    (strings, numbers as Fraction, bare names as str); `data` paths are absolute."""

    name: str
    kind: Literal["classify", "choice", "loss"]
    args: tuple[tuple[str, object], ...]
    span: Span | None = field(default=None, compare=False)

    def arg(self, key: str, default: object = None) -> object:
        return dict(self.args).get(key, default)


Comparator = Literal[">=", ">", "<=", "<"]


@dataclass(frozen=True)
class GateSpec:
    """`gate METRIC CMP RHS`: RHS is `value`, `base`, or `base OP value` (OP in + - *)."""

    metric: str
    comparator: Comparator
    value: Fraction | None
    base_op: Literal["+", "-", "*"] | None = None
    uses_base: bool = False
    span: Span | None = field(default=None, compare=False)

    def threshold(self, base: float | None) -> float:
        """The number the metric is compared with, given the base model's value of the metric."""
        if not self.uses_base:
            return float(self.value or 0)
        if base is None:
            raise ValueError(f"gate on `{self.metric}` needs the base model's value")
        x = float(self.value) if self.value is not None else 0.0
        return {None: base, "+": base + x, "-": base - x, "*": base * x}[self.base_op]


@dataclass(frozen=True)
class EvalSpec:
    """An `eval` block: named after the `train` whose checkpoint (and base model) it evaluates."""

    name: str
    metrics: tuple[MetricSpec, ...]
    gates: tuple[GateSpec, ...]
    resources: ResourcesSpec = ResourcesSpec()
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class VarySpec:
    """`vary MIX.TAKE in [shares]`."""

    mix: str
    take: str
    values: tuple[Fraction, ...]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    varies: tuple[VarySpec, ...]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CheckedProgram:
    """A program that passed the checker: every name resolves, every value has its type."""

    path: str
    sources: tuple[SourceSpec, ...] = ()
    mixes: tuple[MixSpec, ...] = ()
    trains: tuple[TrainSpec, ...] = ()
    evals: tuple[EvalSpec, ...] = ()
    sweeps: tuple[SweepSpec, ...] = ()

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.sources if s.name == name)

    def mix(self, name: str) -> MixSpec:
        return next(m for m in self.mixes if m.name == name)
