"""The journey step: resolved touchpoints in; journey updates, identity messages out.

Runs on `touchpoints-resolved`, where every message is keyed by a customer key and is one
of:
    {"events": [...]}                        touchpoints from ingest, in arrival order
                                             (unkeyed: customers of one partition)
    {"control": "entered", "events": [...]}  touchpoints judged on the partition they
                                             entered on, for customers of this one (those
                                             late there carry "late": true)
    {"control": "watermark", "from": P, "value": V, "idle": B}
                                             partition P's entry watermark, sent after
                                             the touchpoints it forwarded here
    {"control": "forward", "events": [...]}  touchpoints re-sent to the key they belong to
    {"control": "link", "customer_key": C}   key (an anonymous id) belongs to customer C
    {"control": "handoff", "state": {...}}   another key's journey state, to merge in
    {"control": "tick", "wall_ms": ...}      the wall clock, for idle partitions; the
                                             worker adds "behind": true when the
                                             partition has touchpoints it has not read

Identity stitching: an event that carries both ids tells the customer's key; it sends a
`link` to the anonymous key (on that key's own partition, so it is ordered with that
key's events). The anonymous key hands its state over and from then on forwards its
events. Merging is a union of events (see streams.core.journeys), so the result does not
depend on which side was processed first.

Pure apart from the watermarks and the due index, which the caller owns and passes in.
"""

from __future__ import annotations

import heapq
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from streams.config import Config
from streams.core.customer import (
    add_events,
    advance,
    holds,
    merge_profiles,
    merge_states,
    new_state,
)
from streams.core.events import describe
from streams.core.eventtime import Watermark
from streams.core.state import CustomerState, Event, Stamped

MAX_LINKED = 50  # anonymous ids remembered per customer, to send each link once


@dataclass(frozen=True, slots=True)
class Message:
    key: str | None
    partition: int
    offset: int
    doc: dict


@dataclass
class DueIndex:
    """Per partition, customers whose journeys change when the watermark passes a time."""

    heaps: dict[int, list[tuple[int, str]]] = field(default_factory=dict)

    def push(self, partition: int, due_ms: int | None, key: str) -> None:
        if due_ms is not None:
            heapq.heappush(self.heaps.setdefault(partition, []), (due_ms, key))

    def pop_due(self, partition: int, watermark_ms: int) -> set[str]:
        heap, keys = self.heaps.get(partition, []), set()
        while heap and heap[0][0] <= watermark_ms:
            keys.add(heapq.heappop(heap)[1])
        return keys


