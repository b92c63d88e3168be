"""Dividing a key's pool in proportion to weights (the shards' backlogs): every pool slot
to exactly one holder, each holder at least one, counts as close to proportional as whole
slots allow, and each holder's slots spread over the cycle rather than bunched."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsync.coordination.slots import SEATS, apportion, split_pool, spread

names = st.lists(
    st.text("abcdefgh/0123", min_size=1, max_size=6), min_size=1, max_size=12, unique=True
)
weight = st.one_of(
    st.floats(0, 1e9), st.just(0.0), st.just(math.nan), st.just(math.inf), st.just(-3.0)
)


@settings(max_examples=300, deadline=None)
@given(holders=names, data=st.data())
def test_apportion_gives_each_one_and_the_rest_by_weight(
    holders: list[str], data: st.DataObject
) -> None:
    weights = {h: data.draw(weight) for h in holders}
    total = data.draw(st.integers(len(holders), 5000))
    counts = apportion(total, weights)
    assert sum(counts.values()) == total and set(counts) == set(holders)
    assert min(counts.values()) >= 1
    clean = {h: w if math.isfinite(w) and w > 0 else 0.0 for h, w in weights.items()}
    if sum(clean.values()) <= 0:
        assert max(counts.values()) - min(counts.values()) <= 1  # no usable weight: evenly
        return
    spare = total - len(holders)
    for h in holders:  # largest remainder: within one of its exact quota
        quota = spare * clean[h] / sum(clean.values())
        assert abs(counts[h] - 1 - quota) < 1


@settings(max_examples=300, deadline=None)
@given(holders=names, data=st.data())
def test_spread_places_each_holders_turns_near_even_spacing(
    holders: list[str], data: st.DataObject
) -> None:
    counts = {h: data.draw(st.integers(1, 200)) for h in holders}
    total = sum(counts.values())
    order = spread(counts, total)
    assert len(order) == total
    for h, count in counts.items():
        positions = [i for i, name in enumerate(order) if name == h]
        assert len(positions) == count
        for k, at in enumerate(positions):
            assert abs(at - (k + 0.5) * total / count) <= len(holders), (h, k, at)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([1.0, 7.5, 25.0, 60.0, 150.0, 1000.0]),
    holders=names,
    seats=st.sets(st.integers(0, SEATS - 1), min_size=1),
    data=st.data(),
)
def test_a_weighted_split_hands_every_pool_slot_to_exactly_one_holder(
    rate: float, holders: list[str], seats: set[int], data: st.DataObject
) -> None:
    weights = {h: data.draw(st.floats(0, 1000)) for h in holders}
    cycle, residues = split_pool(rate, holders, seats, weights)
    handed = [r for owned in residues.values() for r in owned]
    assert sorted(handed) == [r for r in range(cycle) if r % SEATS in seats]
    assert all(owned for owned in residues.values())
    assert {h: len(owned) for h, owned in residues.items()} == apportion(len(handed), weights)


def test_a_split_by_backlog_gives_the_bigger_backlog_more() -> None:
    _, residues = split_pool(25.0, ["a", "b"], range(8, 16), {"a": 300.0, "b": 100.0})
    assert (len(residues["a"]), len(residues["b"])) == (150, 50)
    # b's 50 slots are spread over the cycle: never more than 5 of a's between two of b's
    gaps = [y - x for x, y in zip(residues["b"], residues["b"][1:], strict=False)]
    assert max(gaps) <= 5 * SEATS // 2
