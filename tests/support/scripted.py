"""Scripted customers whose journeys, leaks and survey decisions the tests know exactly."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from streams.core.guardrails import invitation_id, sampled_in
from streams.core.ingest import kafka_partition

JOURNEYS = ("purchase", "support_resolution", "onboarding")


STEP_MS = 20_000


def touch(n, kind, t_ms, customer_id=None, anonymous_id=None):
    event = {
        "event_id": f"{customer_id or anonymous_id}-{n}",
        "type": kind,
        "ts": datetime.fromtimestamp(t_ms / 1000, UTC).isoformat(timespec="milliseconds"),
        "channel": "web",
        "source": "site",
    }
    if customer_id:
        event["customer_id"] = customer_id
    if anonymous_id:
        event["anonymous_id"] = anonymous_id
    return event


def journey_script(i, t0):
    """(events, jitter_ms, expected journeys, expected leaks) of customer number i."""
    c = f"cust-{i:04d}"
    kind = i % 8
    t = [t0 + k * STEP_MS for k in range(8)]
    if kind == 0:  # a known customer buys
        path = ["ad_click", "site_visit", "add_to_cart", "checkout_started", "purchase"]
        events = [touch(k, p, t[k], customer_id=c) for k, p in enumerate(path)]
        return events, 0, {("purchase", c, "completed", "purchase", tuple(path))}, set()
    if kind == 1:  # anonymous until checkout, delivered, then every other one a detractor
        a = f"anon-{i:04d}"
        events = [
            touch(0, "ad_click", t[0], anonymous_id=a),
            touch(1, "product_view", t[1], anonymous_id=a),
            touch(2, "checkout_started", t[2], customer_id=c, anonymous_id=a),
            touch(3, "purchase", t[3], customer_id=c),
            touch(4, "delivery", t[4], customer_id=c),
        ]
        path = ("ad_click", "product_view", "checkout_started", "purchase", "delivery")
        if i % 16 == 1 or not sampled_in(csat_id(c), 0.8):  # not asked, or not answering
            return events, 0, {("purchase", c, "completed", "delivery", path)}, set()
        answer = touch(5, "survey_response", t[5], customer_id=c)
        score = csat_score(i)
        answer["properties"] = {"metric": "CSAT", "score": score, "invitation_id": csat_id(c)}
        journey = ("purchase", c, "completed", "post_purchase", (*path, "survey_response"))
        leaks = {("detractor_feedback", c, f"{c}-5")} if score <= 2 else set()
        return [*events, answer], 0, {journey}, leaks
    if kind == 2:  # two devices, and the phone browses anonymously after logging in
        phone, laptop = f"phone-{i:04d}", f"laptop-{i:04d}"
        events = [
            touch(0, "site_visit", t[0], anonymous_id=phone),
            touch(1, "product_view", t[1], anonymous_id=laptop),
            touch(2, "add_to_cart", t[2], customer_id=c, anonymous_id=phone),
            touch(3, "checkout_started", t[3], customer_id=c, anonymous_id=laptop),
            touch(4, "site_visit", t[4], anonymous_id=phone),
        ]
        path = ("site_visit", "product_view", "add_to_cart", "checkout_started", "site_visit")
        return (
            events,
            0,
            {("purchase", c, "open", "checkout", path)},
            {("abandoned_checkout", c, f"{c}-3")},
        )  # checkout started, no purchase within 1 h
    if kind == 3:  # sent out of order, within the allowed lateness
        path = ["site_visit", "product_view", "add_to_cart", "purchase"]
        events = [touch(k, p, t[k], customer_id=c) for k, p in enumerate(path)]
        return events, 45_000, {("purchase", c, "completed", "purchase", tuple(path))}, set()
    if kind == 4:  # a support case, resolved, and the effort it took (a survey answer)
        path = ["support_call", "ticket_updated", "ticket_resolved"]
        events = [touch(k, p, t[k], customer_id=c) for k, p in enumerate(path)]
        answer = touch(3, "survey_response", t[3], customer_id=c)
        answer["properties"] = {"metric": "ces", "score": ces_score(i), "invitation_id": ces_id(c)}
        journey = ("support_resolution", c, "completed", "resolved", tuple(path))
        return [*events, answer], 0, {journey}, set()
    if kind == 5:  # abandons at checkout
        path = ["site_visit", "add_to_cart"]
        events = [touch(k, p, t[k], customer_id=c) for k, p in enumerate(path)]
        return events, 0, {("purchase", c, "open", "checkout", tuple(path))}, set()
    if kind == 6:  # calls support three times within a week, unresolved; some opted out
        path = ["support_call"] * 3
        events = [touch(k, p, t[k], customer_id=c) for k, p in enumerate(path)]
        if i % 16 == 6:
            events.insert(0, touch(9, "unsubscribe", t[0], customer_id=c))
        return (
            events,
            0,
            {("support_resolution", c, "open", "contact", tuple(path))},
            {("repeated_support_contact", c, f"{c}-0")},
        )
    path = ["signup", "first_use"]  # onboarding under way, plus a signal outside journeys
    events = [touch(k, p, t[k], customer_id=c) for k, p in enumerate(path)]
    events.append(touch(2, "login", t[2], customer_id=c))
    answer = touch(3, "survey_response", t[3], customer_id=c)  # from another survey tool
    answer["properties"] = {"metric": "nps", "score": nps_score(i), "about": "first_use"}
    events.append(answer)
    return events, 0, {("onboarding", c, "open", "first_use", tuple(path))}, set()


def csat_score(i):
    return 1 if (i // 16) % 2 == 0 else 5


def nps_score(i):
    return (10, 9, 8, 3)[(i // 8) % 4]


def ces_score(i):
    return 2 if (i // 8) % 2 == 0 else 6


def cust(i):
    return f"cust-{i:04d}"


def csat_id(c):
    return invitation_id("csat_after_delivery", f"{c}-4")


def ces_id(c):
    return invitation_id("ces_after_support_call", f"{c}-0")


def script(i, t0):
    """journey_script, and the survey decisions expected: {(rule, customer, anchor, outcome)}."""
    events, jitter, journeys, leaks = journey_script(i, t0)
    c, kind = f"cust-{i:04d}", i % 8
    surveys = set()
    if kind == 1:  # delivered: CSAT, for 80% of the silver segment (one purchase)
        outcome = "sent" if sampled_in(csat_id(c), 0.8) else "sampled_out"
        surveys.add(("csat_after_delivery", c, f"{c}-4", outcome))
    if kind == 2:  # abandoned checkout: why didn't you buy
        surveys.add(("why_not_buy", c, f"{c}-3", "sent"))
    if kind == 4:  # support call: CES by sms
        surveys.add(("ces_after_support_call", c, f"{c}-0", "sent"))
    if kind == 6:  # three calls in one case: once per case, none if opted out
        first = "opted_out" if i % 16 == 6 else "sent"
        again = "opted_out" if i % 16 == 6 else "duplicate"
        surveys |= {
            ("ces_after_support_call", c, f"{c}-{k}", first if k == 0 else again) for k in range(3)
        }
    return events, jitter, journeys, leaks, surveys


def arrival_order(customers, seed=11):
    """Globally in time order, each event delayed by at most its customer's jitter."""
    rng = random.Random(seed)
    timed = []
    for events, jitter, *_ in customers:
        for event in events:
            ts = datetime.fromisoformat(event["ts"]).timestamp() * 1000
            timed.append((ts + rng.randint(0, jitter), event["event_id"], event))
    return [event for _, _, event in sorted(timed)]


