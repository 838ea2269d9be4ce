"""Re-entry rules: never, after_exit, always, a cool-down, and blocked entries."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import ConfigError, load_config
from streams.config.settings import SCHEMAS_DIR
from streams.core.customer import add_events, advance, new_state
from streams.core.journeys import OUTSIDE_REASONS, run_journey
from streams.core.state import CustomerState, Floor, position
from tests.support.journeys import ev

CONFIG = load_config(SCHEMAS_DIR / "journeys.yaml")
PURCHASE = CONFIG.journeys["purchase"]  # entry: site_visit...; goal: purchase; expiry 7d
H = 3_600_000


def journeys(events, floor=None, **rules):
    """(entry, status, event ids) of each instance, and the ids that joined none."""
    outside: dict[str, str] = {}
    instances = run_journey(replace(PURCHASE, **rules), events, floor, 10 * H, outside)
    return [(i.entry[1], i.status, [e[1] for e in i.events]) for i in instances], sorted(outside)


BOUGHT_THEN_BACK = [
    ev(0, "a", "site_visit"),
    ev(1 * H, "b", "purchase"),
    ev(5 * H, "c", "site_visit"),
    ev(6 * H, "d", "purchase"),
]


def test_after_exit_is_the_default_a_new_visit_after_the_goal_starts_again():
    assert journeys(BOUGHT_THEN_BACK) == (
        [("a", "closed", ["a", "b"]), ("c", "completed", ["c", "d"])],
        [],
    )


def test_never_keeps_a_customer_in_one_journey_for_good():
    # After the goal, what may not open a new journey attaches to the completed one.
    assert journeys(BOUGHT_THEN_BACK, reentry="never") == (
        [("a", "completed", ["a", "b", "c", "d"])],
        [],
    )


@pytest.mark.parametrize(
    ("cooldown_hours", "opens_at"),
    [(3, "c"), (4, "c"), (5, None)],  # c comes exactly 4 h after the goal (b)
)
def test_the_cool_down_counts_from_the_exit_and_its_boundary_is_allowed(cooldown_hours, opens_at):
    found, outside = journeys(BOUGHT_THEN_BACK, cooldown_ms=cooldown_hours * H)
    assert outside == []
    if opens_at:
        assert [j[0] for j in found] == ["a", "c"]
    else:  # inside the cool-down the visit attaches to the completed journey
        assert found == [("a", "completed", ["a", "b", "c", "d"])]


def test_while_open_an_entry_attaches_by_default_or_is_ignored():
    events = [ev(0, "a", "site_visit"), ev(1, "b", "add_to_cart"), ev(2, "c", "site_visit")]
    assert journeys(events) == ([("a", "open", ["a", "b", "c"])], [])
    assert journeys(events, blocked_entry="ignore") == ([("a", "open", ["a", "b"])], ["c"])


def test_always_ends_the_open_journey_and_starts_another_outside_the_cool_down():
    events = [
        ev(0, "a", "site_visit"),
        ev(1 * H, "b", "add_to_cart"),
        ev(2 * H, "c", "site_visit"),
        ev(4 * H, "d", "site_visit"),
    ]
    assert journeys(events, reentry="always") == (
        [
            ("a", "expired", ["a", "b"]),
            ("c", "expired", ["c"]),
            ("d", "open", ["d"]),
        ],
        [],
    )
    # A cool-down of 3 h from each start: c (2 h after a) attaches, d (4 h) restarts.
    assert journeys(events, reentry="always", cooldown_ms=3 * H) == (
        [("a", "expired", ["a", "b", "c"]), ("d", "open", ["d"])],
        [],
    )


def test_the_rule_holds_across_a_sealed_journey_through_its_floor():
    # The first journey was sealed and forgotten; only its floor remains.
    floor = Floor(1 * H, "b", exit_ms=1 * H, start_ms=0)  # last event, exit (the purchase), start
    later = [ev(2 * H, "c", "site_visit"), ev(9 * H, "d", "site_visit")]
    assert journeys(later, floor, reentry="never") == ([], ["c", "d"])
    assert journeys(later, floor, cooldown_ms=3 * H) == ([("d", "open", ["d"])], ["c"])
    old_floor = CustomerState.from_json({"floors": {"purchase": [1 * H, "b"]}}).floors["purchase"]
    # (written before re-entry rules: its last event is the exit)
    assert journeys(later, old_floor, cooldown_ms=3 * H)[1] == ["c"]


def test_a_kept_out_entry_is_reported_once_when_final_however_often_recomputed():
    config = replace(
        CONFIG,
        journeys={**CONFIG.journeys, "purchase": replace(PURCHASE, blocked_entry="ignore")},
    )
    state, reported = new_state(), []
    for batch, watermark in (
        ([ev(0, "a", "site_visit"), ev(H, "b", "add_to_cart")], H),
        ([ev(2 * H, "c", "site_visit")], 3 * H),
        ([ev(3 * H, "d", "product_view")], 4 * H),
        ([], 30 * 24 * H),  # the journey expires and is sealed: the answer is final
        ([], 31 * 24 * H),
    ):
        out = advance(config, add_events(state, batch), "c-1", watermark_ms=watermark)
        state = out.state
        reported += [(r["event_id"], r["reason"]) for r in out.outside]
    assert reported == [("c", "entry_blocked"), ("d", "entry_blocked")]


@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.sampled_from(["site_visit", "add_to_cart", "purchase"])),
        max_size=25,
    ),
    st.sampled_from(["never", "after_exit", "always"]),
    st.integers(0, 50),
    st.sampled_from(["attach", "ignore"]),
    st.sampled_from(["attach", "reopen", "new"]),
)
@settings(max_examples=200)
def test_every_touchpoint_is_in_exactly_one_journey_or_outside_with_a_reason(
    raw, mode, cooldown, blocked, after_goal
):
    """The fold alone. It never saw the Helpdesk log's silent touchpoints: its journey has
    no close_on and it never asks whether the step *reports* them; the customer step, with
    closes and equal times, is tested in test_nothing_falls_through."""
    events = sorted(ev(ts * H, f"e{i:02d}", kind) for i, (ts, kind) in enumerate(raw))
    rules = dict(reentry=mode, cooldown_ms=cooldown * H, blocked_entry=blocked)
    outside: dict[str, str] = {}
    journey = replace(PURCHASE, after_goal=after_goal, **rules)
    found = run_journey(journey, events, None, 10 * H, outside)
    placed = [e.event_id for i in found for e in i.events]
    assert len(placed) == len(set(placed))  # no touchpoint in two instances
    assert sorted(placed + list(outside)) == sorted(e.event_id for e in events)
    assert set(outside.values()) <= set(OUTSIDE_REASONS)
    if mode == "never":
        assert len(found) <= 1
    if blocked == "attach":  # while an instance is open, only a stage past the goal's
        for e in events:  # before the goal stays out of it
            if outside.get(e.event_id, "goal_not_reached") != "goal_not_reached":
                assert not any(
                    position(i.entry) <= position(e)
                    and (i.closed_ms is None or e.ts_ms < i.closed_ms)
                    for i in found
                ), (e, outside)


def test_config_rejects_an_unknown_mode_with_the_line(tmp_path):
    text = (SCHEMAS_DIR / "journeys.yaml").read_text()
    path = tmp_path / "journeys.yaml"
    path.write_text(text.replace("    expiry: 7d\n", "    expiry: 7d\n    reentry: sometimes\n", 1))
    with pytest.raises(ConfigError, match="reentry") as caught:
        load_config(path)
    assert ":" in str(caught.value)
