"""Nothing falls through: every touchpoint of a journey's types, once the watermark has
passed it, is in exactly one instance or reported outside with a reason, under every
re-entry, after-goal and after-close mode, with touchpoints after a close and at equal
times, whatever the arrival order and the batches."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import load_config
from streams.core.customer import add_events, advance, merge_states, new_state
from streams.core.journeys import OUTSIDE_REASONS
from tests.support.helpdesk import HELPDESK_CONFIG
from tests.support.journeys import CONFIG as DEFAULT
from tests.support.journeys import DAY as DAY_MS
from tests.support.journeys import FAR_FUTURE, H, ev

HELPDESK = load_config(HELPDESK_CONFIG)
SUPPORT = HELPDESK.journeys["support"]  # entry: every ticket type; goal: resolved
# close_on: ticket_closed; survey_response joins the closure stage (not an entry).
TYPES = [
    "ticket_opened",
    "ticket_assigned",
    "ticket_updated",
    "ticket_resolved",
    "ticket_closed",
    "survey_response",
]


def config_for(**rules):
    return replace(HELPDESK, journeys={"support": replace(SUPPORT, **rules)}, leaks={})


def replay(config, events, batches: list[int]):
    """Feed `events` in this order, in batches of these sizes, the watermark at the latest
    time seen (no lateness: nothing here is late); then far ahead. The latest journey rows,
    the outside rows, and the watermarks of the steps, with the step each outside row
    came at."""
    state, journeys, outside, told_at, watermarks = new_state(), {}, [], {}, []
    steps, start = [], 0
    for size in [*batches, len(events)]:
        if start < len(events):
            steps.append(events[start : start + size])
            start += size
    latest = -(2**62)
    for batch in [*steps, [], []]:
        latest = max([latest, *(e.ts_ms for e in batch)]) if batch else FAR_FUTURE
        out = advance(config, add_events(state, batch), "ticket-1", watermark_ms=latest)
        state = out.state
        watermarks.append(latest)
        for row in out.updates:
            if (
                row["journey_id"] not in journeys
                or row["version"] > journeys[row["journey_id"]]["version"]
            ):
                journeys[row["journey_id"]] = row
        for row in out.outside:
            outside.append(row)
            told_at.setdefault(row["event_id"], len(watermarks) - 1)
    return journeys, outside, (told_at, watermarks)


def arrival(events, seed: int):
    """The events in time order, those at equal times shuffled: what producers do."""
    rng = random.Random(seed)
    keyed = [(e.ts_ms, rng.random(), e) for e in events]
    return [e for *_, e in sorted(keyed)]


@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.sampled_from(TYPES)),  # few times: many equal
        min_size=1,
        max_size=25,
    ),
    st.sampled_from(["never", "after_exit", "always"]),
    st.sampled_from(["attach", "reopen", "new"]),
    st.sampled_from(["outside", "reopen", "new"]),
    st.sampled_from(["attach", "ignore"]),
    st.sampled_from([6, 48]),  # expiry, hours: journeys also end in silence
    st.lists(st.integers(1, 6), max_size=8),
    st.integers(0, 1000),
)
@settings(max_examples=300, deadline=None)
def test_every_touchpoint_is_in_exactly_one_instance_or_reported_outside_once(
    raw, reentry, after_goal, after_close, blocked, expiry_hours, batches, seed
):
    events = [ev(ts * H, f"e{i:02d}", kind) for i, (ts, kind) in enumerate(raw)]
    config = config_for(
        reentry=reentry,
        after_goal=after_goal,
        after_close=after_close,
        blocked_entry=blocked,
        expiry_ms=expiry_hours * H,
    )
    journeys, outside, (told_at, watermarks) = replay(config, arrival(events, seed), batches)
    live = [j for j in journeys.values() if j["status"] != "superseded"]
    placed = [event_id for j in live for event_id in j["path_event_ids"]]
    told = [row["event_id"] for row in outside]

    assert len(placed) == len(set(placed))  # in at most one instance
    assert len(told) == len(set(told))  # reported once
    assert sorted(placed + told) == sorted(e.event_id for e in events)  # and nothing else
    assert {row["reason"] for row in outside} <= set(OUTSIDE_REASONS)
    if reentry == "never":
        assert len(live) <= 1
    # Reported as soon as the watermark passed it, not only when the journey sealed.
    for event in events:
        if event.event_id in told_at:
            passed = next(i for i, mark in enumerate(watermarks) if mark > event.ts_ms)
            assert told_at[event.event_id] <= passed
    # A closure undone by a re-opening is kept, and only `after_close: reopen` undoes one.
    for j in live:
        assert len(j["closures_ms"]) <= j["reopened"]
        if after_close != "reopen":
            assert j["closures_ms"] == []

    # Another arrival order of the touchpoints at equal times, other batches: the same rows.
    again, outside_again, _ = replay(config, arrival(events, seed + 1), [3])

    def content(rows):
        return sorted(
            (j["journey_id"], j["status"], j["path_event_ids"], j["reopened"], j["closures_ms"])
            for j in rows.values()
            if j["status"] != "superseded"
        )

    assert content(again) == content(journeys)
    assert sorted((r["event_id"], r["reason"]) for r in outside_again) == sorted(
        (r["event_id"], r["reason"]) for r in outside
    )


def test_a_second_close_at_the_same_time_reopens_and_closes_again():
    """The Helpdesk log's commonest case: two "Closed" rows at one timestamp."""
    config = config_for(after_close="reopen")
    events = [
        ev(0, "a", "ticket_opened"),
        ev(H, "b", "ticket_resolved"),
        ev(2 * H, "c", "ticket_closed"),
        ev(2 * H, "d", "ticket_closed"),
    ]
    journeys, outside, _ = replay(config, events, [4])
    (row,) = journeys.values()
    assert row["path_event_ids"] == ["a", "b", "c", "d"]
    assert (row["status"], row["reopened"], row["closures_ms"]) == ("closed", 1, [2 * H])
    assert row["completed_ms"] == H  # the goal stays: the resolution clock does not restart
    assert outside == []


