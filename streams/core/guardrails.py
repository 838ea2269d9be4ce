"""Survey guardrails, side by side: what stops or holds an invitation when its trigger
fires (`at_trigger`) and again when its send time comes (`at_send_time`). Pure.

At the trigger, in order: opted out, handed off (a person's follow-up task is open),
duplicate (same rule and journey; `once_per_journey: false` turns it off), outranked
(a rule with a higher priority sent at the same trigger time), sampled out (a
deterministic draw on the invitation id), capped (another invitation too close, overall
or on the channel, counting those still held).
Quiet hours move the send time out of the night in the customer's time zone
(`send_time`).

At the send time: the rule removed, opted out or handed off since, another journey
open (`unless_open`) or another rule's recent invitation (`unless_surveyed_within`)
holds it on until that ends, held past `max_wait` expires it, quiet hours (the time
zone may have been learnt meanwhile) move it to the morning, and a cap it would now
break cancels it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.config.durations import duration_text
from streams.config.rules import QuietHours, SurveyRule, Surveys
from streams.core.eventtime import epoch_ms
from streams.core.state import Booking, Event, Span

OPTED_OUT, DUPLICATE, OUTRANKED, SAMPLED_OUT, CAPPED = (
    "opted_out",
    "duplicate",
    "outranked",
    "sampled_out",
    "capped",
)
HANDED_OFF, EXPIRED, RULE_REMOVED = "handed_off", "expired", "rule_removed"
SEND_NOW, DROP, KEEP = "send", "drop", "keep"  # what becomes of a held invitation when due


def invitation_id(rule: str, anchor_event_id: str) -> str:
    """Its rule and the touchpoint it is about: a sender dedupes on it, a replay makes it again."""
    return hashlib.blake2b(f"survey/{rule}/{anchor_event_id}".encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class Trigger:
    rule: SurveyRule
    at_ms: int  # event time at which it fired
    anchor: Event  # the touchpoint the survey is about
    journey_id: str = ""
    journey: str = ""
    stage: str = ""

    @property
    def invitation_id(self) -> str:
        return invitation_id(self.rule.name, self.anchor.event_id)


def sampled_in(invitation: str, rate: float) -> bool:
    """A draw that is the same for the same invitation, wherever and whenever it is made."""
    if rate >= 1:
        return True
    draw = int.from_bytes(hashlib.blake2b(invitation.encode(), digest_size=8).digest(), "big")
    return draw < rate * 2**64


def expiry_ms(row: dict, surveys: Surveys) -> int:
    return row["trigger_ms"] + surveys.max_wait_ms


def at_send_time(
    row: dict,
    at_ms: int,
    opted_out: bool,
    sent: list[Booking],
    surveys: Surveys,
    journey_spans: dict[str, list[Span]],
    task_spans: Iterable[Span],
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
    if rule.unless_follow_up and open_at(task_spans, at_ms):
        return drop(HANDED_OFF, "a follow-up task for a person opened before it was sent")
    expiry = expiry_ms(row, surveys)
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
    journey_spans: dict[str, list[Span]],
    sent: list[Booking],
) -> tuple[int | None, str] | None:
    """What holds the invitation at `at_ms`: (until when, or None if not known yet, why)."""
    for journey in sorted(rule.unless_open):
        span = _open_span(journey_spans.get(journey, ()), at_ms, besides=row["journey_id"])
        if span is not None:
            return span.ended_ms, f"a {journey} journey was open"
    window = rule.unless_surveyed_within_ms
    recent = [s for s in sent if s.rule != rule.name and at_ms - window < s.send_at_ms <= at_ms]
    if window and recent:
        last = max(recent)
        return last.send_at_ms + window, f"{last.rule} was sent within {duration_text(window)}"
    return None


def _open_span(spans: Iterable[Span], at_ms: int, besides: str = "") -> Span | None:
    """The first of `spans` open at `at_ms`, but `besides`."""
    return next(
        (
            span
            for span in spans
            if span.opened_ms <= at_ms
            and (span.ended_ms is None or at_ms < span.ended_ms)
            and span.id != besides
        ),
        None,
    )


def open_at(spans: Iterable[Span], at_ms: int) -> bool:
    return _open_span(spans, at_ms) is not None


def _cap_breach(
    send_at: int, channel: str, others: list[Booking], surveys: Surveys
) -> tuple[str, str] | None:
    """(its rule, "contact" or the channel) of another invitation (of `others`, entries
    of `sent`) within the contact cap or the channel's cap of this one, or None."""
    for other in others:
        gap = abs(send_at - other.send_at_ms)
        if gap < surveys.cap_ms:
            return other.rule, "contact"
        if other.channel == channel and gap < surveys.channel_cap_ms.get(channel, 0):
            return other.rule, channel
    return None


def _cap_detail(breach: tuple[str, str], tense: str) -> str:
    other_rule, cap = breach
    if cap == "contact":
        return f"{other_rule} {tense} within the contact cap"
    return f"{other_rule} {tense} on {cap} within its cap"


def at_trigger(
    trigger: Trigger,
    opted_out: bool,
    task_spans: Iterable[Span],
    journeys: dict[str, list[str]],
    sent_at_time: dict[int, bool],
    segment: str,
    booked: list[Booking],
    surveys: Surveys,
    channel: str,
    send_at: int,
) -> tuple[str, str]:
    """(reason, detail) the trigger is suppressed for, or ("", "") if it passes."""
    rule = trigger.rule
    if opted_out:
        return OPTED_OUT, "the customer opted out of surveys"
    if rule.unless_follow_up and open_at(task_spans, trigger.at_ms):
        return HANDED_OFF, "a follow-up task for a person is open"
    if (
        rule.once_per_journey
        and trigger.journey_id
        and trigger.journey_id in journeys.get(rule.name, [])
    ):
        return DUPLICATE, f"{rule.name} already invited for journey {trigger.journey_id}"
    if sent_at_time.get(trigger.at_ms):
        return OUTRANKED, "a rule with a higher priority fired at the same time"
    rate = rule.sample_rate(segment)
    if not sampled_in(trigger.invitation_id, rate):
        return SAMPLED_OUT, f"sample rate {rate:g} for segment {segment}"
    if breach := _cap_breach(send_at, channel, booked, surveys):
        return CAPPED, _cap_detail(breach, "is sent")
    return "", ""


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
    return epoch_ms(wake)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None
