"""The journey core: semantics, boundaries, and order-insensitivity (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.customer import add_events, advance, merge_states, new_state
from streams.core.eventtime import Watermark
from tests.support.journeys import (
    CONFIG,
    DAY,
    FAR_FUTURE,
    LATENESS,
    H,
    ev,
    histories,
    shuffled_within_lateness,
    through_json,
)


def sink(table, updates):
    """What ClickHouse keeps: the highest version of each journey (ReplacingMergeTree)."""
    for row in updates:
        old = table.get(row["journey_id"])
        if old is None or row["version"] > old["version"]:
            table[row["journey_id"]] = row
    return table


def content(table):
    """Live journeys without bookkeeping columns; superseded rows must point at a live one."""
    skip = {"updated_ms", "customer_key", "version"}
    live = {jid: row for jid, row in table.items() if row["status"] != "superseded"}
    for row in table.values():
        hops = 0
        while row["status"] == "superseded":  # a chain of successors ends at a live journey
            row, hops = table[row["superseded_by"]], hops + 1
            assert hops < len(table)
    return {jid: {k: v for k, v in row.items() if k not in skip} for jid, row in live.items()}


def replay(arrivals, batch_size, final_watermark=FAR_FUTURE, key="c"):
    """Feed events in arrival order, in batches, the way the journey agent does."""
    state, table, late = new_state(), {}, []
    mark = Watermark(LATENESS, idle_timeout_ms=60_000)
    for start in range(0, len(arrivals), batch_size):
        fresh = []
        for event in arrivals[start : start + batch_size]:
            (fresh if mark.observe(event[0], wall_ms=0) else late).append(event)
        out = advance(CONFIG, add_events(state, fresh), key, mark.value)
        state = out.state
        sink(table, out.updates)
    out = advance(CONFIG, state, key, final_watermark)
    return content(sink(table, out.updates)), out.state, late


def one(table):
    assert len(table) == 1, table
    return next(iter(table.values()))


def test_a_purchase_journey_walks_its_stages_and_completes():
    events = [
        ev(0, "a", "ad_click", "ads"),
        ev(H, "b", "site_visit"),
        ev(2 * H, "c", "add_to_cart"),
        ev(3 * H, "d", "purchase"),
        ev(30 * H, "e", "delivery", "delivery"),
    ]
    table, _, _ = replay(events, batch_size=100, final_watermark=31 * H)
    row = one(table)
    assert (row["journey"], row["status"], row["stage"]) == ("purchase", "completed", "delivery")
    assert row["path"] == ["ad_click", "site_visit", "add_to_cart", "purchase", "delivery"]
    assert row["stages_reached"] == [
        "awareness",
        "consideration",
        "checkout",
        "purchase",
        "delivery",
    ]
    assert row["completed_ms"] == 3 * H
    assert row["closed_ms"] is None


def test_stage_timestamps_are_when_each_stage_was_first_reached():
    events = [ev(0, "a", "site_visit"), ev(5, "b", "product_view"), ev(9, "c", "checkout_started")]
    row = one(replay(events, batch_size=1, final_watermark=10)[0])
    assert dict(zip(row["stages_reached"], row["stages_reached_ms"], strict=True)) == {
        "consideration": 0,
        "checkout": 9,
    }


def test_expiry_is_exactly_at_the_deadline():
    expiry = CONFIG.journeys["purchase"].expiry_ms
    at_deadline = [ev(0, "a", "site_visit"), ev(expiry, "b", "product_view")]
    just_before = [ev(0, "a", "site_visit"), ev(expiry - 1, "b", "product_view")]
    table = replay(at_deadline, batch_size=10)[0]
    # The second visit comes at the deadline: the first journey expired, a new one opens.
    assert sorted(r["status"] for r in table.values()) == ["expired", "expired"]
    assert [r["closed_ms"] for r in table.values() if r["entry_event_id"] == "a"] == [expiry]
    one_journey = replay(just_before, batch_size=10, final_watermark=expiry)[0]
    assert one(one_journey)["status"] == "open"
    assert one(one_journey)["touchpoints"] == 2


def test_a_journey_expires_only_once_the_watermark_passes_its_deadline():
    expiry = CONFIG.journeys["purchase"].expiry_ms
    events = [ev(0, "a", "site_visit")]
    assert one(replay(events, 10, final_watermark=expiry - 1)[0])["status"] == "open"
    assert one(replay(events, 10, final_watermark=expiry)[0])["status"] == "expired"


def test_a_new_entry_after_completion_starts_the_next_journey():
    events = [
        ev(0, "a", "site_visit"),
        ev(1, "b", "purchase"),
        ev(2, "c", "delivery"),
        ev(3, "d", "site_visit"),
        ev(4, "e", "purchase"),
    ]
    table = replay(events, batch_size=2, final_watermark=5)[0]
    rows = sorted(table.values(), key=lambda r: r["opened_ms"])
    assert [(r["entry_event_id"], r["status"], r["path"]) for r in rows] == [
        ("a", "closed", ["site_visit", "purchase", "delivery"]),
        ("d", "completed", ["site_visit", "purchase"]),
    ]


def test_touchpoints_outside_any_journey_open_nothing():
    events = [ev(0, "a", "add_to_cart"), ev(1, "b", "login"), ev(2, "c", "email_open")]
    assert replay(events, 10)[0] == {}


def test_late_events_are_returned_not_applied():
    events = [ev(10 * H, "a", "site_visit"), ev(0, "b", "ad_click", "ads")]
    table, _, late = replay(events, batch_size=1)
    assert [e[1] for e in late] == ["b"]
    assert one(table)["path"] == ["site_visit"]


def test_state_is_bounded_once_journeys_are_sealed():
    events = [ev(i * DAY, f"v{i}", "site_visit") for i in range(0, 400, 10)]
    _, state, _ = replay(events, batch_size=3, final_watermark=500 * DAY)
    assert state.events == []
    assert state.emitted == {}
    assert set(state.floors) == {"purchase"}


# --- properties ---------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(histories, st.integers(0, 10**6), st.integers(1, 8))
def test_any_shuffle_within_the_lateness_gives_the_same_journeys(events, seed, batch):
    in_order, _, _ = replay(events, batch_size=len(events) or 1)
    arrivals = shuffled_within_lateness(events, seed)
    shuffled, _, late = replay(arrivals, batch_size=batch)
    assert late == []
    assert shuffled == in_order


@settings(max_examples=150, deadline=None)
@given(histories, st.integers(1, 8), st.integers(1, 8))
def test_batch_sizes_do_not_change_the_journeys(events, a, b):
    assert replay(events, batch_size=a)[0] == replay(events, batch_size=b)[0]


@settings(max_examples=150, deadline=None)
@given(histories, st.data())
def test_merging_a_into_c_equals_merging_c_into_a(events, data):
    """Identity stitching: split one customer's events between two keys, merge either way."""
    on_c = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    part_c = add_events(new_state(), [e for e, c in zip(events, on_c, strict=True) if c])
    part_a = add_events(new_state(), [e for e, c in zip(events, on_c, strict=True) if not c])
    watermark = max((e[0] for e in events), default=0)
    c_then_a = advance(CONFIG, merge_states(part_c, part_a), "c", watermark)
    a_then_c = advance(CONFIG, merge_states(part_a, part_c), "c", watermark)
    whole = advance(CONFIG, add_events(new_state(), events), "c", watermark)
    assert content(sink({}, c_then_a.updates)) == content(sink({}, a_then_c.updates))
    assert content(sink({}, c_then_a.updates)) == content(sink({}, whole.updates))


