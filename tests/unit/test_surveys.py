"""Survey triggers and guardrails: boundaries, races, caps, quiet hours, replays (no Kafka)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config.rules import QuietHours, Segments, SurveyRule, Tier
from streams.core.customer import add_events, advance, new_state
from streams.core.guardrails import sampled_in, send_time
from streams.core.state import Orders, Stamped
from streams.core.surveys import segment_of
from tests.support.journeys import CONFIG, DAY, FAR_FUTURE, H, ev, histories
from tests.support.journeys import shuffled_within_lateness as shuffled
from tests.support.surveys import MINUTE, T0, decisions, only_rules, summary, with_surveys


def delivered_purchase(t, prefix=""):
    return [
        ev(t, f"{prefix}v", "site_visit"),
        ev(t + MINUTE, f"{prefix}p", "purchase"),
        ev(t + DAY, f"{prefix}d", "delivery", "delivery"),
    ]


# --- triggers ------------------------------------------------------------------------


def test_a_delivered_purchase_invites_to_csat_about_the_delivery_after_the_delay():
    invited, suppressed = decisions(delivered_purchase(T0), only_rules("csat_after_delivery"))
    assert suppressed == {}
    (row,) = invited.values()
    assert (row["rule"], row["metric"], row["touchpoint"], row["stage"]) == (
        "csat_after_delivery",
        "csat",
        "delivery",
        "delivery",
    )
    assert row["journey"] == "purchase" and row["journey_id"]
    assert row["trigger_ms"] == T0 + DAY
    assert row["send_at_ms"] == T0 + DAY + 2 * H  # 13:00 in Paris: not quiet
    assert row["channel"] == "email"  # no preferred channel known: the default


def test_a_touchpoint_is_decided_once_the_watermark_reaches_it_and_sent_at_its_send_time():
    config = only_rules("ces_after_support_call")  # 30 minutes after the call
    call = [ev(T0, "s", "support_call", "phone")]
    assert decisions(call, config, final_watermark=T0 - 1) == ({}, {})
    # Decided at T0 (it passed the guardrails), held in the state until its send time.
    assert decisions(call, config, final_watermark=T0 + 30 * MINUTE - 1) == ({}, {})
    invited, _ = decisions(call, config, final_watermark=T0 + 30 * MINUTE)
    assert [r["anchor_event_id"] for r in invited.values()] == ["s"]
    assert invited[next(iter(invited))]["send_at_ms"] == T0 + 30 * MINUTE


def test_an_abandoned_checkout_invites_to_why_not_buy_when_the_leak_fires():
    events = [ev(T0, "v", "site_visit"), ev(T0 + MINUTE, "k", "checkout_started")]
    config = only_rules("why_not_buy")
    due = T0 + MINUTE + H
    assert decisions(events, config, final_watermark=due + H - 1) == ({}, {})
    invited, _ = decisions(events, config, final_watermark=due + H)  # its delay is 1 h
    (row,) = invited.values()
    assert (row["trigger"], row["anchor_event_id"], row["trigger_ms"]) == ("leak", "k", due)
    assert row["send_at_ms"] == due + H


def test_relational_nps_goes_to_active_customers_at_most_once_per_period():
    config = only_rules("relational_nps", cap_ms=0, channel_cap_ms={})
    activity = [ev(T0 + d * DAY, f"a{d}", "activated", "app") for d in (0, 30, 89, 91, 120)]
    invited, suppressed = decisions(activity, config)
    assert sorted(r["anchor_event_id"] for r in invited.values()) == ["a0", "a91"]
    assert suppressed == {}


# --- guardrails ----------------------------------------------------------------------


def test_an_opt_out_at_the_same_time_as_a_trigger_wins_and_one_after_the_send_does_not():
    config = only_rules("ces_after_support_call")
    same_time = [ev(T0, "u", "unsubscribe", "email"), ev(T0, "s", "support_call", "phone")]
    assert summary(*decisions(same_time, config)) == [("ces_after_support_call", "s", "opted_out")]
    sent_at = T0 + 30 * MINUTE
    after = [ev(T0, "s", "support_call", "phone"), ev(sent_at + 1, "u", "unsubscribe", "email")]
    assert summary(*decisions(after, config)) == [("ces_after_support_call", "s", "sent")]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_an_opt_out_during_the_delay_cancels_the_held_invitation(batch_size):
    config = only_rules("ces_after_support_call")
    events = [ev(T0, "s", "support_call", "phone"), ev(T0 + 29 * MINUTE, "u", "unsubscribe")]
    invited, suppressed = decisions(events, config, batch_size=batch_size, restart=True)
    assert invited == {}
    (row,) = suppressed.values()
    assert (row["reason"], row["detail"]) == (
        "opted_out",
        "the customer opted out before it was sent",
    )
    assert row["send_at_ms"] == T0 + 30 * MINUTE
    # At the send time itself, the opt-out still wins (touchpoints before sends).
    at_send = [events[0], ev(T0 + 30 * MINUTE, "u", "unsubscribe")]
    assert summary(*decisions(at_send, config)) == [("ces_after_support_call", "s", "opted_out")]


def test_an_opt_out_that_arrives_late_but_within_the_lateness_still_wins():
    config = only_rules("ces_after_support_call")
    arrivals = [ev(T0 + 1, "s", "support_call", "phone"), ev(T0, "u", "unsubscribe", "email")]
    assert summary(*decisions(arrivals, config)) == [("ces_after_support_call", "s", "opted_out")]


def test_consent_given_after_an_opt_out_allows_surveys_again():
    config = only_rules("ces_after_support_call")
    events = [
        ev(T0, "u", "unsubscribe", "email"),
        ev(T0 + H, "s1", "support_call", "phone"),
        ev(T0 + 2 * H, "y", "subscribe", "email"),
        ev(T0 + 3 * H, "s2", "support_call", "phone"),
    ]
    assert summary(*decisions(events, config)) == [
        ("ces_after_support_call", "s1", "opted_out"),
        ("ces_after_support_call", "s2", "sent"),
    ]


def two_deliveries(gap):
    """Two purchase journeys whose deliveries are `gap` apart."""
    return [*delivered_purchase(T0, "a"), *delivered_purchase(T0 + gap, "b")]


def test_the_contact_cap_is_exact_at_its_boundary():
    config = only_rules("csat_after_delivery", cap_ms=14 * DAY, channel_cap_ms={})
    for gap, second in ((14 * DAY - 1, "capped"), (14 * DAY, "sent")):
        assert summary(*decisions(two_deliveries(gap), config)) == [
            ("csat_after_delivery", "ad", "sent"),
            ("csat_after_delivery", "bd", second),
        ], gap


def test_a_channel_cap_applies_to_its_channel_only():
    sms = only_rules("csat_after_delivery", cap_ms=DAY, channel_cap_ms={"sms": 30 * DAY})
    sms_rule = dataclasses.replace(sms.surveys.rules["csat_after_delivery"], channel="sms")
    sms = with_surveys(sms, rules={"csat_after_delivery": sms_rule})
    assert [r[2] for r in summary(*decisions(two_deliveries(20 * DAY), sms))] == ["sent", "capped"]
    email_rule = dataclasses.replace(sms_rule, channel="email")
    email = with_surveys(sms, rules={"csat_after_delivery": email_rule})
    assert [r[2] for r in summary(*decisions(two_deliveries(20 * DAY), email))] == ["sent", "sent"]


def test_a_rule_invites_once_per_journey():
    rule = SurveyRule(
        "ces_per_case", "touchpoint", "ces", touchpoint="support_call", journey="support_resolution"
    )
    config = with_surveys(rules={"ces_per_case": rule}, cap_ms=0, channel_cap_ms={})
    calls = [ev(T0 + i * H, f"s{i}", "support_call", "phone") for i in range(3)]
    assert [r[2] for r in summary(*decisions(calls, config))] == ["sent", "duplicate", "duplicate"]


def test_of_rules_firing_at_once_the_highest_priority_is_sent():
    config = only_rules("csat_after_delivery", cap_ms=0, channel_cap_ms={})
    nps = dataclasses.replace(
        config.surveys.rules["csat_after_delivery"],
        name="nps_after_delivery",
        metric="nps",
        priority=5,
    )
    config = with_surveys(config, rules={**config.surveys.rules, "nps_after_delivery": nps})
    assert summary(*decisions(delivered_purchase(T0), config)) == [
        ("csat_after_delivery", "d", "sent"),
        ("nps_after_delivery", "d", "outranked"),
    ]


def test_sampling_follows_the_segment_rate():
    rule = dataclasses.replace(
        CONFIG.surveys.rules["csat_after_delivery"], sample=(("default", 0.0), ("platinum", 1.0))
    )
    config = with_surveys(rules={"csat_after_delivery": rule})
    platinum = {"segment": [0, "platinum"]}
    assert summary(*decisions(delivered_purchase(T0), config, profile=platinum))[0][2] == "sent"
    silver = {"segment": [0, "silver"]}
    (row,) = decisions(delivered_purchase(T0), config, profile=silver)[1].values()
    assert (row["reason"], row["segment"]) == ("sampled_out", "silver")


@given(st.floats(0.05, 0.95))
@settings(max_examples=20, deadline=None)
def test_sampling_draws_are_deterministic_and_near_the_rate(rate):
    ids = [f"invitation-{i}" for i in range(4000)]
    draws = [sampled_in(i, rate) for i in ids]
    assert draws == [sampled_in(i, rate) for i in ids]
    assert abs(sum(draws) / len(ids) - rate) < 0.04


def test_the_preferred_channel_and_time_zone_come_from_the_profile():
    profile = {"preferred_channel": [0, "sms"], "time_zone": [0, "America/New_York"]}
    evening = T0 + 10 * H  # 15:00 in New York, 21:00 in Paris
    events = [ev(evening, "v", "site_visit"), ev(evening + MINUTE, "p", "purchase")]
    events.append(ev(evening + 2 * MINUTE, "d", "delivery", "delivery"))
    (row,) = decisions(events, only_rules("csat_after_delivery"), profile=profile)[0].values()
    assert row["channel"] == "sms"
    local = datetime.fromtimestamp(row["send_at_ms"] / 1000, ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (17, 2)  # in Paris 23:02 would wait for 08:00


# --- quiet hours ---------------------------------------------------------------------

NIGHT = QuietHours(21 * 60, 8 * 60, "Europe/Paris")


def paris(ms):
    return datetime.fromtimestamp(ms / 1000, ZoneInfo("Europe/Paris"))


def at_paris(day, hour, minute=0):
    return int(
        datetime(2026, 3, day, hour, minute, tzinfo=ZoneInfo("Europe/Paris")).timestamp() * 1000
    )


def test_quiet_hours_across_midnight_move_to_the_morning():
    assert paris(send_time(at_paris(2, 22, 30), NIGHT, None)) == paris(at_paris(3, 8))
    assert paris(send_time(at_paris(3, 3), NIGHT, None)) == paris(at_paris(3, 8))
    assert send_time(at_paris(3, 20, 59), NIGHT, None) == at_paris(3, 20, 59)
    assert paris(send_time(at_paris(3, 21), NIGHT, None)) == paris(at_paris(4, 8))
    assert send_time(at_paris(3, 8), NIGHT, None) == at_paris(3, 8)


def test_quiet_hours_use_the_customers_time_zone_and_fall_back_on_a_bad_one():
    tokyo_night = at_paris(3, 15)  # 23:00 in Tokyo
    moved = datetime.fromtimestamp(
        send_time(tokyo_night, NIGHT, "Asia/Tokyo") / 1000, ZoneInfo("Asia/Tokyo")
    )
    assert (moved.day, moved.hour) == (4, 8)
    assert send_time(tokyo_night, NIGHT, "Not/AZone") == tokyo_night  # 15:00 in Paris


@given(
    st.integers(T0 - 400 * DAY, T0 + 400 * DAY),
    st.sampled_from(
        ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Sydney", "UTC"]
    ),
    st.tuples(st.integers(0, 23), st.integers(0, 23)),
)
@settings(max_examples=300, deadline=None)
def test_send_time_is_never_quiet_never_earlier_and_within_a_day(at_ms, zone, hours):
    quiet = QuietHours(hours[0] * 60, hours[1] * 60, zone)
    sent = send_time(at_ms, quiet, None)
    assert at_ms <= sent < at_ms + DAY + H  # a day, and an hour for a DST change
    local = datetime.fromtimestamp(sent / 1000, ZoneInfo(zone))
    minute = local.hour * 60 + local.minute
    start, end = quiet.start_minute, quiet.end_minute
    is_quiet = (start <= minute < end) if start < end else (minute >= start or minute < end)
    assert not is_quiet or start == end


# --- determinism ---------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(histories, st.integers(0, 10**6), st.integers(1, 6))
def test_any_arrival_order_batching_or_restart_decides_the_same(events, seed, batch):
    events = [e._replace(ts_ms=T0 + e.ts_ms) for e in events]
    in_order = summary(*decisions(events, batch_size=len(events) or 1))
    again = summary(*decisions(shuffled(events, seed), batch_size=batch, restart=True))
    assert again == in_order


def test_a_watermark_jump_decides_every_trigger_it_passes_in_event_time_order():
    """Ticks after an idle spell move the watermark far at once: same as step by step."""
    config = only_rules("csat_after_delivery", cap_ms=14 * DAY, channel_cap_ms={})
    events = two_deliveries(3 * DAY)
    state = replace(new_state(), identified=True)
    out = advance(config, add_events(state, events), "c", T0 - DAY)  # nothing final yet
    assert out.invitations == out.suppressions == []
    jumped = advance(config, out.state, "c", FAR_FUTURE)
    assert [r["anchor_event_id"] for r in jumped.invitations] == ["ad"]
    assert [(r["anchor_event_id"], r["reason"]) for r in jumped.suppressions] == [("bd", "capped")]
    assert summary(*decisions(events, config)) == summary(
        {r["invitation_id"]: r for r in jumped.invitations},
        {r["invitation_id"]: r for r in jumped.suppressions},
    )


# --- segments ------------------------------------------------------------------------


def test_segments_come_from_events_or_from_order_tiers():
    tiers = Segments(
        from_events=True,
        tiers=(Tier("platinum", 10, 2000), Tier("gold", 4, 500), Tier("silver", 1)),
        default="prospect",
    )
    assert segment_of(tiers, {}, Orders(0, 0.0)) == "prospect"
    assert segment_of(tiers, {}, Orders(1, 10.0)) == "silver"
    assert segment_of(tiers, {}, Orders(2, 600.0)) == "gold"  # by value
    assert segment_of(tiers, {}, Orders(10, 0.0)) == "platinum"  # by count
    assert segment_of(tiers, {"segment": Stamped(5, "vip")}, Orders(10, 0.0)) == "vip"
    ignore_crm = dataclasses.replace(tiers, from_events=False)
    assert segment_of(ignore_crm, {"segment": Stamped(5, "vip")}, Orders(4, 0.0)) == "gold"


def test_purchases_move_a_customer_up_a_tier_in_event_time():
    rule = dataclasses.replace(
        CONFIG.surveys.rules["csat_after_delivery"], sample=(("default", 1),)
    )
    config = with_surveys(rules={"csat_after_delivery": rule}, cap_ms=0, channel_cap_ms={})
    config = dataclasses.replace(
        config,
        segments=dataclasses.replace(
            config.segments, tiers=(Tier("gold", value=500), Tier("silver", orders=1))
        ),
    )
    events = [*delivered_purchase(T0, "a"), *delivered_purchase(T0 + 8 * DAY, "b")]
    events[1] = events[1]._replace(extras={"amount": 400})
    events[4] = events[4]._replace(extras={"amount": 200})
    invited, _ = decisions(events, config)
    by_anchor = {r["anchor_event_id"]: r["segment"] for r in invited.values()}
    assert by_anchor == {"ad": "silver", "bd": "gold"}
