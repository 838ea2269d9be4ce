"""Leaks: where a journey loses its customer, decided in event time. Pure.

Each rule looks at one journey instance's events and finds the first leak it describes,
with the event time at which that leak is decided (`due_ms`): a leak is reported once
the watermark reaches it, when no touchpoint that could still arrive on time can change
the answer. A rule finds at most one leak per journey, and a leak's id is its rule and
the touchpoint it is about (not the journey, whose id an identity merge may change), so
it is reported once whatever the order of arrival, the batch sizes, merges or restarts.

    absence  after an `after` touchpoint at t, none of `expect` in [t, t + within):
             due at t + within
    repeat   `count` of `touchpoint` within `within`, no `unless` since the first:
             due just after the last of them
    stall    the journey reaches a stage at t and no later stage in [t, t + limit),
             while not completed: due at t + limit
    score    a `touchpoint` carrying a metric and a score that meet `scores` (a
             detractor's survey response): due just after it
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from streams.config import Journey, LeakRule
from streams.core.state import Event


@dataclass(frozen=True)
class Leak:
    rule: LeakRule
    journey_id: str
    due_ms: int
    anchor: Event  # the touchpoint the leak is about


@functools.lru_cache(maxsize=1 << 16)  # hashed again for every open journey on each step
def leak_id(rule: str, anchor_event_id: str) -> str:
    return hashlib.blake2b(f"{rule}/{anchor_event_id}".encode(), digest_size=12).hexdigest()


def find(
    rule: LeakRule,
    journey_id: str,
    events: list[Event],
    stage_of: dict[str, int],
    completed_ms: int | None,
) -> Leak | None:
    """The first leak of `rule` in one journey's sorted events, decided or not yet."""
    found = {"absence": _absence, "repeat": _repeat, "stall": _stall, "score": _score}[rule.kind](
        rule, events, stage_of, completed_ms
    )
    return None if found is None else Leak(rule, journey_id, *found)


def _absence(rule, events, _stage_of, _completed_ms):
    for i, event in enumerate(events):
        if event.type != rule.after:
            continue
        end = event.ts_ms + rule.within_ms
        if not any(e.type in rule.expect and e.ts_ms < end for e in events[i + 1 :]):
            return end, event
    return None


def _repeat(rule, events, _stage_of, _completed_ms):
    counted: list[Event] = []
    for event in events:
        if event.type in rule.unless:
            counted = []
        elif event.type == rule.touchpoint:
            counted = [e for e in counted if event.ts_ms - e.ts_ms < rule.within_ms] + [event]
            if len(counted) >= rule.count:
                return event.ts_ms + 1, counted[0]  # +1: a touchpoint at the same time still counts
    return None


def _stall(rule, events, stage_of, completed_ms):
    limits = dict(rule.stage_limits_ms)
    furthest, since = -1, None
    for event in events:
        stage = stage_of[event.type]
        if stage > furthest:
            if (
                since is not None
                and furthest in limits
                and event.ts_ms >= since.ts_ms + limits[furthest]
            ):
                break  # progress came too late: stalled at `furthest`
            furthest, since = stage, event
            if completed_ms is not None and event.ts_ms >= completed_ms:
                return None
    else:
        if since is None or furthest not in limits:
            return None
        if completed_ms is not None and completed_ms < since.ts_ms + limits[furthest]:
            return None
    return since.ts_ms + limits[furthest], since


def _score(rule, events, _stage_of, _completed_ms):
    for event in events:
        if event.type != rule.touchpoint or not event.extras:
            continue
        metric, score = event.extras.get("metric"), event.extras.get("score")
        for name, op, bound in rule.scores:
            if (
                metric == name
                and isinstance(score, int | float)
                and (score <= bound if op == "<=" else score >= bound)
            ):
                return event.ts_ms + 1, event
    return None


def leak_row(leak: Leak, customer_key: str, journey: Journey, now_ms: int) -> dict:
    rule = leak.rule
    return {
        "leak_id": leak_id(rule.name, leak.anchor.event_id),
        "rule": rule.name,
        "kind": rule.kind,
        "category": rule.category,
        "severity": rule.severity,
        "customer_key": customer_key,
        "journey_id": leak.journey_id,
        "journey": journey.name,
        "stage": journey.stages[journey.stage_of[leak.anchor.type]],
        "anchor_event_id": leak.anchor.event_id,
        "anchor_type": leak.anchor.type,
        "anchor_ms": leak.anchor.ts_ms,
        "due_ms": leak.due_ms,
        "detected_ms": now_ms,
    }
