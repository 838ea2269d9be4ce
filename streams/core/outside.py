"""Touchpoints outside journeys: when a verdict is final, and telling it once. Pure.

A touchpoint of a journey's types that joined no instance of it has a reason
(streams.core.journeys.OUTSIDE_REASONS). The fold is causal, so the verdict is final once
the watermark has passed the touchpoint (or the journey's floor has): `tell_outside`
reports it then, and the customer's state remembers what it told (`CustomerState.told`)
while a fold again could reach the touchpoint, so a restart reports nothing twice. Only
an identity merge can change a verdict told: the touchpoint is told again as
`in_journey`, whose row replaces the first in ClickHouse.
"""

from __future__ import annotations

from streams.core.journeys import Instance, Runs
from streams.core.state import CustomerState, Event, Floor, position

# The reason a touchpoint told outside a journey is told again with, once an identity
# merge has put it in an instance.
IN_JOURNEY = "in_journey"


def tell_outside(
    runs: Runs,
    state: CustomerState,
    watermark_ms: int | None,
    floors: dict[str, Floor],
    refolded: bool,
) -> tuple[dict[str, dict[str, str]], list[dict]]:
    """Rows for the touchpoints outside a journey that became final (the watermark or the
    journey's floor passed them; `watermark_ms` None: only the floor), and the verdicts
    told so far. After a fold again (`refolded`), one told that now joined an instance is
    told again as `in_journey`."""
    told = state.told
    changed: dict[str, dict[str, str]] = {}  # journey -> its verdicts, copied to change
    rows: list[dict] = []

    def tell(name: str, event: Event, reason: str) -> None:
        if name not in changed:
            changed[name] = dict(told.get(name, {}))
        if reason == IN_JOURNEY:
            del changed[name][event.event_id]
        else:
            changed[name][event.event_id] = reason
        rows.append(outside_row(event, name, reason))

    for name, run in runs.runs.items():
        before = told.get(name, {})
        if refolded and before:
            above = run.floor
            for event_id in [i for i in before if i not in run.outside]:
                event = _retained_event(state.events, event_id)
                if event is not None and (above is None or position(event) > position(above)):
                    tell(name, event, IN_JOURNEY)
        pending = run.outside_events
        if run.told == len(pending):  # the common case: nothing new outside
            continue
        floor = floors.get(name)
        limit = position(floor) if floor is not None else None
        while run.told < len(pending):
            event = pending[run.told]
            past = watermark_ms is not None and event.ts_ms < watermark_ms
            if not past and (limit is None or position(event) > limit):
                break
            run.told += 1
            reason = run.outside[event.event_id]
            if before.get(event.event_id) != reason:
                tell(name, event, reason)
    if not changed:
        return told, rows
    merged = {**told, **changed}
    return {name: ids for name, ids in merged.items() if ids}, rows


def _retained_event(events: list[Event], event_id: str) -> Event | None:
    return next((e for e in events if e.event_id == event_id), None)


def still_told(
    told: dict[str, dict[str, str]], kept: dict[str, Event], floors: dict[str, Floor]
) -> dict[str, dict[str, str]]:
    """The verdicts a fold again could still reach: of kept touchpoints (by id) above the
    floor."""
    if not told:
        return told
    still = {}
    for name, ids in told.items():
        floor = floors.get(name)
        left = {
            event_id: reason
            for event_id, reason in ids.items()
            if event_id in kept and (floor is None or position(kept[event_id]) > position(floor))
        }
        if left:
            still[name] = left
    return still


def last_judged(instance: Instance, outside: list[Event]) -> Event:
    """The last touchpoint a sealed instance decided: its own last one, or a later one of
    the journey's types that stayed outside while it was open (folded again from a floor
    before it, that one would find no instance open and get another reason)."""
    last = instance.events[-1]
    end = (
        position(instance.closed_by)
        if instance.closed_by is not None
        else (instance.closed_ms or 0, "")
    )
    for event in outside:
        at = position(event)
        if at >= end:
            break
        if at > position(last):
            last = event
    return last


def evicted_outside(
    runs: Runs, kept: dict[str, Event], told: dict[str, dict[str, str]]
) -> list[dict]:
    """Evicted touchpoints (not in `kept`, by id) outside a journey, not told yet (the
    watermark tells almost all first; these were at it): final now."""
    rows = []
    for name, run in runs.runs.items():
        before = told.get(name, {})
        for event in run.outside_events[run.told :]:
            if event.event_id not in kept and event.event_id not in before:
                rows.append(outside_row(event, name, run.outside[event.event_id]))
    return rows


def outside_row(event: Event, journey: str, reason: str) -> dict:
    return {
        "event_id": event.event_id,
        "journey": journey,
        "reason": reason,
        "type": event.type,
        "ts_ms": event.ts_ms,
    }
