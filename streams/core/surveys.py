"""Survey invitations: which triggers fire, and the guardrails each must pass. Pure.

Decided on the customer's own partition, in event time: a touchpoint is looked at once
the watermark has passed it (nothing earlier can still arrive), in (ts, event_id)
order, from a cursor kept in the customer's state. So a replay, a restart or another
batch size decides the same invitations, and two triggers of one customer are never
decided concurrently. Triggers:

    touchpoint   a touchpoint of a type (optionally within a journey)
    completion   a journey completes, or, completed, first reaches a stage
    leak         a leak rule fires (the leak's decision time is the trigger time)
    relational   an active customer, at most once per `every`

Guardrails at the trigger, in order: opted out, handed off (a person's follow-up task
is open), duplicate (same rule and journey), outranked (a rule with a higher priority
sent at the same trigger time), sampled out (a deterministic draw on the invitation
id), capped (another invitation too close, overall or on the channel, counting those
still held). Quiet hours move `send_at` out of the night in the customer's time zone.

An invitation that passes is held in the customer's state until the watermark reaches
its `send_at`, and checked again then, in event time: an opt-out or a follow-up task
since cancels it, another journey open (`unless_open`) or another rule's recent
invitation (`unless_surveyed_within`) holds it on until that ends, and a cap it would
now break cancels it. What waits longer than `max_wait` after its trigger expires. So
nothing is sent that would not pass the guardrails at send time; the row says what it
waited for (`held_for`).

An invitation's id is its rule and the touchpoint it is about: a sender can dedupe on
it, and a restart that re-sends a decision re-sends the same id.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.config import Config
from streams.config.durations import duration_text
from streams.config.rules import SURVEY_CHANNELS, QuietHours, Segments, SurveyRule, Surveys

MAX_JOURNEYS_PER_RULE = 50  # journey ids remembered per rule, for the duplicate check
OPTED_OUT, DUPLICATE, OUTRANKED, SAMPLED_OUT, CAPPED = (
    "opted_out",
    "duplicate",
    "outranked",
    "sampled_out",
    "capped",
)
HANDED_OFF, EXPIRED, RULE_REMOVED = "handed_off", "expired", "rule_removed"
EVENT, TRIGGER, SEND = 0, 1, 2  # at the same time: touchpoints first, sends last
SEND_NOW, DROP, KEEP = "send", "drop", "keep"  # what becomes of a held invitation when due


def invitation_id(rule: str, anchor_event_id: str) -> str:
    return hashlib.blake2b(f"survey/{rule}/{anchor_event_id}".encode(), digest_size=12).hexdigest()


def sampled_in(invitation: str, rate: float) -> bool:
    """A draw that is the same for the same invitation, wherever and whenever it is made."""
    if rate >= 1:
        return True
    draw = int.from_bytes(hashlib.blake2b(invitation.encode(), digest_size=8).digest(), "big")
    return draw < rate * 2**64


@dataclass(frozen=True)
class Trigger:
    rule: SurveyRule
    at_ms: int  # event time at which it fired
    anchor: list  # the touchpoint the survey is about: [ts_ms, event_id, type, channel, ...]
    journey_id: str = ""
    journey: str = ""
    stage: str = ""

    @property
    def invitation_id(self) -> str:
        return invitation_id(self.rule.name, self.anchor[1])


@dataclass
class Decisions:
    contact: dict
    invitations: list[dict] = field(default_factory=list)
    suppressions: list[dict] = field(default_factory=list)


def new_contact() -> dict:
    return {
        "cursor": None,  # [ts_ms, [event ids at ts_ms]]: touchpoints up to here are decided
        "opted_out": False,
        "orders": [0, 0.0],  # purchases, sum of their amounts
        "sent": [],  # [[send_at_ms, channel, rule, trigger_ms]] within the caps' reach
        "held": [],  # invitation rows waiting for their send time (see decide)
        "journeys": {},  # rule -> journey ids it invited for
        "relational": {},  # rule -> trigger time of its last decision
        "completed": {},  # completion rule -> anchors decided (a merge may bring them late)
    }


def unseen(contact: dict, events: Iterable[list], watermark_ms: int) -> list[list]:
    """Events past the cursor and not after the watermark: final, and not yet decided on."""
    cursor = contact.get("cursor")
    if cursor is None:
        return [e for e in events if e[0] <= watermark_ms]
    cursor_ms, at_cursor = cursor[0], set(cursor[1])
    return [
        e
        for e in events
        if cursor_ms < e[0] <= watermark_ms or (e[0] == cursor_ms and e[1] not in at_cursor)
    ]


def moved_cursor(contact: dict, fresh: list[list]) -> list | None:
    if not fresh:
        return contact.get("cursor")
    last_ms = fresh[-1][0]
    ids = [e[1] for e in fresh if e[0] == last_ms]
    cursor = contact.get("cursor")
    if cursor is not None and cursor[0] == last_ms:
        ids = cursor[1] + ids
    return [last_ms, ids]


def find_triggers(
    surveys: Surveys,
    fresh: list[list],
    instances: Iterable,
    leak_rows: Iterable[dict],
    contact: dict,
    watermark_ms: int,
) -> list[Trigger]:
    """Triggers fired by the fresh touchpoints, the journeys they are in, and new leaks.

    A completion fires once its touchpoint is final, even if it is older than the cursor:
    an identity merge can bring the journey it completes after the cursor passed it.
    """
    fresh_ids = {e[1] for e in fresh}
    where: dict[str, tuple[str, str, str]] = {}  # event id -> (journey id, journey, stage)
    triggers: list[Trigger] = []
    for instance in instances:
        journey = instance.journey
        for event in instance.events:
            if event[1] in fresh_ids:
                stage = journey.stages[journey.stage_of[event[2]]]
                where.setdefault(event[1], (instance.id, journey.name, stage))
        for rule in surveys.rules.values():
            if rule.trigger == "completion" and rule.journey == journey.name:
                anchor = _completion_anchor(rule, instance)
                done = contact.get("completed", {}).get(rule.name, [])
                if anchor is not None and anchor[0] <= watermark_ms and anchor[1] not in done:
                    stage = journey.stages[journey.stage_of[anchor[2]]]
                    triggers.append(
                        Trigger(rule, anchor[0], anchor, instance.id, journey.name, stage)
                    )
    last = dict(contact["relational"])
    for event in fresh:
        journey_id, journey, stage = where.get(event[1], ("", "", ""))
        for rule in surveys.rules.values():
            if rule.trigger == "touchpoint" and event[2] == rule.touchpoint:
                if rule.journey is None or rule.journey == journey:
                    triggers.append(Trigger(rule, event[0], event, journey_id, journey, stage))
            elif rule.trigger == "relational" and _relational_due(rule, event, last):
                last[rule.name] = event[0]
                triggers.append(Trigger(rule, event[0], event, journey_id, journey, stage))
    for row in leak_rows:
        for rule in surveys.rules.values():
            if rule.trigger == "leak" and rule.leak == row["rule"]:
                anchor = [row["anchor_ms"], row["anchor_event_id"], row["anchor_type"], ""]
                triggers.append(
                    Trigger(
                        rule, row["due_ms"], anchor, row["journey_id"], row["journey"], row["stage"]
                    )
                )
    return sorted(triggers, key=lambda t: (t.at_ms, -t.rule.priority, t.rule.name, t.anchor[1]))


def _relational_due(rule: SurveyRule, event: list, last: dict[str, int]) -> bool:
    """An activity touchpoint, and `every` since the rule last fired for the customer."""
    if rule.touchpoints and event[2] not in rule.touchpoints:
        return False
    return rule.name not in last or event[0] - last[rule.name] >= rule.every_ms


def _completion_anchor(rule: SurveyRule, instance) -> list | None:
    """The touchpoint that completed the journey, or first reached `rule.stage` after."""
    if instance.completed_ms is None:
        return None
    journey = instance.journey
    wanted = journey.stages.index(rule.stage) if rule.stage else journey.goal_stage
    for event in instance.events:
        if event[0] >= instance.completed_ms and journey.stage_of[event[2]] >= wanted:
            return event
    return None


def decide(
    config: Config,
    contact: dict,
    profile: dict,
    customer_key: str,
    fresh: list[list],
    triggers: list[Trigger],
    watermark_ms: int,
    now_ms: int,
    journey_spans: dict[str, list[tuple]] | None = None,
    task_spans: Iterable[tuple] = (),
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

    # A heap: held invitations become due while it is worked through.
    timeline = [(e[0], EVENT, i, e) for i, e in enumerate(fresh)]
    timeline += [(t.at_ms, TRIGGER, i, t) for i, t in enumerate(triggers)]
    timeline += [(row["send_at_ms"], SEND, i, row) for i, row in _due(held, watermark_ms)]
    heapq.heapify(timeline)
    order = len(timeline)  # ties broken by arrival in the heap: deterministic
    sent_at_time: dict[int, bool] = {}  # trigger time -> an invitation passed then
    while timeline:
        at_ms, what, _, item = heapq.heappop(timeline)
        if what == EVENT:
            if item[2] in surveys.opt_out:
                opted_out = True
            elif item[2] in surveys.opt_in:
                opted_out = False
            if item[2] == "purchase":
                orders = [orders[0] + 1, orders[1] + _amount(item)]
            continue
        if what == SEND:
            held = [row for row in held if row is not item]
            action, row, look_again = _at_send_time(
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
        trigger: Trigger = item
        rule = trigger.rule
        if rule.trigger == "relational":
            relational[rule.name] = trigger.at_ms
        elif rule.trigger == "completion":
            ids = completed.get(rule.name, [])
            completed[rule.name] = [*ids, trigger.anchor[1]][-MAX_JOURNEYS_PER_RULE:]
        segment = segment_of(config.segments, profile, orders)
        channel = channel_for(rule, surveys, profile)
        send_at = send_time(
            trigger.at_ms + rule.delay_ms, surveys.quiet_hours, _profile(profile, "time_zone")
        )
        booked = sent + [_booking(row) for row in held]
        reason, detail = _suppression(
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

    out.contact = {
        **contact,
        "cursor": moved_cursor(contact, fresh),
        "opted_out": opted_out,
        "orders": orders,
        "sent": [s for s in sent if s[0] > watermark_ms - _reach(surveys)],
        "held": held,
        "journeys": journeys,
        "relational": relational,
        "completed": completed,
    }
    return out


def _due(held: list[dict], watermark_ms: int) -> Iterable[tuple[int, dict]]:
    return ((i, row) for i, row in enumerate(held) if row["send_at_ms"] <= watermark_ms)


def held_due_ms(contact: dict, surveys: Surveys, watermark_ms: int) -> int | None:
    """When the held invitations next need a look without new events: the first to come
    due, or the expiry of one waiting for a journey to end. None if there are none."""
    times = [
        row["send_at_ms"] if row["send_at_ms"] > watermark_ms else _expiry(row, surveys)
        for row in contact.get("held", ())
    ]
    return min(times, default=None)


def has_due(contact: dict, watermark_ms: int) -> bool:
    return next(_due(contact.get("held", []), watermark_ms), None) is not None


def _expiry(row: dict, surveys: Surveys) -> int:
    return row["trigger_ms"] + surveys.max_wait_ms


def _booking(row: dict) -> list:
    """An invitation as an entry of `sent`: held, it holds its place under the caps."""
    return [row["send_at_ms"], row["channel"], row["rule"], row["trigger_ms"]]


def _reach(surveys: Surveys) -> int:
    """How long a sent invitation matters to the guardrails."""
    waits = [r.unless_surveyed_within_ms for r in surveys.rules.values()]
    return max([surveys.cap_ms, *surveys.channel_cap_ms.values(), *waits])


def _at_send_time(
    row: dict,
    at_ms: int,
    opted_out: bool,
    sent: list[list],
    surveys: Surveys,
    journey_spans: dict[str, list[tuple]],
    task_spans: Iterable[tuple],
    time_zone: str | None,
) -> tuple[str, dict, int | None]:
    """A held invitation looked at, at `at_ms` (its send time, or a time to look again):
    (SEND_NOW, row, None), (DROP, row with the reason, None), or (KEEP, row, look again
    at, or None if not known yet).

    Only what is known at `at_ms` counts: a journey that holds it on is open at `at_ms`,
    and when it ends is used only once the timeline gets there, so that the order and
    batching of events cannot change what is sent or when.
    """

    def drop(reason: str, detail: str) -> tuple[str, dict, None]:
        return DROP, {**row, "reason": reason, "detail": detail}, None

    rule = surveys.rules.get(row["rule"])
    if rule is None:
        return drop(RULE_REMOVED, f"rule {row['rule']} is no longer configured")
    if opted_out:
        return drop(OPTED_OUT, "the customer opted out before it was sent")
    if rule.unless_follow_up and _open_at(task_spans, at_ms):
        return drop(HANDED_OFF, "a follow-up task for a person opened before it was sent")
    expiry = _expiry(row, surveys)
    wait = _waiting_for(rule, row, at_ms, journey_spans, sent)
    if wait is not None:
        until_ms, why = wait
        if expiry <= at_ms:
            return drop(EXPIRED, f"held longer than max_wait: {why}")
        look_again = expiry if until_ms is None else min(until_ms, expiry)
        return KEEP, {**row, "held_for": why}, look_again
    # Released at night, or the customer's time zone learnt meanwhile: the morning.
    later = send_time(at_ms, surveys.quiet_hours, time_zone)
    if expiry <= later:
        return drop(EXPIRED, f"held longer than max_wait: {row.get('held_for') or 'quiet hours'}")
    if later > at_ms:
        return KEEP, {**row, "send_at_ms": later}, later
    if breach := _cap_breach(at_ms, row["channel"], sent, surveys):
        return drop(CAPPED, _cap_detail(breach, "was sent") + " meanwhile")
    return SEND_NOW, {**row, "send_at_ms": at_ms}, None


def _waiting_for(
    rule: SurveyRule,
    row: dict,
    at_ms: int,
    journey_spans: dict[str, list[tuple]],
    sent: list[list],
) -> tuple[int | None, str] | None:
    """What holds the invitation at `at_ms`: (until when, or None if not known yet, why)."""
    for journey in sorted(rule.unless_open):
        span = _open_span(journey_spans.get(journey, ()), at_ms, besides=row["journey_id"])
        if span is not None:
            return span[2], f"a {journey} journey was open"
    window = rule.unless_surveyed_within_ms
    recent = [s for s in sent if s[2] != rule.name and at_ms - window < s[0] <= at_ms]
    if window and recent:
        last = max(recent)
        return last[0] + window, f"{last[2]} was sent within {duration_text(window)}"
    return None


def _open_span(spans: Iterable[tuple], at_ms: int, besides: str = "") -> tuple | None:
    """The first of `spans` ((id, opened, ended or None)) open at `at_ms`, but `besides`."""
    return next(
        (
            span
            for span in spans
            if span[1] <= at_ms and (span[2] is None or at_ms < span[2]) and span[0] != besides
        ),
        None,
    )


def _open_at(spans: Iterable[tuple], at_ms: int) -> bool:
    return _open_span(spans, at_ms) is not None


def _cap_breach(
    send_at: int, channel: str, others: list[list], surveys: Surveys
) -> tuple[str, str] | None:
    """(its rule, "contact" or the channel) of another invitation (of `others`, entries
    of `sent`) within the contact cap or the channel's cap of this one, or None."""
    for other_send_at, other_channel, other_rule, _ in others:
        gap = abs(send_at - other_send_at)
        if gap < surveys.cap_ms:
            return other_rule, "contact"
        if other_channel == channel and gap < surveys.channel_cap_ms.get(channel, 0):
            return other_rule, channel
    return None


