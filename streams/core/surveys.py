"""Survey invitations: which triggers fire, and when each is decided and sent. Pure.

Decided on the customer's own partition, in event time: a touchpoint is looked at once
the watermark has passed it (nothing earlier can still arrive), in (ts, event_id)
order, from a cursor kept in the customer's state. So a replay, a restart or another
batch size decides the same invitations, and two triggers of one customer are never
decided concurrently. Triggers:

    touchpoint   a touchpoint of a type (optionally within a journey)
    completion   a journey completes, or, completed, first reaches a stage
    leak         a leak rule fires (the leak's decision time is the trigger time)
    relational   an active customer, at most once per `every`

Each trigger passes the guardrails (`streams.core.guardrails.at_trigger`: opt-out,
hand-off, duplicate, outranked, sampling, caps; quiet hours set its send time). One that
passes is held in the customer's state until the watermark reaches its `send_at`, and
checked again then (`streams.core.guardrails.at_send_time`), in event time: it is sent,
dropped with a reason, or held on (`held_for` says why). So nothing is sent that would
not pass the guardrails at send time.

An invitation's id is its rule and the touchpoint it is about: a sender can dedupe on
it, and a restart that re-sends a decision re-sends the same id.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from streams.config import Config
from streams.config.rules import SURVEY_CHANNELS, Segments, SurveyRule, Surveys
from streams.core.guardrails import (
    DROP,
    KEEP,
    Trigger,
    at_send_time,
    at_trigger,
    expiry_ms,
    send_time,
)
from streams.core.journeys import Instance
from streams.core.state import Booking, Cursor, Event, Orders, Span, event_time, new_contact

MAX_JOURNEYS_PER_RULE = 50  # journey ids remembered per rule, for the duplicate check
EVENT, TRIGGER, SEND = 0, 1, 2  # at the same time: touchpoints first, sends last


@dataclass
class Decisions:
    contact: dict
    invitations: list[dict] = field(default_factory=list)
    suppressions: list[dict] = field(default_factory=list)


def unseen(contact: dict, events: list[Event], watermark_ms: int) -> list[Event]:
    """Events (sorted by position) past the cursor and not after the watermark: final,
    and not yet decided on."""
    cursor = contact.get("cursor")
    end = bisect_right(events, watermark_ms, key=event_time)
    if cursor is None:
        return events[:end]
    # Only events from the cursor's time on can pass: look at those alone.
    cursor_ms, at_cursor = cursor.ts_ms, set(cursor.event_ids)
    start = bisect_left(events, cursor_ms, key=event_time)
    stop = max(end, bisect_right(events, cursor_ms, key=event_time))
    return [
        e
        for e in events[start:stop]
        if cursor_ms < e.ts_ms <= watermark_ms
        or (e.ts_ms == cursor_ms and e.event_id not in at_cursor)
    ]


def moved_cursor(contact: dict, fresh: list[Event]) -> Cursor | None:
    if not fresh:
        return contact.get("cursor")
    last_ms = fresh[-1].ts_ms
    ids = [e.event_id for e in fresh if e.ts_ms == last_ms]
    cursor = contact.get("cursor")
    if cursor is not None and cursor.ts_ms == last_ms:
        ids = cursor.event_ids + ids
    return Cursor(last_ms, ids)


def find_triggers(
    surveys: Surveys,
    fresh: list[Event],
    instances: Iterable,
    leak_rows: Iterable[dict],
    contact: dict,
    watermark_ms: int,
) -> list[Trigger]:
    """Triggers fired by the fresh touchpoints, the journeys they are in, and new leaks.

    A completion fires once its touchpoint is final, even if it is older than the cursor:
    an identity merge can bring the journey it completes after the cursor passed it.
    """
    index = surveys.index
    triggers: list[Trigger] = []
    for instance in instances:
        journey = instance.journey
        for rule in index.on_completion.get(journey.name, ()):
            anchor = _completion_anchor(rule, instance)
            done = contact.get("completed", {}).get(rule.name, [])
            if anchor is not None and anchor.ts_ms <= watermark_ms and anchor.event_id not in done:
                stage = journey.stages[journey.stage_of[anchor.type]]
                triggers.append(
                    Trigger(rule, anchor.ts_ms, anchor, instance.id, journey.name, stage)
                )
    last = dict(contact["relational"])
    fired: list[tuple[SurveyRule, Event]] = []  # touchpoint and relational rules, in order
    for event in fresh:
        fired += [(rule, event) for rule in index.on_touchpoint.get(event.type, ())]
        for rule in index.relational:
            if _relational_due(rule, event, last):
                last[rule.name] = event.ts_ms
                fired.append((rule, event))
    where = _journeys_of({e.event_id for _, e in fired}, instances) if fired else {}
    for rule, event in fired:
        journey_id, journey, stage = where.get(event.event_id, ("", "", ""))
        if rule.trigger == "touchpoint" and rule.journey not in (None, journey):
            continue
        triggers.append(Trigger(rule, event.ts_ms, event, journey_id, journey, stage))
    for row in leak_rows:
        for rule in index.on_leak.get(row["rule"], ()):
            anchor = Event(row["anchor_ms"], row["anchor_event_id"], row["anchor_type"], "")
            triggers.append(
                Trigger(
                    rule, row["due_ms"], anchor, row["journey_id"], row["journey"], row["stage"]
                )
            )
    return sorted(
        triggers, key=lambda t: (t.at_ms, -t.rule.priority, t.rule.name, t.anchor.event_id)
    )


def _journeys_of(event_ids: set[str], instances: Iterable) -> dict[str, tuple[str, str, str]]:
    """Event id -> (journey id, journey, stage) of the first instance holding it."""
    where: dict[str, tuple[str, str, str]] = {}
    for instance in instances:
        journey = instance.journey
        for event in instance.events:
            if event.event_id in event_ids and event.event_id not in where:
                stage = journey.stages[journey.stage_of[event.type]]
                where[event.event_id] = (instance.id, journey.name, stage)
    return where


def _relational_due(rule: SurveyRule, event: Event, last: dict[str, int]) -> bool:
    """An activity touchpoint, and `every` since the rule last fired for the customer."""
    if rule.touchpoints and event.type not in rule.touchpoints:
        return False
    return rule.name not in last or event.ts_ms - last[rule.name] >= rule.every_ms


def _completion_anchor(rule: SurveyRule, instance: Instance) -> Event | None:
    """The touchpoint that completed the journey, or first reached `rule.stage` after."""
    if instance.completed_ms is None:
        return None
    journey = instance.journey
    wanted = journey.stages.index(rule.stage) if rule.stage else journey.goal_stage
    for event in instance.events:
        if event.ts_ms >= instance.completed_ms and journey.stage_of[event.type] >= wanted:
            return event
    return None


def decide(
    config: Config,
    contact: dict,
    profile: dict,
    customer_key: str,
    fresh: list[Event],
    triggers: list[Trigger],
    watermark_ms: int,
    now_ms: int,
    journey_spans: dict[str, list[Span]] | None = None,
    task_spans: Iterable[Span] = (),
) -> Decisions:
    """Apply the fresh touchpoints (opt-outs, orders), decide each trigger and send each
    held invitation the watermark has reached, all in event-time order.

    `journey_spans` (journey -> (journey id, opened, ended or None) of the customer's
    instances) and `task_spans` (follow-up tasks, the same) serve `unless_open` and
    `unless_follow_up`.
    """
    surveys = config.surveys
    contact = {**new_contact(), **contact}
    # Copies are shallow: lists inside are replaced, never changed in place.
    sent = list(contact["sent"])
    held = list(contact["held"])
    journeys = dict(contact["journeys"])
    relational = dict(contact["relational"])
    completed = dict(contact["completed"])
    opted_out = contact["opted_out"]
    orders = contact["orders"]
    out = Decisions(contact)
    spans = journey_spans or {}

    if not triggers and not any(row["send_at_ms"] <= watermark_ms for row in held):
        # Nothing to decide or send (most steps): only the touchpoints' effects.
        for event in fresh:
            opted_out, orders = _applied(event, surveys, opted_out, orders)
        out.contact = _moved(contact, fresh, surveys, watermark_ms, opted_out, orders, sent)
        return out

    # A heap: held invitations become due while it is worked through.
    timeline: list[tuple[int, int, int, Any]] = [
        (e.ts_ms, EVENT, i, e) for i, e in enumerate(fresh)
    ]
    timeline += [(t.at_ms, TRIGGER, i, t) for i, t in enumerate(triggers)]
    timeline += [(row["send_at_ms"], SEND, i, row) for i, row in _due(held, watermark_ms)]
    heapq.heapify(timeline)
    order = len(timeline)  # ties broken by arrival in the heap: deterministic
    sent_at_time: dict[int, bool] = {}  # trigger time -> an invitation passed then
    while timeline:
        at_ms, what, _, item = heapq.heappop(timeline)
        if what == EVENT:
            opted_out, orders = _applied(item, surveys, opted_out, orders)
            continue
        if what == SEND:
            held = [row for row in held if row is not item]
            action, row, look_again = at_send_time(
                item, at_ms, opted_out, sent, surveys, spans, task_spans,
                _profile(profile, "time_zone"),
            )  # fmt: skip
            if action == KEEP:
                held.append(row)
                if look_again is not None and look_again <= watermark_ms:
                    heapq.heappush(timeline, (look_again, SEND, order, row))
                    order += 1
            elif action == DROP:
                out.suppressions.append({**row, "decided_ms": now_ms})
            else:
                out.invitations.append({**row, "decided_ms": now_ms})
                sent.append(_booking(row))  # its send_at_ms is now at_ms
            continue
        trigger = cast(Trigger, item)
        rule = trigger.rule
        if rule.trigger == "relational":
            relational[rule.name] = trigger.at_ms
        elif rule.trigger == "completion":
            ids = completed.get(rule.name, [])
            completed[rule.name] = [*ids, trigger.anchor.event_id][-MAX_JOURNEYS_PER_RULE:]
        segment = segment_of(config.segments, profile, orders)
        channel = channel_for(rule, surveys, profile)
        send_at = send_time(
            trigger.at_ms + rule.delay_ms, surveys.quiet_hours, _profile(profile, "time_zone")
        )
        booked = sent + [_booking(row) for row in held]
        reason, detail = at_trigger(
            trigger, opted_out, task_spans, journeys, sent_at_time, segment, booked, surveys,
            channel, send_at,
        )  # fmt: skip
        row = invitation_row(trigger, customer_key, channel, segment, send_at, now_ms)
        if reason:
            out.suppressions.append({**row, "reason": reason, "detail": detail})
            continue
        held.append(row)
        if send_at <= watermark_ms:
            heapq.heappush(timeline, (send_at, SEND, order, row))
            order += 1
        sent_at_time[trigger.at_ms] = True
        if trigger.journey_id:
            ids = journeys.setdefault(rule.name, [])
            journeys[rule.name] = [*ids, trigger.journey_id][-MAX_JOURNEYS_PER_RULE:]

    out.contact = _moved(contact, fresh, surveys, watermark_ms, opted_out, orders, sent)
    out.contact.update(held=held, journeys=journeys, relational=relational, completed=completed)
    return out


def _applied(
    event: Event, surveys: Surveys, opted_out: bool, orders: Orders
) -> tuple[bool, Orders]:
    """A touchpoint's effect on the guardrails: opt-out or opt-in, and orders."""
    if event.type in surveys.opt_out:
        opted_out = True
    elif event.type in surveys.opt_in:
        opted_out = False
    if event.type == "purchase":
        orders = Orders(orders.placed + 1, orders.value + _amount(event))
    return opted_out, orders