def test_after_close_outside_reports_the_second_close_and_new_opens_a_journey():
    events = [
        ev(0, "a", "ticket_opened"),
        ev(2 * H, "c", "ticket_closed"),
        ev(3 * H, "s", "survey_response"),  # not an entry type
    ]
    _, outside, (told_at, watermarks) = replay(config_for(after_close="outside"), events, [3])
    assert [(r["event_id"], r["reason"]) for r in outside] == [("s", "no_open_journey")]
    assert watermarks[told_at["s"]] == FAR_FUTURE  # the last touchpoint: a later watermark

    journeys, outside, _ = replay(config_for(after_close="new", reentry="after_exit"), events, [3])
    assert outside == []
    assert sorted(j["path_event_ids"] for j in journeys.values()) == [["a", "c"], ["s"]]

    _, outside, _ = replay(config_for(after_close="new", reentry="never"), events, [3])
    assert [(r["event_id"], r["reason"]) for r in outside] == [("s", "no_open_journey")]


def test_a_reopening_waits_for_the_expiry_and_not_after_it():
    config = config_for(after_close="reopen", expiry_ms=48 * H)
    events = [
        ev(0, "a", "ticket_opened"),
        ev(H, "c", "ticket_closed"),
        ev(40 * H, "r", "ticket_updated"),  # within 48 h of the close: re-opens
        ev(41 * H, "c2", "ticket_closed"),
        ev(100 * H, "late", "ticket_updated"),  # 59 h after: outside (re-entry: never)
    ]
    journeys, outside, _ = replay(config, events, [1, 1, 1, 1, 1])
    (row,) = journeys.values()
    assert row["path_event_ids"] == ["a", "c", "r", "c2"]
    assert row["closures_ms"] == [H] and row["closed_ms"] == 41 * H
    assert [(r["event_id"], r["reason"]) for r in outside] == [("late", "reentry_not_allowed")]


def test_a_merge_that_puts_a_reported_touchpoint_in_a_journey_corrects_its_row():
    """An add-to-cart with no journey open is reported outside once the watermark passes
    it; the customer's anonymous visit an hour before it, merged in later, opens the
    journey it belongs to: it is told again as `in_journey` (its row replaces the first)."""
    config = DEFAULT
    state = add_events(new_state(), [ev(2 * H, "cart", "add_to_cart")])
    state.identified = True
    out = advance(config, state, "c-1", watermark_ms=3 * H)
    assert [(r["event_id"], r["reason"]) for r in out.outside] == [("cart", "no_open_journey")]
    again = advance(config, out.state, "c-1", watermark_ms=4 * H)
    assert again.outside == []  # told once
    restored = type(again.state).from_json(again.state.to_json())  # a restart: folded again
    assert advance(config, restored, "c-1", watermark_ms=4 * H).outside == []
    anonymous = add_events(new_state(), [ev(1 * H, "visit", "site_visit")])
    merged = merge_states(again.state, anonymous)
    out = advance(config, merged, "c-1", watermark_ms=4 * H)
    assert [(r["event_id"], r["reason"]) for r in out.outside] == [("cart", "in_journey")]
    (row,) = [r for r in out.updates if r["journey"] == "purchase"]
    assert row["path_event_ids"] == ["visit", "cart"]
    assert out.state.told == {}
    # After a restart (the journeys folded again from the stored state) nothing is re-told.
    restored = type(out.state).from_json(out.state.to_json())
    assert advance(config, restored, "c-1", watermark_ms=5 * H).outside == []


def test_a_linked_customer_is_told_once_quiet_or_once_the_journey_is_sealed_past_it():
    """A customer who logged in from an anonymous id may still get that id's history
    (the hand-off takes a hop): their verdicts wait for the key to be quiet, or for the
    journey to be sealed past them, which is final."""
    wall = 1_000 * DAY_MS
    events = [ev(0, "visit", "site_visit"), ev(H, "mail", "email_open")]  # before the goal
    state = add_events(new_state(), events, wall_ms=wall)
    state.identified, state.linked = True, ["anon-1"]
    out = advance(DEFAULT, state, "c-1", watermark_ms=2 * H, now_ms=wall)
    assert out.outside == []  # past the watermark, but the key is not quiet
    sealed = advance(DEFAULT, out.state, "c-1", watermark_ms=8 * DAY_MS, now_ms=wall)
    assert [(r["event_id"], r["reason"]) for r in sealed.outside] == [("mail", "goal_not_reached")]
    quiet = advance(DEFAULT, out.state, "c-1", watermark_ms=2 * H, now_ms=wall + DAY_MS)
    assert [(r["event_id"], r["reason"]) for r in quiet.outside] == [("mail", "goal_not_reached")]