def _cap_detail(breach: tuple[str, str], tense: str) -> str:
    other_rule, cap = breach
    if cap == "contact":
        return f"{other_rule} {tense} within the contact cap"
    return f"{other_rule} {tense} on {cap} within its cap"


def _suppression(
    trigger: Trigger,
    opted_out: bool,
    task_spans: Iterable[tuple],
    journeys: dict[str, list[str]],
    sent_at_time: dict[int, bool],
    segment: str,
    booked: list[list],
    surveys: Surveys,
    channel: str,
    send_at: int,
) -> tuple[str, str]:
    """(reason, detail) the trigger is suppressed for, or ("", "") if it passes."""
    rule = trigger.rule
    if opted_out:
        return OPTED_OUT, "the customer opted out of surveys"
    if rule.unless_follow_up and _open_at(task_spans, trigger.at_ms):
        return HANDED_OFF, "a follow-up task for a person is open"
    if trigger.journey_id and trigger.journey_id in journeys.get(rule.name, []):
        return DUPLICATE, f"{rule.name} already invited for journey {trigger.journey_id}"
    if sent_at_time.get(trigger.at_ms):
        return OUTRANKED, "a rule with a higher priority fired at the same time"
    rate = rule.sample_rate(segment)
    if not sampled_in(trigger.invitation_id, rate):
        return SAMPLED_OUT, f"sample rate {rate:g} for segment {segment}"
    if breach := _cap_breach(send_at, channel, booked, surveys):
        return CAPPED, _cap_detail(breach, "is sent")
    return "", ""


