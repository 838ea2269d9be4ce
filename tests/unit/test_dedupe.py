"""Duplicate dropping per key: unit and property tests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.core.dedupe import drop_duplicates

WINDOW = 10_000


def run(seen, pairs, max_ids=100):
    return drop_duplicates(
        seen, [(eid, ts, eid) for eid, ts in pairs], window_ms=WINDOW, max_ids=max_ids
    )


def test_repeats_within_a_batch_and_across_batches_are_dropped():
    fresh, dups, seen = run(None, [("a", 1), ("b", 2), ("a", 1)])
    assert (fresh, dups) == (["a", "b"], 1)
    fresh, dups, seen = run(seen, [("b", 2), ("c", 3)])
    assert (fresh, dups) == (["c"], 1)
    assert set(seen) == {"a", "b", "c"}


def test_ids_older_than_the_window_are_forgotten():
    _, _, seen = run(None, [("old", 0), ("new", WINDOW + 1)])
    assert set(seen) == {"new"}


def test_the_cap_keeps_the_newest_ids():
    _, _, seen = run(None, [(f"e{i}", i) for i in range(10)], max_ids=3)
    assert set(seen) == {"e7", "e8", "e9"}


events = st.lists(
    st.tuples(st.sampled_from([f"e{i}" for i in range(30)]), st.integers(0, 5_000)),
    max_size=60,
)


@given(events, st.integers(1, 5))
def test_no_id_is_ever_let_through_twice_within_the_window(pairs, batches):
    """However the stream is cut into batches, each id passes once while remembered."""
    seen, passed = None, []
    size = max(1, len(pairs) // batches)
    for start in range(0, len(pairs), size):
        fresh, _, seen = run(seen, pairs[start : start + size])
        passed.extend(fresh)
    assert len(passed) == len(set(passed))
    assert set(passed) == {eid for eid, _ in pairs}


@given(events, st.integers(1, 20))
def test_memory_is_bounded(pairs, max_ids):
    _, _, seen = run(None, pairs, max_ids=max_ids)
    assert len(seen) <= max_ids
    if seen:
        assert max(seen.values()) - min(seen.values()) <= WINDOW


@given(events)
def test_fresh_plus_duplicates_account_for_every_input(pairs):
    fresh, dups, _ = run(None, pairs)
    assert len(fresh) + dups == len(pairs)