def _moved(
    contact: dict,
    fresh: list[Event],
    surveys: Surveys,
    watermark_ms: int,
    opted_out: bool,
    orders: Orders,
    sent: list[Booking],
) -> dict:
    """The contact state past `fresh`: cursor moved, sent bookings out of reach dropped."""
    reach_from = watermark_ms - surveys.reach_ms
    return {
        **contact,
        "cursor": moved_cursor(contact, fresh),
        "opted_out": opted_out,
        "orders": orders,
        "sent": [s for s in sent if s.send_at_ms > reach_from],
    }


def _due(held: list[dict], watermark_ms: int) -> Iterable[tuple[int, dict]]:
    return ((i, row) for i, row in enumerate(held) if row["send_at_ms"] <= watermark_ms)


def held_due_ms(contact: dict, surveys: Surveys, watermark_ms: int) -> int | None:
    """When the held invitations next need a look without new events: the first to come
    due, or the expiry of one waiting for a journey to end. None if there are none."""
    times = [
        row["send_at_ms"] if row["send_at_ms"] > watermark_ms else expiry_ms(row, surveys)
        for row in contact.get("held", ())
    ]
    return min(times, default=None)


def has_due(contact: dict, watermark_ms: int) -> bool:
    return any(row["send_at_ms"] <= watermark_ms for row in contact.get("held") or ())


