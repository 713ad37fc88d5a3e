"""Mixing: how many samples each take of a mix gets.

Takes the takes of one mix as `TakeRequest`s (each source's size in the mix's unit, its share,
`rest`, `max_epochs`), an optional `total` and an optional `temperature`; produces an
`Allocation`: one integer count per take, summing to the total exactly. Pure: no I/O.

The steps follow MIXLANG.md (`mix`, "Sizing", "Exactness"):

1. resolve shares: explicit shares are kept, `rest` takes what they leave, unshared takes share
   it with weights `size ** (1/T)`;
2. size: without `total`, the largest total that meets every share (the scarcest source used
   whole, or up to its `max_epochs`);
3. cap: a take whose target needs more than `max_epochs` is fixed at its cap and the excess goes
   to the other takes in proportion to their shares, repeatedly, as in UniMax;
4. round: largest remainder, ties broken by source name, so the order of the takes never matters.

Temperature weights are computed as floats, one take at a time, then turned into exact
Fractions; every step after that is exact. User mistakes raise `MixError` with E6xx codes and no
span (the caller attaches one); internal misuse raises ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

from mixlang.diagnostics import MixError, error

ZERO = Fraction(0)
ONE = Fraction(1)
SHARE_TOLERANCE = Fraction(1, 10**9)


@dataclass(frozen=True)
class TakeRequest:
    """One `take` as the allocator needs it: the source's size (in the mix's unit) and its share."""

    source: str
    records: int
    share: Fraction | None
    rest: bool = False
    max_epochs: Fraction | None = None

    @property
    def unshared(self) -> bool:
        return self.share is None and not self.rest


@dataclass(frozen=True)
class TakeAllocation:
    """What one take gets: the share asked, the share resolved, the exact and integer counts."""

    source: str
    records: int
    share_asked: Fraction | None
    share_target: Fraction
    exact: Fraction
    samples: int
    max_epochs: Fraction | None
    share: float

    @property
    def epochs(self) -> float:
        return self.samples / self.records if self.records else 0.0

    @property
    def cap(self) -> int | None:
        """The most samples `max_epochs` allows, or None when unlimited."""
        return _cap(self.records, self.max_epochs)

    @property
    def capped(self) -> bool:
        """True when `max_epochs` binds: the take got all its cap allows."""
        cap = self.cap
        return cap is not None and self.share_target > 0 and self.exact >= cap


@dataclass(frozen=True)
class Allocation:
    """The integer count of every take of a mix, in the order the takes were given."""

    total: int
    takes: tuple[TakeAllocation, ...]

    def take(self, source: str) -> TakeAllocation:
        for take in self.takes:
            if take.source == source:
                return take
        raise KeyError(source)

    def share(self, source: str) -> float:
        return self.take(source).share


def allocate(
    takes: Sequence[TakeRequest],
    *,
    total: int | None,
    temperature: Fraction | float | None = None,
    unit: str = "samples",
) -> Allocation:
    """Allocate `total` (or the natural total, when None) among `takes`. `unit` names the
    mix's unit in messages."""
    _validate(takes, total, temperature)
    shares = resolve_shares(takes, temperature)
    _check_not_empty(takes, shares)
    n = natural_total(takes, shares) if total is None else total
    exacts = _redistribute(takes, shares, n, unit)
    counts = _round(takes, exacts, n)
    return Allocation(n, tuple(
        _take_allocation(t, p, x, c, n) for t, p, x, c in zip(takes, shares, exacts, counts)
    ))


def largest_total(
    takes: Sequence[TakeRequest], temperature: Fraction | float | None = None
) -> int | None:
    """The largest total the caps allow: the sum of the caps of the takes with a share above 0,
    or None when one of them is uncapped."""
    _validate(takes, 0, temperature)
    shares = resolve_shares(takes, temperature)
    caps = [_cap(t.records, t.max_epochs) for t, p in zip(takes, shares) if p > 0]
    return None if any(c is None for c in caps) else sum(c for c in caps if c is not None)


# -- shares --------------------------------------------------------------------------------------


