"""One customer's step: their touchpoints and state in, journey rows, leaks, survey
decisions, follow-ups and health out, at a watermark. Pure.

`advance` recomputes the customer's journeys (streams.core.journeys), reports the leaks
the watermark has passed (streams.core.leaks), decides surveys (streams.core.surveys)
and follow-ups, updates health, then seals what is final and evicts what no longer
matters. `merge_states` is the union of two customers' states (identity stitching).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from streams.config import Config
from streams.core import follow_ups
from streams.core.health import update_health
from streams.core.journeys import (
    Instance,
    compute,
    exit_ms,
    journey_row,
    sealed,
    superseded_row,
)
from streams.core.leaks import leak_id, leak_row
from streams.core.state import (
    CustomerState,
    Emitted,
    Event,
    Floor,
    Orders,
    Span,
    Stamped,
    as_event,
    position,
)
from streams.core.surveys import (
    decide,
    find_triggers,
    has_due,
    held_due_ms,
    new_contact,
    segment_of,
    unseen,
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
    # (journey, opened | completed | expired | superseded), for metrics
    transitions: list[tuple[str, str]] = field(default_factory=list)
    invitations: list[dict] = field(default_factory=list)  # survey invitations decided
    suppressions: list[dict] = field(default_factory=list)  # ... and those suppressed
    health: list[dict] = field(default_factory=list)  # the customer's health row, if changed
    follow_ups: list[dict] = field(default_factory=list)  # follow-up tasks opened or closed

    def rows(self) -> dict[str, list[dict]]:
        """What to publish, by kind (see streams.outputs)."""
        return {
            "journeys": self.updates,
            "leaks": self.leaks,
            "invitations": self.invitations,
            "suppressions": self.suppressions,
            "health": self.health,
            "follow_ups": self.follow_ups,
        }


def add_events(state: CustomerState, events: Iterable[Event | list]) -> CustomerState:
    """State with `events` merged in, kept sorted and free of repeated event ids."""
    known = {e.event_id for e in state.events}
    fresh = [e for e in map(as_event, events) if e.event_id not in known]
    if not fresh:
        return state
    return replace(state, events=sorted(state.events + fresh, key=position))


def advance(
    config: Config, state: CustomerState, customer_key: str, watermark_ms: int, now_ms: int = 0
) -> Outcome:
    """Recompute journeys at `watermark_ms`; emit what changed; seal and evict what is final."""
    ignored: dict[str, list[str]] = {}
    instances = compute(config, state, watermark_ms, ignored)
    emitted = dict(state.emitted)
    floors = dict(state.floors)
    updates: list[dict] = []
    live_ids: set[str] = set()
    transitions: list[tuple[str, str]] = []

    seq = state.seq
    orders = state.contact["orders"] if state.contact else Orders()
    segment = segment_of(config.segments, state.profile, orders)
    reported = {jid: list(ids) for jid, ids in state.leaks.items()}
    already = {lid for ids in reported.values() for lid in ids}
    leak_rows = []
    for instance in instances:
        jid = instance.id
        live_ids.add(jid)
        for leak in instance.leaks:
            lid = leak_id(leak.rule.name, leak.anchor.event_id)
            if leak.due_ms <= watermark_ms and lid not in already:
                already.add(lid)
                reported.setdefault(jid, []).append(lid)
                leak_rows.append(leak_row(leak, customer_key, instance.journey, now_ms))
        signature = instance.signature(state.generation)
        before = emitted.get(jid)
        if before is None or before.signature != signature:
            seq += 1
            updates.append(journey_row(instance, customer_key, seq, now_ms, segment))
            transitions += _transitions(instance, before.signature.status if before else None)
        if sealed(instance, watermark_ms):  # final: emitted for the last time, then forgotten
            reported.pop(jid, None)
            emitted.pop(jid, None)
            floor = floors.get(instance.journey.name)
            last = instance.events[-1]
            if floor is None or position(last) > position(floor):
                # The last event, and when the instance was left and started (re-entry).
                floors[instance.journey.name] = Floor(
                    last.ts_ms, last.event_id, exit_ms(instance), instance.entry.ts_ms
                )
        else:
            stage = instance.journey.stages[instance.stage]
            emitted[jid] = Emitted(signature, instance.journey.name, instance.entry.event_id, stage)

    # Emitted journeys that no longer exist were provisional: an earlier event arrived
    # (within the lateness) or an identity merge brought one. Point them to their successor.
    for jid in sorted(set(emitted) - live_ids):
        gone = emitted.pop(jid)
        journey, entry_id = gone.journey, gone.entry_event_id
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
    contact_updates, outcome_extra = {}, {}
    if state.identified:
        contact_updates, outcome_extra = _contact(
            config, state, customer_key, instances, leak_rows, watermark_ms, now_ms
        )
    keep = _retained(state.events, instances, watermark_ms, config.identity_window_ms)
    # Entries kept out by re-entry rules: counted once, remembered while still retained.
    counted = set(state.ignored_entries)
    for journey, ids in ignored.items():
        transitions += [(journey, "entry_ignored") for i in ids if i not in counted]
    retained = {e.event_id for e in keep}
    ignored_now = sorted(i for ids in ignored.values() for i in ids if i in retained)
    updated = replace(
        state,
        **contact_updates,
        events=keep,
        floors=floors,
        emitted=emitted,
        seq=seq,
        leaks=reported,
        ignored_entries=ignored_now,
    )
    due_ms = _next_due_ms(config, instances, updated, watermark_ms)
    return Outcome(updated, updates, leak_rows, due_ms, transitions, **outcome_extra)


def _transitions(instance: Instance, before: str | None) -> list[tuple[str, str]]:
    """(journey, what happened) when a journey opens, completes or expires."""
    name, status, done = instance.journey.name, instance.status, ("completed", "closed")
    happened = [(name, "opened")] if before is None else []
    if status in done and before not in done:
        happened.append((name, "completed"))
    if status == "expired" and before != "expired":
        happened.append((name, "expired"))
    return happened


def _contact(
    config: Config,
    state: CustomerState,
    customer_key: str,
    instances: list[Instance],
    leak_rows: list[dict],
    watermark_ms: int,
    now_ms: int,
) -> tuple[dict, dict]:
    """Survey decisions and health for the touchpoints the watermark has passed: the
    state's fields that change, and the outcome's rows."""
    contact = state.contact or new_contact()
    fresh = unseen(contact, state.events, watermark_ms)
    triggers = find_triggers(config.surveys, fresh, instances, leak_rows, contact, watermark_ms)
    if not fresh and not leak_rows and not triggers and not has_due(contact, watermark_ms):
        return {}, {}
    profile = state.profile
    tasks, follow_up_rows, task_spans = follow_ups.step(
        config.follow_ups,
        contact.get("tasks", {}),
        leak_rows,
        fresh,
        instances,
        customer_key,
        now_ms,
    )
    journey_spans: dict[str, list[Span]] = {}  # for `unless_open`: until it completes or closes
    if any(rule.unless_open for rule in config.surveys.rules.values()):
        for instance in instances:
            ended = instance.closed_ms if instance.completed_ms is None else instance.completed_ms
            journey_spans.setdefault(instance.journey.name, []).append(
                Span(instance.id, instance.entry.ts_ms, ended)
            )
    decisions = decide(
        config,
        contact,
        profile,
        customer_key,
        fresh,
        triggers,
        watermark_ms,
        now_ms,
        journey_spans=journey_spans,
        task_spans=task_spans,
    )
    segment = segment_of(config.segments, profile, decisions.contact["orders"])
    health, health_row = update_health(
        config.health,
        state.health,
        customer_key,
        fresh,
        leak_rows,
        segment,
        watermark_ms,
        now_ms,
    )
    contact_after = (
        {**decisions.contact, "tasks": tasks} if tasks or "tasks" in contact else decisions.contact
    )
    return {"contact": contact_after, "health": health}, {
        "invitations": decisions.invitations,
        "suppressions": decisions.suppressions,
        "health": [health_row] if health_row else [],
        "follow_ups": follow_up_rows,
    }


def _retained(
    events: list[Event], instances: list[Instance], watermark_ms: int, identity_window_ms: int
) -> list[Event]:
    """Events still needed: in an unsealed instance, or in none and within the identity window.

    An identity merge may bring older history that a stray event (in no journey yet)
    belongs to; events of sealed instances are covered by the floors.
    """
    in_sealed = {e.event_id for i in instances if sealed(i, watermark_ms) for e in i.events}
    unsealed = [i for i in instances if not sealed(i, watermark_ms)]
    needed = {e.event_id for i in unsealed for e in i.events}
    needed |= {i.closed_by.event_id for i in unsealed if i.closed_by is not None}
    horizon_ms = watermark_ms - identity_window_ms
    keep = [
        e
        for e in events
        if e.event_id in needed or (e.event_id not in in_sealed and e.ts_ms >= horizon_ms)
    ]
    return keep[-MAX_EVENTS:]


def merge_states(into: CustomerState, other: CustomerState) -> CustomerState:
    """The state of a customer after absorbing another key's (identity stitching)."""
    merged = add_events(into, other.events)
    floors = dict(merged.floors)
    for journey, floor in other.floors.items():
        if journey not in floors or position(floor) > position(floors[journey]):
            floors[journey] = floor
    return replace(
        merged,
        floors=floors,
        emitted={**other.emitted, **merged.emitted},
        seq=max(into.seq, other.seq),
        profile=merge_profiles(into.profile, other.profile),
        leaks={
            jid: sorted(set(other.leaks.get(jid, [])) | set(ids))
            for jid, ids in {**other.leaks, **into.leaks}.items()
        },
    )


