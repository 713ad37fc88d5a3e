"""The plan: a checked program and its sources' record counts in, one `MixPlan` per mix out.

`expand` lists what gets planned: every mix, and every point of every sweep (a copy of the mix
with the varied take's share replaced; several `vary` lines in one sweep give their cartesian
product). `plan_mix` is pure integer math over counts that `count_sources` read from disk.
A mix counted `by tokens` needs token counts, which come from the compile step's token cache;
until a build has them, planning such a mix is an error that says so.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Callable, Mapping

from compiler.mixing import Allocation, TakeRequest, allocate
from compiler.sources import SourceCount, count_source
from mixlang.diagnostics import Diagnostic, MixError, error
from mixlang.program import CheckedProgram, MixSpec, SourceSpec, SweepSpec


@dataclass(frozen=True)
class PlanTarget:
    """One thing to plan: a mix as written, or one point of a sweep."""

    name: str
    mix: MixSpec
    sweep: str | None = None
    point: tuple[tuple[str, Fraction], ...] = ()  # (take, share) per vary


@dataclass(frozen=True)
class MixPlan:
    """A target's allocation. For a mix `by tokens` the allocation is in tokens, and
    `samples`/`tokens` give each take's whole samples and their tokens, from the token cache."""

    target: PlanTarget
    counts: tuple[SourceCount, ...]
    allocation: Allocation
    samples: tuple[int, ...] | None = None
    tokens: tuple[int, ...] | None = None


def percent(x: Fraction) -> str:
    """`3/4` -> `75%`; at most six significant digits."""
    return f"{float(x * 100):.6g}%"


def expand(program: CheckedProgram, only: str | None = None) -> tuple[PlanTarget, ...]:
    """Every mix, then every sweep point; `only` keeps the targets of one mix or sweep."""
    targets = [PlanTarget(m.name, m) for m in program.mixes]
    for sweep in program.sweeps:
        targets += sweep_points(program, sweep)
    if only is None:
        return tuple(targets)
    return tuple(t for t in targets if only in (t.mix.name, t.sweep))


def sweep_points(program: CheckedProgram, sweep: SweepSpec) -> list[PlanTarget]:
    points = []
    for values in itertools.product(*(vary.values for vary in sweep.varies)):
        mixes = {m.name: m for m in program.mixes}
        for vary, share in zip(sweep.varies, values):
            mix = mixes[vary.mix]
            takes = tuple(replace(t, share=share) if t.source == vary.take else t for t in mix.takes)
            mixes[vary.mix] = replace(mix, takes=takes)
        label = ",".join(f"{v.mix}.{v.take}={percent(x)}" for v, x in zip(sweep.varies, values))
        point = tuple((f"{v.mix}.{v.take}", x) for v, x in zip(sweep.varies, values))
        for name in dict.fromkeys(v.mix for v in sweep.varies):
            points.append(PlanTarget(f"{sweep.name}[{label}]", mixes[name], sweep.name, point))
    return points


def plan_mix(target: PlanTarget, counts: Mapping[str, SourceCount]) -> MixPlan:
    """Pure: the allocation of one target, given each source's count. Raises MixError."""
    mix = target.mix
    takes = [TakeRequest(t.source, counts[t.source].size, t.share, t.rest, t.max_epochs) for t in mix.takes]
    total = mix.total.amount if mix.total else None
    try:
        allocation = allocate(takes, total=total, temperature=mix.temperature)
    except MixError as e:
        raise MixError(*(replace(d, message=f"mix `{target.name}`: {d.message}", span=d.span or mix.span)
                         for d in e.diagnostics)) from None
    used = tuple(counts[t.source] for t in mix.takes)
    return MixPlan(target, used, allocation)


def count_sources(program: CheckedProgram, names: set[str],
                  counter: Callable[[SourceSpec], SourceCount] = count_source) -> dict[str, SourceCount]:
    """Read each named source's record count once. Raises MixError (with the source's span)."""
    counts: dict[str, SourceCount] = {}
    for name in sorted(names):
        spec = program.source(name)
        try:
            counts[name] = counter(spec)
        except MixError as e:
            raise MixError(*(_at_source(d, spec) for d in e.diagnostics)) from None
    return counts


def _at_source(d: Diagnostic, spec: SourceSpec) -> Diagnostic:
    message = d.message if f"`{spec.name}`" in d.message else f"source `{spec.name}`: {d.message}"
    return replace(d, message=message, span=d.span or spec.span)


def plan_tokens(program: CheckedProgram, target: PlanTarget) -> MixPlan:
    """A `by tokens` target, planned from the token cache exactly as compile selects it.
    Raises MixError E604 when a source has not been tokenized yet."""
    from compiler.cache import cache_key, content_sha256, open_cache
    from compiler.encode import load_tokenizer
    from compiler.select import select, source_pool
    from compiler.sources import resolve_files

    mix = target.mix
    setup = load_tokenizer(mix.tokenizer)
    pools = {}
    for take in mix.takes:
        spec = program.source(take.source)
        cache = open_cache(cache_key(spec, content_sha256(resolve_files(spec)), setup))
        if cache is None:
            raise MixError(error(
                "E604", f"mix `{target.name}` shares by tokens, and source `{spec.name}` has no token counts yet",
                mix.span, help="token counts come from the token cache: run `mixc compile` once, then plan"))
        pools[take.source] = source_pool(spec, cache, mix.seq_len)
    selection = select(mix, pools)
    counts = tuple(SourceCount(p.name, (), p.counts["raw"], p.counts["broken"], p.counts["duplicates"],
                               p.counts["held_out"], p.counts["limited"], p.size, True) for p in pools.values())
    samples = tuple(int((selection.sources == i).sum()) for i in range(len(mix.takes)))
    lengths = [pools[t.source].lengths for t in mix.takes]
    tokens = tuple(int(lengths[i][selection.records[selection.sources == i]].sum()) for i in range(len(mix.takes)))
    return MixPlan(target, counts, selection.allocation, samples, tokens)


def plan_program(program: CheckedProgram, only: str | None = None) -> tuple[list[MixPlan], list[Diagnostic]]:
    """Plans for every target (or those of `only`), and the diagnostics of those that failed."""
    targets = expand(program, only)
    needed = {t.source for target in targets if target.mix.by == "samples" for t in target.mix.takes}
    counts = count_sources(program, needed)
    plans, problems = [], []
    for target in targets:
        try:
            plans.append(plan_tokens(program, target) if target.mix.by == "tokens" else plan_mix(target, counts))
        except MixError as e:
            problems.extend(replace(d, span=d.span or target.mix.span) for d in e.diagnostics)
    return plans, problems
