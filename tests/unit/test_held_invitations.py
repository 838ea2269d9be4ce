"""Invitations held until their send time and checked again then: opt-outs, follow-up
tasks and caps that come during the wait, other journeys (`unless_open`) and other
surveys (`unless_surveyed_within`) that hold them on, expiry (no Kafka)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.customer import add_events, advance, new_state
from streams.core.state import CustomerState, Stamped
from tests.support.journeys import CONFIG, DAY, H, ev, histories
from tests.support.journeys import shuffled_within_lateness as shuffled
from tests.support.surveys import T0, decisions, only_rules, summary

SUPPORT = "a support_resolution journey was open"


def with_rule(config, name, **changes):
    rule = dataclasses.replace(config.surveys.rules[name], **changes)
    rules = {**config.surveys.rules, name: rule}
    return dataclasses.replace(config, surveys=dataclasses.replace(config.surveys, rules=rules))


def bought(t=T0):
    """A purchase delivered at t + 2 h: CSAT due at t + 4 h (its delay is 2 h)."""
    return [ev(t, "v", "site_visit"), ev(t + H, "b", "purchase"), ev(t + 2 * H, "d", "delivery")]


CSAT_UNLESS_SUPPORT = with_rule(
    only_rules("csat_after_delivery"),
    "csat_after_delivery",
    unless_open=frozenset({"support_resolution", "purchase"}),
)


def only(invited, suppressed):
    [row] = [*invited.values(), *suppressed.values()]
    return row


def test_a_survey_is_not_held_by_its_own_journey():
    row = only(*decisions(bought(), CSAT_UNLESS_SUPPORT))
    assert "reason" not in row and row["send_at_ms"] == T0 + 4 * H and not row.get("held_for")


def test_a_case_opened_during_the_delay_holds_the_survey_until_it_is_resolved():
    events = [
        *bought(),
        ev(T0 + 3 * H, "call", "support_call", "phone"),
        ev(T0 + 6 * H, "fix", "ticket_resolved", "email"),
    ]
    for batch_size in (1, 2, len(events)):
        row = only(*decisions(events, CSAT_UNLESS_SUPPORT, batch_size=batch_size, restart=True))
        assert "reason" not in row, row
        assert (row["send_at_ms"], row["held_for"]) == (T0 + 6 * H, SUPPORT)
        assert row["trigger_ms"] == T0 + 2 * H


def test_a_case_open_at_the_trigger_holds_it_too_and_a_night_resolution_waits_for_morning():
    events = [
        ev(T0 - H, "call", "support_call", "phone"),
        *bought(),
        ev(T0 + 12 * H, "fix", "ticket_resolved", "email"),  # 23:00 in Paris
    ]
    row = only(*decisions(events, CSAT_UNLESS_SUPPORT))
    assert row["send_at_ms"] == T0 + 21 * H  # 08:00 in Paris, the end of the quiet hours


def test_a_case_never_resolved_lets_the_invitation_expire_after_max_wait():
    events = [*bought(), ev(T0 + 3 * H, "call", "support_call", "phone")]
    config = dataclasses.replace(
        CSAT_UNLESS_SUPPORT,
        surveys=dataclasses.replace(CSAT_UNLESS_SUPPORT.surveys, max_wait_ms=10 * DAY),
    )
    expiry = T0 + 2 * H + 10 * DAY
    assert decisions(events, config, final_watermark=expiry - 1) == ({}, {})
    row = only(*decisions(events, config, final_watermark=expiry))
    assert (row["reason"], row["detail"]) == ("expired", f"held longer than max_wait: {SUPPORT}")


def test_an_opt_out_while_held_by_a_case_cancels_it():
    events = [
        *bought(),
        ev(T0 + 3 * H, "call", "support_call", "phone"),
        ev(T0 + 5 * H, "u", "unsubscribe", "email"),
        ev(T0 + 6 * H, "fix", "ticket_resolved", "email"),
    ]
    row = only(*decisions(events, CSAT_UNLESS_SUPPORT, batch_size=1))
    assert row["reason"] == "opted_out" and row["held_for"] == SUPPORT


def test_a_person_on_the_case_takes_over_from_the_survey():
    config = with_rule(
        only_rules("ces_after_support_call"), "ces_after_support_call", unless_follow_up=True
    )
    calls = [ev(T0 + n * H, f"call{n}", "support_call", "phone") for n in range(4)]
    # The third call makes a repeated-contact leak, decided just after it: a task opens
    # for a person, and the next call's survey goes to them instead.
    assert summary(*decisions(calls, config)) == [
        ("ces_after_support_call", "call0", "sent"),
        ("ces_after_support_call", "call1", "duplicate"),  # one CES per support case
        ("ces_after_support_call", "call2", "duplicate"),
        ("ces_after_support_call", "call3", "handed_off"),
    ]


def test_a_follow_up_task_opened_during_the_delay_takes_over_at_send_time():
    config = with_rule(
        only_rules("ces_after_support_call"),
        "ces_after_support_call",
        unless_follow_up=True,
        delay_ms=3 * H,
    )
    calls = [ev(T0 + n * H, f"call{n}", "support_call", "phone") for n in range(3)]
    invited, suppressed = decisions(calls, config, batch_size=1, restart=True)
    assert invited == {}
    [row] = [r for r in suppressed.values() if r["anchor_event_id"] == "call0"]
    assert (row["reason"], row["detail"]) == (
        "handed_off",
        "a follow-up task for a person opened before it was sent",
    )


def test_a_relational_nps_waits_until_no_other_survey_was_sent_for_its_period():
    config = with_rule(
        only_rules("csat_after_delivery", "relational_nps", cap_ms=0, channel_cap_ms={}),
        "relational_nps",
        unless_surveyed_within_ms=30 * DAY,
    )
    events = [*bought(), ev(T0 + 5 * DAY, "act", "activated", "app")]
    invited, suppressed = decisions(events, config, batch_size=1, restart=True)
    assert suppressed == {}
    nps = next(r for r in invited.values() if r["rule"] == "relational_nps")
    # Due 7 days after the activation; the CSAT went at T0 + 4 h: it waits 30 days from then.
    assert nps["send_at_ms"] == T0 + 4 * H + 30 * DAY
    assert nps["held_for"] == "csat_after_delivery was sent within 30d"


def test_a_cap_broken_by_holding_on_cancels_at_send_time():
    """The CSAT booked its place at T0 + 4 h, far from the NPS (5-day cap); held on by a
    case until after the NPS went, it would now break the cap."""
    config = with_rule(
        only_rules("csat_after_delivery", "relational_nps", cap_ms=5 * DAY, channel_cap_ms={}),
        "csat_after_delivery",
        unless_open=frozenset({"support_resolution"}),
    )
    events = [
        *bought(),
        ev(T0 + 3 * H, "call", "support_call", "phone"),
        ev(T0 + DAY, "act", "activated", "app"),  # NPS at T0 + 8 days
        ev(T0 + 9 * DAY, "fix", "ticket_resolved", "email"),
    ]
    invited, suppressed = decisions(events, config)
    assert [r["rule"] for r in invited.values()] == ["relational_nps"]
    [row] = suppressed.values()
    assert (row["rule"], row["reason"]) == ("csat_after_delivery", "capped")
    assert row["detail"] == "relational_nps was sent within the contact cap meanwhile"


# Every guardrail that looks at time, on at once.
GUARDED = with_rule(
    with_rule(
        with_rule(CONFIG, "csat_after_delivery", unless_open=frozenset({"support_resolution"})),
        "relational_nps",
        unless_surveyed_within_ms=20 * DAY,
    ),
    "ces_after_support_call",
    unless_follow_up=True,
)


@settings(max_examples=120, deadline=None)
@given(histories, st.integers(0, 10**6), st.integers(1, 6))
def test_held_invitations_are_decided_the_same_in_any_order_batching_or_restart(
    events, seed, batch
):
    events = [e._replace(ts_ms=T0 + e.ts_ms) for e in events]
    in_order = decisions(events, GUARDED, batch_size=len(events) or 1)
    again = decisions(shuffled(events, seed), GUARDED, batch_size=batch, restart=True)
    assert summary(*again) == summary(*in_order)
    assert {i: r["send_at_ms"] for i, r in again[0].items()} == {
        i: r["send_at_ms"] for i, r in in_order[0].items()
    }


@settings(max_examples=150, deadline=None)
@given(histories, st.integers(1, 6))
def test_nothing_is_sent_that_fails_a_guardrail_at_its_send_time(events, batch):
    events = [e._replace(ts_ms=T0 + e.ts_ms) for e in events]
    invited, _ = decisions(events, GUARDED, batch_size=batch, restart=True)
    surveys = GUARDED.surveys
    for row in invited.values():
        consent = [e for e in events if e.ts_ms <= row["send_at_ms"]]
        changes = [e[2] for e in consent if e[2] in surveys.opt_out | surveys.opt_in]
        assert not changes or changes[-1] in surveys.opt_in, row
        assert row["send_at_ms"] >= row["trigger_ms"] + surveys.rules[row["rule"]].delay_ms
        assert row["send_at_ms"] < row["trigger_ms"] + surveys.max_wait_ms
    sends = sorted(r["send_at_ms"] for r in invited.values())
    assert all(b - a >= surveys.cap_ms for a, b in itertools.pairwise(sends))
    nps = [r for r in invited.values() if r["rule"] == "relational_nps"]
    for row in nps:
        others = [r["send_at_ms"] for r in invited.values() if r["rule"] != "relational_nps"]
        assert not any(row["send_at_ms"] - 20 * DAY < t <= row["send_at_ms"] for t in others)


def test_the_state_scan_counts_held_invitations_by_rule_and_why():
    from streams import metrics
    from streams.pipeline import worker_metrics

    def state(*rows):
        return CustomerState.from_json(
            {"partition": 0, "events": [], "emitted": {}, "contact": {"held": list(rows)}}
        )

    waiting = {"rule": "csat_after_delivery"}
    held = {"rule": "csat_after_delivery", "held_for": SUPPORT}
    worker_metrics.scan_journey_state([state(waiting, held), state(waiting), None], {0})

    def gauge(why):
        return metrics.INVITATIONS_HELD.labels("csat_after_delivery", why)._value.get()

    assert (gauge("waiting"), gauge("held")) == (2, 1)
    worker_metrics.scan_journey_state([], {0})  # all sent: back to zero
    assert (gauge("waiting"), gauge("held")) == (0, 0)


def test_a_time_zone_learnt_during_the_delay_moves_the_send_into_the_morning_or_expires_it():
    """Due at 12:00 UTC: noon in Paris, but 21:00 in Tokyo (quiet until 08:00)."""
    config = with_rule(
        only_rules("ces_after_support_call"), "ces_after_support_call", delay_ms=2 * H
    )
    short = dataclasses.replace(
        config, surveys=dataclasses.replace(config.surveys, max_wait_ms=6 * H)
    )
    for rules, expected in ((config, T0 + 13 * H), (short, None)):  # 08:00 in Tokyo
        state = replace(new_state(), identified=True)
        out = advance(rules, add_events(state, [ev(T0, "s", "support_call", "phone")]), "c", T0)
        assert out.invitations == out.suppressions == []  # held, due at T0 + 2 h
        learnt = replace(out.state, profile={"time_zone": Stamped(T0 + H, "Asia/Tokyo")})
        out = advance(rules, learnt, "c", T0 + DAY)
        [row] = out.invitations + out.suppressions
        if expected:
            assert "reason" not in row and row["send_at_ms"] == expected
        else:
            assert (row["reason"], row["detail"]) == (
                "expired",
                "held longer than max_wait: quiet hours",
            )