def _next_due_ms(
    config: Config, instances: list[Instance], state: CustomerState, watermark_ms: int
) -> int | None:
    """The watermark at which `state` (with these journeys) changes without new events."""
    times = [  # closing, then sealing
        max([i.closed_ms, *(leak.due_ms for leak in i.leaks)])
        if i.closed_ms is not None
        else i.deadline_ms
        for i in instances
        if not sealed(i, watermark_ms)
    ]
    already = {lid for ids in state.leaks.values() for lid in ids}
    times += [  # leaks to report once the watermark reaches them
        leak.due_ms
        for i in instances
        if not sealed(i, watermark_ms)
        for leak in i.leaks
        if leak_id(leak.rule.name, leak.anchor.event_id) not in already
    ]
    if state.identified:  # touchpoints surveys have not looked at yet
        times += [e.ts_ms for e in state.events if e.ts_ms > watermark_ms][:1]
        held = held_due_ms(state.contact or {}, config.surveys, watermark_ms)
        times += [held] if held is not None else []
    in_instances = {e.event_id for i in instances for e in i.events}
    times += [  # to evict stray events once the identity window has passed them
        e.ts_ms + config.identity_window_ms + 1
        for e in state.events
        if e.event_id not in in_instances
    ]
    return min(times, default=None)


def merge_profiles(*profiles: dict[str, Stamped]) -> dict[str, Stamped]:
    """Per attribute, the value with the latest event time."""
    merged: dict[str, Stamped] = {}
    for profile in profiles:
        for attribute, value in profile.items():
            if attribute not in merged or value.ts_ms > merged[attribute].ts_ms:
                merged[attribute] = value
    return merged
