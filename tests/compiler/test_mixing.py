"""Tests for compiler.mixing: hand-computed allocations for each rule, then properties."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compiler.mixing import (
    Allocation,
    TakeRequest,
    allocate,
    largest_total,
    resolve_shares,
    temperature_weights,
)
from mixlang.diagnostics import MixError

F = Fraction


def take(source: str, records: int, share: object = None, *, rest: bool = False,
         max_epochs: object = None) -> TakeRequest:
    return TakeRequest(
        source, records, None if share is None else F(share), rest,
        None if max_epochs is None else F(max_epochs),
    )


def counts(allocation: Allocation) -> dict[str, int]:
    return {t.source: t.samples for t in allocation.takes}


def code_of(info: pytest.ExceptionInfo) -> str:
    return info.value.diagnostics[0].code


# -- shares --------------------------------------------------------------------------------------


def test_explicit_share_and_rest_with_total() -> None:
    a = allocate([take("voc", 5000, "3/4"), take("general", 50000, rest=True)], total=1000)
    assert counts(a) == {"voc": 750, "general": 250}
    assert a.take("general").share_target == F(1, 4)
    assert a.take("general").share_asked is None
    assert a.take("voc").share == 0.75
    assert a.share("general") == 0.25


def test_rest_left_with_nothing_gets_zero() -> None:
    a = allocate([take("voc", 10, 1), take("general", 100, rest=True)], total=100)
    assert counts(a) == {"voc": 100, "general": 0}
    assert a.take("general").share_target == 0


def test_zero_share_take_gets_nothing_even_when_empty() -> None:
    a = allocate([take("a", 10, "1/2"), take("b", 10, "1/2"), take("z", 0, 0)], total=7)
    assert counts(a) == {"a": 4, "b": 3, "z": 0}


def test_temperature_one_is_proportional_to_size() -> None:
    a = allocate([take("a", 100), take("b", 300)], total=1000)
    assert counts(a) == {"a": 250, "b": 750}
    assert a.take("a").share_target == F(1, 4)


def test_unshared_takes_share_what_explicit_shares_leave() -> None:
    a = allocate([take("x", 10, "1/2"), take("a", 100), take("b", 300)], total=800)
    assert counts(a) == {"x": 400, "a": 100, "b": 300}


def test_temperature_two_weights_by_square_root() -> None:
    a = allocate([take("a", 100), take("b", 400)], total=300, temperature=F(2))
    assert counts(a) == {"a": 100, "b": 200}
    assert a.take("b").share_target == F(2, 3)


def test_huge_weights_do_not_overflow() -> None:
    shares = resolve_shares([take("a", 10**7), take("b", 10**7 // 2)], F(1, 100))
    assert shares[0] == 1 or shares[0] > F(999_999, 1_000_000)
    assert temperature_weights([0, 5], 1) == (F(0), F(5))


def test_explicit_shares_within_tolerance_are_normalised() -> None:
    third = F(3333333333, 10**10)
    a = allocate([take("a", 10, third), take("b", 10, third), take("c", 10, third)], total=3)
    assert counts(a) == {"a": 1, "b": 1, "c": 1}
    assert sum(t.share_target for t in a.takes) == 1


def test_unshared_takes_without_records_are_an_error() -> None:
    with pytest.raises(MixError) as info:
        allocate([take("voc", 100, "1/2"), take("b", 0), take("a", 0)], total=10)
    assert code_of(info) == "E601"
    assert "`a`, `b`" in str(info.value)
    assert "50%" in str(info.value)


def test_unshared_empty_take_with_nothing_left_is_fine() -> None:
    a = allocate([take("voc", 100, 1), take("b", 0)], total=10)
    assert counts(a) == {"voc": 10, "b": 0}


def test_empty_source_with_a_share_is_an_error() -> None:
    with pytest.raises(MixError) as info:
        allocate([take("x", 0, "3/10"), take("g", 100, rest=True)], total=10)
    assert code_of(info) == "E602"
    assert info.value.diagnostics[0].message == (
        "source `x` has no records but take `x` has share 30%")
    assert info.value.diagnostics[0].span is None
    assert info.value.diagnostics[0].help


def test_empty_rest_source_is_an_error() -> None:
    with pytest.raises(MixError) as info:
        allocate([take("x", 10, "3/10"), take("g", 0, rest=True)], total=None)
    assert code_of(info) == "E602"
    assert "70% (rest)" in str(info.value)


# -- sizing --------------------------------------------------------------------------------------


def test_without_total_the_scarcest_source_is_used_whole() -> None:
    a = allocate([take("voc", 1000, "3/4"), take("general", 10000, rest=True)], total=None)
    assert a.total == 1333
    assert counts(a) == {"voc": 1000, "general": 333}


def test_without_total_max_epochs_stretches_the_scarcest_source() -> None:
    a = allocate([take("voc", 1000, "1/2", max_epochs=3), take("g", 10**6, rest=True)], total=None)
    assert a.total == 6000
    assert counts(a) == {"voc": 3000, "g": 3000}
    assert a.take("voc").epochs == 3.0
    assert a.take("voc").capped


def test_without_total_zero_share_takes_do_not_limit() -> None:
    a = allocate([take("a", 10, 1), take("b", 1, 0)], total=None)
    assert counts(a) == {"a": 10, "b": 0}


def test_without_total_fractional_caps_stay_feasible() -> None:
    a = allocate([take("a", 1, "1/2", max_epochs="3/2"), take("b", 1, "1/2", max_epochs="3/2")],
                 total=None)
    assert a.total == 2
    assert counts(a) == {"a": 1, "b": 1}


def test_total_zero_gives_zero_everywhere() -> None:
    a = allocate([take("a", 10, "1/2"), take("b", 10, rest=True)], total=0)
    assert counts(a) == {"a": 0, "b": 0}
    assert a.take("a").share == 0.0


def test_negative_total_is_an_internal_error() -> None:
    with pytest.raises(ValueError):
        allocate([take("a", 10, 1)], total=-1)


# -- caps ----------------------------------------------------------------------------------------


def test_cap_sends_the_excess_to_the_rest() -> None:
    a = allocate([take("voc", 100, "1/2", max_epochs=2), take("general", 10000, rest=True)],
                 total=1000)
    assert counts(a) == {"voc": 200, "general": 800}
    assert a.take("voc").capped and not a.take("general").capped
    assert a.take("voc").epochs == 2.0


def test_excess_is_split_in_proportion_to_shares() -> None:
    a = allocate([take("a", 100, "1/2", max_epochs=1), take("b", 10**4, "3/10"),
                  take("c", 10**4, "1/5")], total=1000)
    assert counts(a) == {"a": 100, "b": 540, "c": 360}


def test_redistribution_repeats_until_every_cap_holds() -> None:
    a = allocate([take("a", 100, "1/2", max_epochs=1), take("b", 200, "3/10", max_epochs=2),
                  take("c", 10, "1/5")], total=1000)
    assert counts(a) == {"a": 100, "b": 400, "c": 500}
    assert a.take("c").exact == 500


def test_fractional_cap_is_floored() -> None:
    a = allocate([take("a", 3, "1/2", max_epochs="1/2"), take("b", 100, rest=True)], total=10)
    assert counts(a) == {"a": 1, "b": 9}


def test_infeasible_total_names_binding_source_and_largest_total() -> None:
    takes = [take("voc", 234_375, "3/4", max_epochs=1), take("general", 100_000, rest=True,
                                                             max_epochs=1)]
    with pytest.raises(MixError) as info:
        allocate(takes, total=1_000_000)
    d = info.value.diagnostics[0]
    assert d.code == "E603"
    assert d.message == ("mix cannot reach 1,000,000 samples: `voc` would need 3.20 epochs "
                         "but allows max_epochs 1")
    assert d.help == "the largest total that fits is 334,375 samples; lower `total` or raise " \
                     "`max_epochs`"
    assert largest_total(takes) == 334_375
    assert counts(allocate(takes, total=334_375)) == {"voc": 234_375, "general": 100_000}


def test_infeasible_ties_are_broken_by_name_and_unit_is_named() -> None:
    takes = [take("b", 10, "1/2", max_epochs=1), take("a", 10, "1/2", max_epochs=1)]
    with pytest.raises(MixError) as info:
        allocate(takes, total=40, unit="tokens")
    assert "`a` would need 2.00 epochs" in str(info.value)
    assert "20 tokens" in info.value.diagnostics[0].help


def test_largest_total_is_none_with_an_uncapped_take() -> None:
    assert largest_total([take("a", 10, "1/2", max_epochs=1), take("b", 5, rest=True)]) is None
    assert largest_total([take("a", 10, 1, max_epochs=2), take("b", 5, 0)]) == 20


# -- rounding ------------------------------------------------------------------------------------


def test_largest_remainder_ties_go_to_the_first_name() -> None:
    a = allocate([take("c", 10, "1/3"), take("b", 10, "1/3"), take("a", 10, "1/3")], total=5)
    assert counts(a) == {"a": 2, "b": 2, "c": 1}


def test_largest_remainder_prefers_larger_fractions() -> None:
    a = allocate([take("a", 10, "0.55"), take("b", 10, "0.45")], total=3)
    assert counts(a) == {"a": 2, "b": 1}
    assert a.take("a").exact == F("1.65")


# -- properties ----------------------------------------------------------------------------------


@st.composite
def mixes(draw: st.DrawFn) -> tuple[list[TakeRequest], int | None, Fraction | None]:
    """A valid mix: explicit shares summing to 1, or one `rest`, or some unshared takes."""
    n = draw(st.integers(1, 8))
    style = draw(st.sampled_from(["rest", "unshared", "explicit"]))
    cuts = [0] + sorted(draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n)))
    parts = [F(hi - lo, 1000) for lo, hi in zip(cuts, cuts[1:])]
    if style == "explicit":
        parts[-1] = 1 - sum(parts[:-1])
    unshared = [style == "unshared" and draw(st.booleans()) for _ in range(n)]
    unshared[-1] = unshared[-1] or style == "unshared"
    takes = []
    for i in range(n):
        rest = style == "rest" and i == 0
        share = None if rest or unshared[i] else parts[i]
        records = draw(st.integers(0, 10**7) | st.integers(0, 20))
        max_epochs = draw(st.none() | st.fractions(F(1, 4), F(5), max_denominator=8))
        takes.append(TakeRequest(f"s{i}", records, share, rest, max_epochs))
    total = draw(st.none() | st.integers(0, 10**6))
    temperature = draw(st.none() | st.fractions(F(1, 4), F(10), max_denominator=16))
    return takes, total, temperature


def try_allocate(takes: list[TakeRequest], total: int | None,
                 temperature: Fraction | None) -> Allocation | None:
    try:
        return allocate(takes, total=total, temperature=temperature)
    except MixError as e:
        code = e.diagnostics[0].code
        if code == "E603":
            fits = largest_total(takes, temperature)
            assert total is not None and fits is not None and total > fits
        return None


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(mixes())
def test_counts_sum_to_total_and_stay_near_exact(mix: tuple) -> None:
    takes, total, temperature = mix
    a = try_allocate(takes, total, temperature)
    assume(a is not None)
    assert total is None or a.total == total
    assert sum(t.samples for t in a.takes) == a.total
    assert sum(t.exact for t in a.takes) == a.total
    for t in a.takes:
        assert abs(t.samples - t.exact) < 1
        assert t.samples >= 0
        assert t.max_epochs is None or t.samples <= t.records * t.max_epochs
        assert t.share_target > 0 or t.samples == 0


@PROPERTY
@given(mixes())
def test_feasible_totals_never_raise_infeasible(mix: tuple) -> None:
    takes, total, temperature = mix
    try:
        fits = largest_total(takes, temperature)
        allocate(takes, total=total, temperature=temperature)
    except MixError as e:
        assert e.diagnostics[0].code != "E603" or (fits is not None and total > fits)


@PROPERTY
@given(mixes())
def test_without_binding_caps_exact_is_total_times_share(mix: tuple) -> None:
    takes, total, temperature = mix
    a = try_allocate(takes, total, temperature)
    assume(a is not None)
    caps = [t.cap for t in a.takes]
    assume(all(c is None or a.total * t.share_target <= c for t, c in zip(a.takes, caps)))
    for t in a.takes:
        assert t.exact == a.total * t.share_target


@PROPERTY
@given(mixes(), st.randoms(use_true_random=False))
def test_order_of_takes_does_not_matter(mix: tuple, rnd: random.Random) -> None:
    takes, total, temperature = mix
    shuffled = list(takes)
    rnd.shuffle(shuffled)
    a, b = try_allocate(takes, total, temperature), try_allocate(shuffled, total, temperature)
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert a.total == b.total
        assert {t.source: t for t in a.takes} == {t.source: t for t in b.takes}
        assert [t.source for t in b.takes] == [t.source for t in shuffled]


@PROPERTY
@given(mixes())
def test_same_input_same_output(mix: tuple) -> None:
    takes, total, temperature = mix
    assert try_allocate(takes, total, temperature) == try_allocate(takes, total, temperature)


@PROPERTY
@given(st.lists(st.integers(0, 10**7), min_size=1, max_size=8), st.integers(0, 10**6))
def test_temperature_one_is_proportional(sizes: list[int], total: int) -> None:
    assume(sum(sizes) > 0)
    a = allocate([take(f"s{i}", s) for i, s in enumerate(sizes)], total=total)
    for t in a.takes:
        assert t.exact == F(total * t.records, sum(sizes))
        assert abs(t.samples - t.exact) < 1


@PROPERTY
@given(st.lists(st.integers(1, 10**7), min_size=1, max_size=8))
def test_large_temperature_is_near_uniform(sizes: list[int]) -> None:
    a = allocate([take(f"s{i}", s) for i, s in enumerate(sizes)], total=10**6, temperature=1e6)
    for t in a.takes:
        assert math.isclose(t.share_target, F(1, len(sizes)), rel_tol=1e-4)
        assert abs(t.samples - 10**6 / len(sizes)) <= 10**6 * 1e-4 + 1
