"""One customer's step: their touchpoints and state in, journey rows, leaks, survey
decisions, follow-ups and health out, at a watermark. Pure.

`advance` folds the customer's journeys on (streams.core.journeys), reports the leaks
the watermark has passed (streams.core.leaks), decides surveys and follow-ups and
updates health (streams.core.contact), then seals what is final and evicts what no
longer matters. `merge_states` is the union of two customers' states (identity stitching).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.config import Config
from streams.core.contact import contact_step
from streams.core.journey_rows import journey_row, superseded_row
from streams.core.journeys import Instance, Runs, sealed
from streams.core.leaks import leak_id, leak_row
from streams.core.outside import evicted_outside, last_judged, still_told, tell_outside
from streams.core.state import (
    CustomerState,
    Emitted,
    Event,
    Floor,
    Orders,
    Stamped,
    as_event,
    event_time,
    position,
)
from streams.core.surveys import (
    held_due_ms,
    segment_of,
)

MAX_EVENTS = 1000  # retained events per customer; beyond, the oldest go first


def new_state() -> CustomerState:
    return CustomerState()


@dataclass
class Outcome:
    state: CustomerState
    updates: list[dict]  # journey rows to emit, in a stable order
    leaks: list[dict] = field(default_factory=list)  # leak rows, each reported once
    due_ms: int | None = None  # the watermark at which this state changes by itself
    # (journey, opened | completed | expired | reopened | superseded), for metrics
    transitions: list[tuple[str, str]] = field(default_factory=list)
    invitations: list[dict] = field(default_factory=list)  # survey invitations decided
    suppressions: list[dict] = field(default_factory=list)  # ... and those suppressed
    health: list[dict] = field(default_factory=list)  # the customer's health row, if changed
    follow_ups: list[dict] = field(default_factory=list)  # follow-up tasks opened or closed
    outside: list[dict] = field(default_factory=list)  # touchpoints final outside a journey

    def rows(self) -> dict[str, list[dict]]:
        """What to publish, by kind (see streams.outputs)."""
        return {
            "journeys": self.updates,
            "leaks": self.leaks,
            "invitations": self.invitations,
            "suppressions": self.suppressions,
            "health": self.health,
            "follow_ups": self.follow_ups,
            "outside": self.outside,
        }


def add_events(
    state: CustomerState, events: Iterable[Event | list], wall_ms: int | None = None
) -> CustomerState:
    """State with `events` merged in, kept sorted and free of repeated event ids.

    `wall_ms` is the processing clock (when they arrived): strays are kept at least an
    identity window of it. The journeys folded so far move to the new state, and are
    dropped (to be folded again) if an event lands before the last one they took.
    """
    taken = [as_event(e) for e in events]
    if len(taken) == 1:
        fresh = taken
    else:
        fresh = sorted({e.event_id: e for e in taken}.values(), key=position)
    held = state.events
    fresh = [e for e in fresh if not holds(held, e)]
    if not fresh:
        return state
    if not held or position(fresh[0]) > position(held[-1]):
        merged = held + fresh
    else:
        merged = sorted(held + fresh, key=position)
    runs = state.runs
    state.runs = None  # the fold moves on with the new state; the old one folds again if used
    if runs is not None and not runs.takes(fresh):
        runs = None
    active = state.active_wall_ms if wall_ms is None else wall_ms
    return state.evolve(events=merged, runs=runs, active_wall_ms=active)


def holds(events: list[Event], event: Event) -> bool:
    """Is `event` (by position and id) among the sorted `events`?"""
    at = bisect_left(events, position(event), key=position)
    return at < len(events) and events[at].event_id == event.event_id


def _fold(config: Config, state: CustomerState) -> tuple[Runs, bool]:
    """The state's journeys, folded on from where they stood (or from scratch: True)."""
    runs = state.runs
    state.runs = None
    if runs is None:
        return Runs.fold(config, state.events, state.floors), True
    start = 0 if runs.last is None else bisect_right(state.events, runs.last, key=position)
    runs.feed(state.events[start:])
    return runs, False