def _booking(row: dict) -> Booking:
    """An invitation as an entry of `sent`: held, it holds its place under the caps."""
    return Booking(row["send_at_ms"], row["channel"], row["rule"], row["trigger_ms"])


def segment_of(segments: Segments, profile: dict, orders: Orders) -> str:
    """The CRM's segment if events carry one (and it is trusted), else the orders' tier."""
    from_events = _profile(profile, "segment")
    if segments.from_events and from_events:
        return from_events
    count, value = orders.placed, orders.value
    for tier in segments.tiers:
        if (tier.orders is not None and count >= tier.orders) or (
            tier.value is not None and value >= tier.value
        ):
            return tier.name
    return segments.default


def channel_for(rule: SurveyRule, surveys: Surveys, profile: dict) -> str:
    if rule.channel != "preferred":
        return rule.channel
    preferred = _profile(profile, "preferred_channel")
    return (
        preferred
        if preferred is not None and preferred in SURVEY_CHANNELS
        else surveys.default_channel
    )


def _profile(profile: dict, attribute: str) -> str | None:
    value = profile.get(attribute)
    return value.value if value else None


def _amount(event: Event) -> float:
    extras = event.extras or {}
    amount = extras.get("amount")
    return float(amount) if isinstance(amount, int | float) else 0.0


def invitation_row(
    trigger: Trigger, customer_key: str, channel: str, segment: str, send_at: int, now_ms: int
) -> dict:
    rule = trigger.rule
    return {
        "invitation_id": trigger.invitation_id,
        "rule": rule.name,
        "trigger": rule.trigger,
        "metric": rule.metric,
        "customer_key": customer_key,
        "journey_id": trigger.journey_id,
        "journey": trigger.journey,
        "stage": trigger.stage,
        "touchpoint": trigger.anchor.type,
        "anchor_event_id": trigger.anchor.event_id,
        "channel": channel,
        "segment": segment,
        "priority": rule.priority,
        "trigger_ms": trigger.at_ms,
        "send_at_ms": send_at,
        "decided_ms": now_ms,
    }