class Folds:
    """Which customers keep their folded journeys (`CustomerState.runs`) in memory.

    A fold saves re-reading a customer's history at their next step, but it weighs about
    ten times their stored state: kept for every key, 20,000 one-visit anonymous ids
    held over 200 MB. Only the `limit` most recently stepped keys keep theirs; the
    others fold again from their retained touchpoints if they come back, as after a
    restart."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._recent: OrderedDict[str, CustomerState] = OrderedDict()

    def keep(self, key: str, state: CustomerState) -> None:
        self._recent[key] = state
        self._recent.move_to_end(key)
        while len(self._recent) > self.limit:
            _, oldest = self._recent.popitem(last=False)
            oldest.runs = None

    def __len__(self) -> int:
        return len(self._recent)


def forgettable(state: CustomerState) -> bool:
    """Is this an anonymous key with nothing left that a merge could still want? Its
    touchpoints were evicted (an identity window after its last one, in event and in
    processing time), its journeys sealed, nothing waits: the key is deleted rather than
    kept for ever. A key that became an alias stays (it forwards later events)."""
    return not (
        state.identified
        or state.alias
        or state.events
        or state.emitted
        or state.leaks
        or state.contact
        or state.linked
    )


@dataclass
class StepResult:
    # key -> (partition, state) of the customers this batch changed; None: delete the key
    states: dict[str, tuple[int, CustomerState | None]] = field(default_factory=dict)
    # kind (journeys, leaks, invitations, suppressions, health) -> key -> rows
    rows: dict[str, dict[str, list[dict]]] = field(default_factory=dict)
    sends: list[tuple[str, dict]] = field(default_factory=list)  # (key, control doc)
    late: list[tuple[Message, dict]] = field(default_factory=list)  # (message, event)
    # (message, its event or None for the whole message, what was raised): the step raised
    # on a customer; their events of this batch are kept out, the state stays as it was.
    failed: list[tuple[Message, dict | None, str]] = field(default_factory=list)
    merged: int = 0
    replayed: int = 0  # behind the watermark but already applied (a re-delivery)
    transitions: Counter = field(default_factory=Counter)  # (journey, what happened) -> n
    # partition -> touchpoints of its customers that entered here, in arrival order, to
    # send there as an `entered` control (see `home` in journey_step)
    forwards: dict[int, list[dict]] = field(default_factory=dict)


def journey_step(
    config: Config,
    messages: list[Message],
    load_state: Callable[[str, int], CustomerState | None],
    watermarks: dict[int, Watermark],
    due: DueIndex,
    wall_ms: int,
    folds: Folds | None = None,
    home: Callable[[str], int] | None = None,
) -> StepResult:
    """Process one batch of `touchpoints-resolved` messages (see module docstring).
    `folds` bounds the folded journeys kept in memory (None: every key keeps its own).
    `home` names the partition a customer key lives on: ingest's touchpoints of keys
    living elsewhere are judged here and go to `result.forwards` (None: all live here)."""
    result = StepResult()
    states: dict[str, tuple[int, CustomerState]] = {}
    touched: set[str] = set()
    loaded: dict[str, CustomerState | None] = {}  # as stored: kept if the step fails on a key
    # What each key took in this batch, for its letters if the step fails on it: a message
    # and its events (None: the message itself, a link or a hand-off).
    taken: dict[str, list[tuple[Message, list[dict] | None]]] = {}
    broken: set[str] = set()  # keys the step failed on: left alone for the rest of the batch

    def state_of(key: str, partition: int) -> CustomerState:
        if key not in states:
            loaded[key] = load_state(key, partition)
            states[key] = (partition, loaded[key] or new_state())
        return states[key][1]

    def put(key: str, state: CustomerState) -> None:
        states[key] = (states[key][0], state)
        touched.add(key)

    def isolated(key: str, message: Message, events: list[dict] | None, step: Callable) -> None:
        """Run one key's part of the batch; if it raises, the key keeps its stored state
        and what it took in this batch becomes `processing_error` letters (nothing else
        is held up: a poison message costs its customer's batch, not the partition's)."""
        taken.setdefault(key, []).append((message, events))
        try:
            step()
        except Exception as exc:
            fail(key, exc)

    def fail(key: str, exc: Exception) -> None:
        detail = describe(exc)
        for message, events in taken.pop(key, []):
            each: list[dict | None] = list(events) if events else [None]
            result.failed += [(message, e, detail) for e in each]
        states[key] = (states[key][0], loaded[key] or new_state())
        touched.discard(key)
        broken.add(key)

    def take(message: Message, partition: int, judged: list[tuple[dict, bool]]) -> None:
        """Touchpoints of this partition's customers, each judged on time or late."""
        on_time: dict[str, list[dict]] = {}
        for event, in_time in judged:
            if in_time:
                on_time.setdefault(event["customer_key"], []).append(event)
            elif _applied(state_of(event["customer_key"], partition), event):
                result.replayed += 1  # re-delivered after a crash: a duplicate, not late
            else:
                result.late.append((message, event))
        for owner, events in on_time.items():
            if owner in broken:
                result.failed += [(message, e, "its customer failed earlier") for e in events]
                continue
            state = state_of(owner, partition)
            isolated(
                owner, message, events, partial(_add, owner, events, state, put, result, wall_ms)
            )

    for message in messages:
        doc, key, partition = message.doc, message.key, message.partition
        mark = watermarks.setdefault(
            partition, Watermark(config.allowed_lateness_ms, config.idle_timeout_ms)
        )
        control = doc.get("control")
        if control == "tick":
            mark.on_idle(wall_ms, behind=doc.get("behind", False))
            continue
        if control == "watermark":
            try:
                mark.hear(int(doc["from"]), int(doc["value"]), bool(doc["idle"]))
            except (KeyError, TypeError, ValueError):  # not a worker's: it moves nothing
                result.failed.append((message, None, "a watermark needs from, value, idle"))
            continue
        if control is None:  # touchpoints from ingest, judged where they entered
            judged = []
            for event in doc.get("events", []):
                on_time = mark.observe(event["ts_ms"], wall_ms)
                elsewhere = home(event["customer_key"]) if home is not None else partition
                if elsewhere == partition:
                    judged.append((event, on_time))
                else:
                    sent = event if on_time else {**event, "late": True}
                    result.forwards.setdefault(elsewhere, []).append(sent)
            take(message, partition, judged)
            continue
        if control == "entered":  # judged where they entered
            take(message, partition, [(e, "late" not in e) for e in doc.get("events", [])])
            continue
        if key is None:
            continue
        if key in broken:
            result.failed.append((message, None, "its customer failed earlier"))
            continue
        state = state_of(key, partition)
        if control == "link":
            isolated(
                key, message, None, partial(_link, key, doc["customer_key"], state, put, result)
            )
        elif control == "handoff":
            isolated(key, message, None, partial(_handoff, key, doc, state, put, result))
        elif control == "forward":  # judged on time where it arrived; not judged again
            events = doc["events"]
            isolated(key, message, events, partial(_add, key, events, state, put, result, wall_ms))

    # Customers whose deadlines the watermark passed, on this batch's partitions only: a
    # watermark moves only with its partition's messages, and the caller can read and
    # write state only in the partitions it has an event of.
    for partition in sorted({m.partition for m in messages}):
        for key in due.pop_due(partition, watermarks[partition].combine()):
            state_of(key, partition)
            touched.add(key)

    for key in sorted(touched):
        partition, state = states[key]
        if state.alias:
            continue
        watermark = watermarks[partition].journeys_ms
        try:
            outcome = advance(config, state, key, watermark, now_ms=wall_ms)
        except Exception as exc:
            fail(key, exc)
            continue
        stepped = outcome.state
        if stepped.partition != partition:  # where the key lives: the state scan counts
            stepped = stepped.evolve(partition=partition)
        kept = None if forgettable(stepped) else stepped
        result.states[key] = (partition, kept)
        if folds is not None and kept is not None:  # a deleted key's fold is dead weight
            folds.keep(key, kept)
        due.push(partition, outcome.due_ms, key)
        result.transitions.update(outcome.transitions)
        for kind, rows in outcome.rows().items():
            if rows:
                result.rows.setdefault(kind, {})[key] = rows
    for key in touched - result.states.keys():  # merged away: stored as they are
        result.states[key] = states[key]
    return result