def scripted_run(now_ms: int) -> tuple[list[dict], set, set, set]:
    """(events in arrival order, expected journeys, leaks, survey decisions).

    Customers start 20 to 19.4 hours ago, so that every invitation's send time (its delay,
    pushed out of the quiet hours by up to 11 hours) has passed whatever the time of day,
    and no 1-day stall is due; then a clock touchpoint (a signal in no journey)
    on every partition brings each watermark to the present, deciding every leak due.
    """
    customers = [script(i, now_ms - 20 * 3_600_000 + i * 7_000) for i in range(300)]
    events = arrival_order(customers)
    clocks = {kafka_partition(f"clock-{n}", 4): f"clock-{n}" for n in range(50)}
    assert len(clocks) == 4
    events += [touch(0, "login", now_ms - 120_000, customer_id=key) for key in clocks.values()]
    return (
        events,
        set().union(*(c[2] for c in customers)),
        set().union(*(c[3] for c in customers)),
        set().union(*(c[4] for c in customers)),
    )


def decisions(client) -> tuple[set, set, set]:
    """(journeys, leaks, survey decisions) as ClickHouse holds them, in the script's terms."""
    rows = client.query(
        "SELECT journey, customer_key, status, stage, path FROM journeys FINAL "
        "WHERE status != 'superseded'"
    ).result_rows
    leaks = client.query("SELECT rule, customer_key, anchor_event_id FROM leaks FINAL")
    invited = client.query(
        "SELECT rule, customer_key, anchor_event_id, 'sent' FROM survey_invitations FINAL"
    ).result_rows
    suppressed = client.query(
        "SELECT rule, customer_key, anchor_event_id, reason FROM survey_suppressions FINAL"
    ).result_rows
    assert len(set(invited) | set(suppressed)) == len(invited) + len(suppressed)
    journeys = {(j, c, s, st, tuple(p)) for j, c, s, st, p in rows}
    assert len(journeys) == len(rows)
    return journeys, set(leaks.result_rows), set(invited) | set(suppressed)