def resolve_shares(
    takes: Sequence[TakeRequest], temperature: Fraction | float | None = None
) -> tuple[Fraction, ...]:
    """The share of every take, exact, summing to 1: explicit shares as written, `rest` what
    they leave, unshared takes the same leftover by temperature weight."""
    explicit = sum((t.share for t in takes if t.share is not None), ZERO)
    if explicit > ONE + SHARE_TOLERANCE:
        raise ValueError(f"explicit shares sum to {float(explicit)}, above 1")
    left = max(ZERO, ONE - explicit)
    shares = [t.share if t.share is not None else left if t.rest else ZERO for t in takes]
    unshared = [i for i, t in enumerate(takes) if t.unshared]
    if unshared:
        for i, part in zip(unshared, _split(left, [takes[i] for i in unshared], temperature)):
            shares[i] = part
    elif not any(t.rest for t in takes) and abs(explicit - ONE) > SHARE_TOLERANCE:
        raise ValueError(f"explicit shares sum to {float(explicit)}, not 1")
    return _normalised(shares)


def _split(
    left: Fraction, takes: Sequence[TakeRequest], temperature: Fraction | float | None
) -> list[Fraction]:
    """Split `left` among unshared takes by the weight `size ** (1/T)`."""
    weights = temperature_weights([t.records for t in takes], temperature)
    weight = sum(weights, ZERO)
    if weight == 0:
        if left > 0:
            raise _no_records_to_share(takes, left)
        return [ZERO for _ in takes]
    return [left * w / weight for w in weights]


def temperature_weights(
    sizes: Sequence[int], temperature: Fraction | float | None = None
) -> tuple[Fraction, ...]:
    """`size ** (1/T)` per size, computed as a float one size at a time, returned exact. An
    empty source weighs 0. When a weight overflows, every size is first divided by the largest
    (the same normalised weights, still independent of order)."""
    exponent = float(ONE / Fraction(1 if temperature is None else temperature))
    weights = [_power(float(s), exponent) if s else 0.0 for s in sizes]
    if any(math.isinf(w) for w in weights):
        top = max(sizes)
        weights = [(s / top) ** exponent if s else 0.0 for s in sizes]
    return tuple(Fraction(w) for w in weights)


def _power(base: float, exponent: float) -> float:
    try:
        return base**exponent
    except OverflowError:
        return math.inf


def _normalised(shares: Sequence[Fraction]) -> tuple[Fraction, ...]:
    """Shares scaled to sum to exactly 1 (explicit shares may miss it by the checker's 1e-9)."""
    whole = sum(shares, ZERO)
    if whole <= 0:
        raise ValueError("shares sum to 0")
    return tuple(shares) if whole == ONE else tuple(p / whole for p in shares)


# -- sizing and caps -----------------------------------------------------------------------------


def natural_total(takes: Sequence[TakeRequest], shares: Sequence[Fraction]) -> int:
    """The total when the mix names none: the floor of the minimum, over takes with a share
    above 0, of `size * E / share` (E: max_epochs, or 1), the size times E floored to whole
    samples so the caps are met exactly."""
    limits = [_cap(t.records, t.max_epochs or ONE) / p for t, p in zip(takes, shares) if p > 0]
    return math.floor(min(limits))


def _cap(records: int, max_epochs: Fraction | None) -> int | None:
    return None if max_epochs is None else math.floor(records * Fraction(max_epochs))


def _redistribute(
    takes: Sequence[TakeRequest], shares: Sequence[Fraction], n: int, unit: str
) -> tuple[Fraction, ...]:
    """Exact counts: targets in proportion to the shares; every take whose target exceeds its
    cap is fixed at the cap and the rest re-split among the free takes, until every cap holds."""
    caps = [_cap(t.records, t.max_epochs) for t in takes]
    exacts = [ZERO for _ in takes]
    free = [i for i, p in enumerate(shares) if p > 0]
    remaining = Fraction(n)
    while free:
        weight = sum((shares[i] for i in free), ZERO)
        targets = {i: remaining * shares[i] / weight for i in free}
        over = [i for i in free if caps[i] is not None and targets[i] > caps[i]]
        if not over:
            for i in free:
                exacts[i] = targets[i]
            return tuple(exacts)
        for i in over:
            exacts[i] = Fraction(caps[i])
            remaining -= caps[i]
        free = [i for i in free if i not in over]
    raise _infeasible(takes, shares, n, unit)


# -- rounding ------------------------------------------------------------------------------------


def _round(takes: Sequence[TakeRequest], exacts: Sequence[Fraction], n: int) -> tuple[int, ...]:
    """Largest-remainder rounding: floor every count, then give the units left to the takes
    with the largest fractional parts, ties broken by source name."""
    counts = [math.floor(x) for x in exacts]
    left = n - sum(counts)
    order = sorted(range(len(takes)), key=lambda i: (-(exacts[i] - counts[i]), takes[i].source))
    for i in order[:left]:
        counts[i] += 1
    assert sum(counts) == n, "largest remainder must sum to the total"
    for t, c in zip(takes, counts):
        cap = _cap(t.records, t.max_epochs)
        assert cap is None or c <= cap, f"take `{t.source}` exceeds its cap"
    return tuple(counts)


