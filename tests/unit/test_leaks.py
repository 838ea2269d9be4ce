"""Leak rules: exact boundaries, once per journey and rule, and order-insensitivity."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import load_config
from streams.config.settings import SCHEMAS_DIR
from streams.core.customer import add_events, advance, new_state
from streams.core.eventtime import Watermark
from tests.support.journeys import ev, histories, shuffled_within_lateness

CONFIG = load_config(SCHEMAS_DIR / "journeys.yaml")
H = 3_600_000
DAY = 24 * H
LATENESS = 10 * 60_000


def leaks_of(arrivals, batch_size=1, final_watermark=None):
    """Leak rows reported while the events arrive in this order; fails on a repeat."""
    state, found = new_state(), {}
    mark = Watermark(LATENESS, idle_timeout_ms=60_000)
    for start in range(0, len(arrivals), batch_size):
        fresh = [e for e in arrivals[start : start + batch_size] if mark.observe(e[0], 0)]
        out = advance(CONFIG, add_events(state, fresh), "c", mark.value)
        state = out.state
        for row in out.leaks:
            assert row["leak_id"] not in found, "a leak was reported twice"
            found[row["leak_id"]] = row
    if final_watermark is not None:
        for row in advance(CONFIG, state, "c", final_watermark).leaks:
            assert row["leak_id"] not in found
            found[row["leak_id"]] = row
    return {(r["rule"], r["anchor_event_id"], r["due_ms"], r["category"]) for r in found.values()}


def test_an_abandoned_checkout_is_reported_when_the_watermark_reaches_the_deadline():
    events = [ev(0, "a", "site_visit"), ev(10, "b", "checkout_started")]
    deadline = 10 + H
    assert leaks_of(events, final_watermark=deadline - 1) == set()
    assert leaks_of(events, final_watermark=deadline) == {
        ("abandoned_checkout", "b", deadline, "financial")
    }


def test_a_purchase_just_inside_the_window_prevents_the_leak_and_at_its_end_does_not():
    inside = [
        ev(0, "a", "site_visit"),
        ev(10, "b", "checkout_started"),
        ev(10 + H - 1, "c", "purchase"),
    ]
    at_end = [
        ev(0, "a", "site_visit"),
        ev(10, "b", "checkout_started"),
        ev(10 + H, "c", "purchase"),
    ]
    assert {r for r, *_ in leaks_of(inside, final_watermark=30 * DAY)} - {"late_delivery"} == set()
    assert "abandoned_checkout" in {r for r, *_ in leaks_of(at_end, final_watermark=30 * DAY)}


def test_a_third_support_call_within_a_week_without_resolution_is_a_support_leak():
    calls = [
        ev(0, "a", "support_call"),
        ev(DAY, "b", "support_call"),
        ev(3 * DAY, "c", "support_call"),
    ]
    assert leaks_of(calls, final_watermark=4 * DAY) == {
        ("repeated_support_contact", "a", 3 * DAY + 1, "support")
    }
    spread = [
        ev(0, "a", "support_call"),
        ev(4 * DAY, "b", "support_call"),
        ev(7 * DAY, "c", "support_call"),
    ]  # the first is a full week before the third
    assert leaks_of(spread, final_watermark=8 * DAY) == set()
    resolved = [
        ev(0, "a", "support_call"),
        ev(DAY, "b", "support_call"),
        ev(2 * DAY, "r", "ticket_resolved"),
        ev(3 * DAY, "c", "support_call"),
    ]
    assert "repeated_support_contact" not in {
        r for r, *_ in leaks_of(resolved, final_watermark=4 * DAY)
    }


def test_a_journey_stuck_in_consideration_stalls_after_its_limit():
    browsing = [ev(0, "a", "site_visit"), ev(DAY, "b", "product_view")]
    assert leaks_of(browsing, final_watermark=3 * DAY - 1) == set()
    assert leaks_of(browsing, final_watermark=3 * DAY) == {
        ("stalled_consideration", "a", 3 * DAY, "process")
    }
    moved_on = [
        ev(0, "a", "site_visit"),
        ev(2 * DAY, "b", "add_to_cart"),
        ev(2 * DAY + 5, "c", "purchase"),
    ]
    assert leaks_of(moved_on, final_watermark=6 * DAY) == set() or all(
        rule == "late_delivery" for rule, *_ in leaks_of(moved_on, final_watermark=6 * DAY)
    )


def test_each_leak_is_reported_once_however_often_the_watermark_moves():
    events = [ev(0, "a", "site_visit"), ev(10, "b", "checkout_started")]
    state = add_events(new_state(), events)
    reported = []
    for watermark in (H, 2 * H, 3 * DAY, 10 * DAY):
        out = advance(CONFIG, state, "c", watermark)
        state = out.state
        reported += [r["rule"] for r in out.leaks]
    assert sorted(reported) == ["abandoned_checkout", "stalled_consideration"]


def answer(ts, eid, metric, score):
    return [ts, eid, "survey_response", "email", {"metric": metric, "score": score}]


BOUGHT = [ev(0, "a", "site_visit"), ev(1, "b", "purchase"), ev(2, "c", "delivery")]


def test_a_detractor_answer_is_a_leak_of_the_journey_it_closes_the_loop_on():
    for metric, score, leaks in [
        ("nps", 6, True),
        ("nps", 7, False),
        ("csat", 2, True),
        ("csat", 3, False),
        ("ces", 5, True),
        ("ces", 4.5, False),
    ]:
        found = leaks_of([*BOUGHT, answer(10, "s", metric, score)], final_watermark=11)
        assert (("detractor_feedback", "s", 11, "process") in found) is leaks, (metric, score)


def test_answers_without_a_score_or_before_the_purchase_completes_are_not_leaks():
    not_scored = [*BOUGHT, [10, "s", "survey_response", "email"]]
    assert leaks_of(not_scored, final_watermark=11) == set()
    # A survey answer belongs to the purchase journey after its goal only.
    early = [ev(0, "a", "site_visit"), answer(5, "s", "nps", 0)]
    assert "detractor_feedback" not in {r for r, *_ in leaks_of(early, final_watermark=6)}


@settings(max_examples=150, deadline=None)
@given(histories, st.integers(0, 10**6), st.integers(1, 8))
def test_any_shuffle_within_the_lateness_reports_the_same_leaks(events, seed, batch):
    final = max((e[0] for e in events), default=0) + 60 * DAY
    in_order = leaks_of(events, batch_size=len(events) or 1, final_watermark=final)
    shuffled = leaks_of(shuffled_within_lateness(events, seed), batch, final_watermark=final)
    assert shuffled == in_order