def advance(
    config: Config, state: CustomerState, customer_key: str, watermark_ms: int, now_ms: int = 0
) -> Outcome:
    """Bring journeys to `watermark_ms`; emit what changed; seal and evict what is final."""
    runs, refolded = _fold(config, state)
    runs.finish(watermark_ms)
    instances = runs.instances()
    emitted = dict(state.emitted)
    floors = dict(state.floors)
    updates: list[dict] = []
    live_ids: set[str] = set()
    transitions: list[tuple[str, str]] = []

    seq = state.seq
    segment = None  # the customer's segment, for journey rows: found when one is emitted
    reported = state.leaks  # journey id -> leak ids reported; copied before a change
    already: set[str] | None = None  # every reported leak id, gathered when first asked
    leak_rows = []
    gone: set[int] = set()  # sealed instances, by id()
    quiet = _quiet(config, state, now_ms)
    # An anonymous key's journeys wait for a merge as its strays do (see `_retained`).
    may_seal = state.identified or quiet
    leaks_of: dict[int, list] = {}  # id(instance) -> its leaks, found once per step
    for instance in instances:
        jid = instance.id
        live_ids.add(jid)
        leaks = leaks_of[id(instance)] = instance.leaks
        for leak in leaks:
            if leak.due_ms <= watermark_ms:
                lid = leak_id(leak.rule.name, leak.anchor.event_id)
                if already is None:
                    already = {lid for ids in reported.values() for lid in ids}
                if lid not in already:
                    already.add(lid)
                    if reported is state.leaks:
                        reported = {j: list(ids) for j, ids in reported.items()}
                    reported.setdefault(jid, []).append(lid)
                    leak_rows.append(leak_row(leak, customer_key, instance.journey, now_ms))
        signature = instance.signature(state.generation)
        before = emitted.get(jid)
        if before is None or before.signature != signature:
            seq += 1
            if segment is None:
                orders = state.contact["orders"] if state.contact else Orders()
                segment = segment_of(config.segments, state.profile, orders)
            updates.append(journey_row(instance, customer_key, seq, now_ms, segment))
            transitions += _transitions(instance, before.signature.status if before else None)
        if may_seal and sealed(instance, watermark_ms, leaks):
            # Final: emitted for the last time, then forgotten; its floor remembers it.
            gone.add(id(instance))
            if jid in reported:
                if reported is state.leaks:
                    reported = {j: list(ids) for j, ids in reported.items()}
                del reported[jid]
            emitted.pop(jid, None)
            name = instance.journey.name
            floor, last = floors.get(name), last_judged(instance, runs.runs[name].outside_events)
            if floor is None or position(last) > position(floor):
                floors[name] = Floor(
                    last.ts_ms,
                    last.event_id,
                    instance.exit_ms,
                    instance.entry.ts_ms,
                    instance.closed_on,
                )
        else:
            stage = instance.journey.stages[instance.stage]
            if before is None or before.signature != signature or before.stage != stage:
                emitted[jid] = Emitted(
                    signature, instance.journey.name, instance.entry.event_id, stage
                )

    # Emitted journeys that no longer exist were provisional: an earlier event arrived
    # (within the lateness) or an identity merge brought one. Point them to their successor.
    for jid in sorted(jid for jid in emitted if jid not in live_ids):
        lost = emitted.pop(jid)
        journey, entry_id = lost.journey, lost.entry_event_id
        transitions.append((journey, "superseded"))
        successor = next(
            (
                i.id
                for i in instances
                if i.journey.name == journey and any(e.event_id == entry_id for e in i.events)
            ),
            "",
        )
        seq += 1
        updates.append(superseded_row(jid, journey, customer_key, seq, successor, now_ms))

    # Surveys and health look at the events before eviction forgets them.
    contact_updates: dict[str, Any] = {}
    outcome_extra: dict[str, Any] = {}
    if state.identified:
        contact_updates, outcome_extra = contact_step(
            config, state, customer_key, instances, leak_rows, watermark_ms, now_ms
        )
    told = state.told
    outside: list[dict] = []
    # A key that linked an anonymous id may still get that id's history (the hand-off
    # takes a hop), which can put a touchpoint in a journey: its verdicts wait for the
    # key to be quiet, as its strays do, or for a journey's floor to pass them (sealed:
    # final, as before). Every other customer's are told at the watermark.
    if may_seal:
        at = watermark_ms if quiet or not state.linked else None
        told, outside = tell_outside(runs, state, at, floors, refolded)
    keep = state.events
    in_sealed: set[str] = set()
    if gone:
        in_sealed = {e.event_id for i in instances if id(i) in gone for e in i.events}
        runs.forget(gone, floors)
    horizon_ms = watermark_ms - config.identity_window_ms
    if gone or (keep and keep[0].ts_ms < horizon_ms and quiet):
        keep = _retained(keep, runs.instances(), in_sealed, horizon_ms if quiet else None)
        kept = {e.event_id: e for e in keep}
        if len(keep) < len(state.events):
            outside += evicted_outside(runs, kept, told)
        runs.retained(keep, kept)
        told = still_told(told, kept, floors)
    for row in outside:
        row.update(customer_key=customer_key, detected_ms=now_ms)
    updated = state.evolve(
        **contact_updates,
        events=keep,
        floors=floors,
        emitted=emitted,
        seq=seq,
        leaks=reported,
        runs=runs,
        told=told,
    )
    due_ms = _next_due_ms(config, runs, leaks_of, updated, watermark_ms)
    return Outcome(
        updated, updates, leak_rows, due_ms, transitions, outside=outside, **outcome_extra
    )