def segment_of(segments: Segments, profile: dict, orders: list) -> str:
    """The CRM's segment if events carry one (and it is trusted), else the orders' tier."""
    from_events = _profile(profile, "segment")
    if segments.from_events and from_events:
        return from_events
    count, value = orders
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
    return preferred if preferred in SURVEY_CHANNELS else surveys.default_channel


def send_time(at_ms: int, quiet: QuietHours | None, time_zone: str | None) -> int:
    """`at_ms`, or the end of the quiet hours it falls in, in the customer's time zone."""
    if quiet is None or quiet.start_minute == quiet.end_minute:
        return at_ms
    zone = _zone(time_zone) or _zone(quiet.time_zone) or ZoneInfo("UTC")
    local = datetime.fromtimestamp(at_ms / 1000, zone)
    minute = local.hour * 60 + local.minute
    start, end = quiet.start_minute, quiet.end_minute
    spans_midnight = end < start
    quiet_now = (minute >= start or minute < end) if spans_midnight else start <= minute < end
    if not quiet_now:
        return at_ms
    day = local.date() if minute < end else local.date() + timedelta(days=1)
    wake = datetime.combine(day, time(end // 60, end % 60), tzinfo=zone)
    return int(wake.timestamp() * 1000)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _profile(profile: dict, attribute: str) -> str | None:
    value = profile.get(attribute)
    return value[1] if value else None


def _amount(event: list) -> float:
    extras = event[4] if len(event) > 4 else {}
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
        "touchpoint": trigger.anchor[2],
        "anchor_event_id": trigger.anchor[1],
        "channel": channel,
        "segment": segment,
        "priority": rule.priority,
        "trigger_ms": trigger.at_ms,
        "send_at_ms": send_at,
        "decided_ms": now_ms,
    }