def _handoff(key: str, doc: dict, state: CustomerState, put, result: StepResult) -> None:
    if state.alias:  # merged elsewhere meanwhile: the state goes on to where this key went
        result.sends.append((state.alias, doc))
        return
    merged = merge_states(state, CustomerState.from_json(doc["state"]))
    put(key, merged.evolve(generation=state.generation + 1))
    result.merged += 1


def _link(
    anonymous_key: str, customer_key: str, state: CustomerState, put, result: StepResult
) -> None:
    """`anonymous_key` belongs to `customer_key`: hand its state over, forward from now on.

    Merges never form a cycle: when both keys are customers (each had an event with its
    own customer_id), the smaller key is the canonical one and the larger merges into it.
    So an alias points from a key that never was a customer, or to a smaller customer
    key; an alias never becomes a customer (its events are forwarded), so no chain of
    aliases comes back to where it started, and every link ends with one canonical key.
    """
    if anonymous_key == customer_key or state.alias == customer_key:
        return
    if state.alias:  # already merged elsewhere: follow the chain
        result.sends.append((state.alias, {"control": "link", "customer_key": customer_key}))
        return
    if state.identified and anonymous_key < customer_key:  # the other way round
        result.sends.append((customer_key, {"control": "link", "customer_key": anonymous_key}))
        return
    if state.events or state.emitted:
        result.sends.append((customer_key, {"control": "handoff", "state": state.to_json()}))
    put(anonymous_key, new_state().evolve(alias=customer_key))


def _add(
    key: str, events: list[dict], state: CustomerState, put, result: StepResult, wall_ms: int
) -> None:
    if not events:
        return
    if state.alias:  # this key was merged: its events belong to the customer now
        result.sends.append((state.alias, {"control": "forward", "events": events}))
        return
    linked = state.linked
    identified = state.identified
    for event in events:
        anonymous_id = event.get("anonymous_id")
        if anonymous_id and anonymous_id != key and anonymous_id not in linked:
            result.sends.append((anonymous_id, {"control": "link", "customer_key": key}))
            linked = [*linked, anonymous_id][-MAX_LINKED:]
        identified = identified or event.get("customer_id") == key
    updated = add_events(state, [_compact(e) for e in events], wall_ms)
    if updated is state:  # nothing new (re-delivered); the stored state stays as it was
        updated = state.evolve()
    updated.linked = linked
    updated.identified = identified
    profile = _profile(events)
    if profile:
        updated.profile = merge_profiles(state.profile, profile)
    put(key, updated)


def _applied(state: CustomerState, event: dict) -> bool:
    """Is this touchpoint already in the customer's retained history?"""
    return holds(state.events, Event(event["ts_ms"], event["event_id"], event["type"], ""))


def _compact(event: dict) -> Event:
    """What journeys, leak and survey rules need of an event (see streams.core.state)."""
    props = event.get("properties") or {}
    extras = {}
    if "score" in props:  # a survey answer: score leaks and health read it
        metric = props.get("metric")
        extras["metric"] = metric.lower() if isinstance(metric, str) else metric
        extras["score"] = props["score"]
    if isinstance(props.get("amount"), int | float):  # an order's value: segment tiers
        extras["amount"] = props["amount"]
    if isinstance(props.get("task_id"), str):  # closes that follow-up task
        extras["task_id"] = props["task_id"]
    return Event(event["ts_ms"], event["event_id"], event["type"], event["channel"], extras or None)


PROFILE_ATTRIBUTES = ("time_zone", "preferred_channel")


def _profile(events: list[dict]) -> dict[str, Stamped]:
    """The segment and the properties CRM events set, with when they were set."""
    found: dict[str, Stamped] = {}

    def seen(name: str, ts_ms: int, value: object) -> None:
        if isinstance(value, str) and value and (name not in found or ts_ms > found[name].ts_ms):
            found[name] = Stamped(ts_ms, value)

    for event in events:
        seen("segment", event["ts_ms"], event.get("segment"))
        props = event.get("properties")
        if props:
            for name in PROFILE_ATTRIBUTES:
                seen(name, event["ts_ms"], props.get(name))
    return found