def _quiet(config: Config, state: CustomerState, now_ms: int) -> bool:
    """Has the key taken no touchpoints for an identity window of processing time?"""
    active = state.active_wall_ms
    return active is None or now_ms - active >= config.identity_window_ms


def _transitions(instance: Instance, before: str | None) -> list[tuple[str, str]]:
    """(journey, what happened) when a journey opens, completes or expires."""
    name, status, done = instance.journey.name, instance.status, ("completed", "closed")
    happened = [(name, "opened")] if before is None else []
    if status in done and before not in done:
        happened.append((name, "completed"))
    if status == "expired" and before != "expired":
        happened.append((name, "expired"))
    if before in done and status not in done:  # after_goal or after_close: reopen
        happened.append((name, "reopened"))
    return happened


def _retained(
    events: list[Event], unsealed: list[Instance], in_sealed: set[str], horizon_ms: int | None
) -> list[Event]:
    """Events still needed: in an unsealed instance (or the touchpoint that closed one),
    or in none (not even a sealed one) and not yet past the identity horizon (None: the
    key is not quiet yet, see `_quiet`).

    An identity merge may bring older history that a stray event (in no journey yet)
    belongs to: strays wait an identity window in event time *and* in processing time
    since the key last took touchpoints, so a fast replay or a backlog, whose watermark
    runs days ahead within minutes, keeps them for the merge as a live stream does.
    """
    needed = {e.event_id for i in unsealed for e in i.events}
    needed |= {i.closed_by.event_id for i in unsealed if i.closed_by is not None}
    keep = [
        e
        for e in events
        if e.event_id in needed
        or (e.event_id not in in_sealed and (horizon_ms is None or e.ts_ms >= horizon_ms))
    ]
    return keep[-MAX_EVENTS:]


def merge_states(into: CustomerState, other: CustomerState) -> CustomerState:
    """The state of a customer after absorbing another key's (identity stitching)."""
    merged = add_events(into, other.events)
    floors = dict(merged.floors)
    for journey, floor in other.floors.items():
        if journey not in floors or position(floor) > position(floors[journey]):
            floors[journey] = floor
    merged.runs = None  # other floors: fold again
    return merged.evolve(
        runs=None,
        floors=floors,
        emitted={**other.emitted, **merged.emitted},
        seq=max(into.seq, other.seq),
        profile=merge_profiles(into.profile, other.profile),
        leaks={
            jid: sorted(set(other.leaks.get(jid, [])) | set(ids))
            for jid, ids in {**other.leaks, **into.leaks}.items()
        },
        told={
            journey: {**other.told.get(journey, {}), **into.told.get(journey, {})}
            for journey in {**other.told, **into.told}
        },
    )


def _next_due_ms(
    config: Config,
    folded: Runs,
    leaks_of: dict[int, list],
    state: CustomerState,
    watermark_ms: int,
) -> int | None:
    """The watermark at which `state` (with these unsealed journeys, whose leaks are in
    `leaks_of`, and touchpoints in none) changes without new events."""
    instances, runs, strays = folded.instances(), folded.runs, folded.strays
    times = [  # closing, then sealing (past re-opening)
        max([final_ms, *(leak.due_ms for leak in leaks_of[id(i)])]) + 1
        if (final_ms := i.final_ms) is not None
        else i.deadline_ms
        for i in instances
    ]
    # Touchpoints outside a journey, told once the watermark passes them.
    times += [
        run.outside_events[run.told].ts_ms + 1
        for run in runs.values()
        if run.told < len(run.outside_events)
    ]
    # Leaks to report once the watermark reaches them (those reported are before it).
    times += [
        leak.due_ms for i in instances for leak in leaks_of[id(i)] if leak.due_ms > watermark_ms
    ]
    if state.identified:  # touchpoints surveys have not looked at yet
        after = bisect_right(state.events, watermark_ms, key=event_time)
        times += [state.events[after].ts_ms] if after < len(state.events) else []
        held = held_due_ms(state.contact or {}, config.surveys, watermark_ms)
        times += [held] if held is not None else []
    stray = next(iter(strays.values()), None)
    if stray is not None:  # to evict it once the identity window has passed it
        times.append(stray.ts_ms + config.identity_window_ms + 1)
    due = min(times, default=None)
    if due is not None and due <= watermark_ms:
        # What is already due waits for the key to be quiet (processing time, see
        # `_retained`): look again an identity window later in event time.
        due = watermark_ms + config.identity_window_ms
    return due


def merge_profiles(*profiles: dict[str, Stamped]) -> dict[str, Stamped]:
    """Per attribute, the value with the latest event time."""
    merged: dict[str, Stamped] = {}
    for profile in profiles:
        for attribute, value in profile.items():
            if attribute not in merged or value.ts_ms > merged[attribute].ts_ms:
                merged[attribute] = value
    return merged