def _take_allocation(
    take: TakeRequest, share: Fraction, exact: Fraction, count: int, total: int
) -> TakeAllocation:
    return TakeAllocation(
        source=take.source,
        records=take.records,
        share_asked=take.share,
        share_target=share,
        exact=exact,
        samples=count,
        max_epochs=take.max_epochs,
        share=count / total if total else 0.0,
    )


# -- checks and errors ---------------------------------------------------------------------------


def _validate(
    takes: Sequence[TakeRequest], total: int | None, temperature: Fraction | float | None
) -> None:
    """Internal preconditions the checker guarantees; a breach is a bug, not a user mistake."""
    if not takes:
        raise ValueError("a mix needs at least one take")
    if total is not None and total < 0:
        raise ValueError(f"total must not be negative, got {total}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be above 0, got {temperature}")
    if len({t.source for t in takes}) != len(takes):
        raise ValueError("take sources must be unique within a mix")
    if sum(t.rest for t in takes) > 1:
        raise ValueError("a mix has at most one `rest` take")
    for t in takes:
        _validate_take(t)


def _validate_take(take: TakeRequest) -> None:
    if take.records < 0:
        raise ValueError(f"take `{take.source}` has negative size {take.records}")
    if take.share is not None and (take.rest or take.share < 0):
        raise ValueError(f"take `{take.source}` has an invalid share {take.share}")
    if take.max_epochs is not None and take.max_epochs < 0:
        raise ValueError(f"take `{take.source}` has negative max_epochs {take.max_epochs}")


def _check_not_empty(takes: Sequence[TakeRequest], shares: Sequence[Fraction]) -> None:
    """E602: a take with a share above 0 whose source has no records."""
    for t, p in zip(takes, shares):
        if p > 0 and t.records == 0:
            how = " (rest)" if t.rest else "" if t.share is not None else " (by temperature)"
            raise MixError(error(
                "E602",
                f"source `{t.source}` has no records but take `{t.source}` has share "
                f"{_percent(p)}{how}",
                help=f"check the path, `holdout`, `limit` and `dedup` of source `{t.source}`, "
                f"or remove the take",
            ))


def _no_records_to_share(takes: Sequence[TakeRequest], left: Fraction) -> MixError:
    names = ", ".join(f"`{t.source}`" for t in sorted(takes, key=lambda t: t.source))
    return MixError(error(
        "E601",
        f"takes without a share ({names}) have no records to fill the {_percent(left)} "
        f"the explicit shares leave",
        help="give those takes explicit shares that sum to 100%, add data to their sources, "
        "or add a take that has records",
    ))


def _infeasible(
    takes: Sequence[TakeRequest], shares: Sequence[Fraction], n: int, unit: str
) -> MixError:
    """E603: every take with a share is capped and the caps sum to less than the total."""
    need = [(t, n * p / t.records) for t, p in zip(takes, shares) if p > 0]
    binding, epochs = min(need, key=lambda te: (-_over_cap(te[1], te[0].max_epochs), te[0].source))
    fits = _sum_caps(takes, shares)
    return MixError(error(
        "E603",
        f"mix cannot reach {n:,} {unit}: `{binding.source}` would need {float(epochs):.2f} "
        f"epochs but allows max_epochs {_number(binding.max_epochs)}",
        help=f"the largest total that fits is {fits:,} {unit}; lower `total` or raise "
        f"`max_epochs`",
    ))


def _over_cap(epochs: Fraction, max_epochs: Fraction | None) -> Fraction | float:
    """How far `epochs` exceeds `max_epochs`, as a ratio (infinite for a cap of 0 epochs)."""
    if max_epochs is None:
        return 0.0
    return epochs / max_epochs if max_epochs else math.inf


def _sum_caps(takes: Sequence[TakeRequest], shares: Sequence[Fraction]) -> int:
    return sum(_cap(t.records, t.max_epochs) or 0 for t, p in zip(takes, shares) if p > 0)


def _percent(share: Fraction) -> str:
    return f"{float(share) * 100:.4g}%"


def _number(value: Fraction | None) -> str:
    if value is None:
        return "unlimited"
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"