@settings(max_examples=100, deadline=None)
@given(histories)
def test_versions_only_grow_for_a_journey(events):
    seen = {}
    state = new_state()
    for i, event in enumerate(events):
        out = advance(CONFIG, add_events(state, [event]), "c", event[0] - LATENESS)
        state = out.state
        for row in out.updates:
            assert row["version"] > seen.get(row["journey_id"], -1), i
            seen[row["journey_id"]] = row["version"]


def test_the_watermark_is_event_time_minus_lateness_and_follows_the_clock_when_idle():
    mark = Watermark(lateness_ms=1000, idle_timeout_ms=5000)
    assert mark.observe(10_000, wall_ms=0)
    assert mark.value == 9000
    assert not mark.observe(8999, wall_ms=1)  # late
    assert mark.observe(9000, wall_ms=2)  # exactly at the watermark: on time
    assert mark.on_idle(wall_ms=5002) == 9000  # idle, but not for longer than the timeout
    assert mark.on_idle(wall_ms=8002) == 12_000  # 3 s past the timeout
    mark.observe(11_000, wall_ms=8003)  # an older event does not move it back
    assert mark.value == 12_000


def test_a_partition_with_records_waiting_is_behind_not_idle():
    """A worker stalled for longer than the idle timeout, with a backlog: its ticks must
    not push the watermark past the backlog's events, which would all be judged late."""
    mark = Watermark(lateness_ms=1000, idle_timeout_ms=5000)
    mark.observe(10_000, wall_ms=0)
    assert mark.on_idle(wall_ms=35_000, behind=True) == 9000
    assert mark.observe(10_500, wall_ms=35_001)  # the backlog's next event: on time
    # The idle clock restarted when the backlog was seen: idle 5 s after that, not before.
    assert mark.on_idle(wall_ms=40_000) == 9500
    assert mark.on_idle(wall_ms=41_001) == 10_500  # 1 s past the timeout


@given(histories, st.integers(0, 2**16), st.integers(1, 6))
@settings(max_examples=80, deadline=None)
def test_incremental_steps_equal_a_full_fold_at_every_step(events, seed, batch):
    """Folding on from the last step (in memory) and folding from scratch (a restarted
    worker reading the state back from the changelog) give the same outputs and state."""
    arrivals = shuffled_within_lateness(events, seed)
    kept, restarted = new_state(), new_state()
    mark = Watermark(LATENESS, idle_timeout_ms=60_000)
    for start in range(0, len(arrivals) + batch, batch):
        fresh = [e for e in arrivals[start : start + batch] if mark.observe(e.ts_ms, 0)]
        watermark = mark.value if start < len(arrivals) else FAR_FUTURE
        on = advance(CONFIG, add_events(kept, fresh), "c", watermark)
        scratch = advance(CONFIG, add_events(through_json(restarted), fresh), "c", watermark)
        assert on.rows() == scratch.rows()
        assert on.due_ms == scratch.due_ms
        assert on.state.to_json() == scratch.state.to_json()
        kept, restarted = on.state, scratch.state
