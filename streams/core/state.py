"""What the journey step keeps per customer key, with named fields. Pure.

The journey-state table stores it as JSON, in a compact positional layout (lists, not
objects: a customer's retained touchpoints are most of the bytes). `CustomerState.to_json`
and `CustomerState.from_json` are the only code that knows that layout; everything
else reads fields by name. The layout carries a version (`v`); `from_json` migrates
older ones on read (see `_migrate`). The folded journeys (`runs`) live in memory only:
after a restart they are folded again from the retained touchpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Event(NamedTuple):
    """What journey, leak and survey rules need of a touchpoint."""

    ts_ms: int
    event_id: str
    type: str
    channel: str
    # survey answers: metric and score; orders: amount; follow_up_closed: task_id
    extras: dict[str, Any] | None = None


class Floor(NamedTuple):
    """Per journey: the last event of its last sealed instance (nothing at or before it
    is recomputed), and when that instance was left and started (re-entry rules)."""

    ts_ms: int
    event_id: str
    exit_ms: int | None = None
    start_ms: int | None = None
    closed_on: bool = False  # it ended at a closing touchpoint (`after_close: new` asks)


class Signature(NamedTuple):
    """Changes whenever a journey's row would (its events, status) or a merge happens."""

    events_hash: str
    status: str
    generation: int


class Emitted(NamedTuple):
    """What was last sent for an unsealed journey instance."""

    signature: Signature
    journey: str
    entry_event_id: str
    stage: str


class Stamped(NamedTuple):
    """A profile attribute (segment, time_zone, preferred_channel) and when it was set."""

    ts_ms: int
    value: str


class Booking(NamedTuple):
    """An invitation sent (or held, holding its place) under the contact caps."""

    send_at_ms: int
    channel: str
    rule: str
    trigger_ms: int


class Cursor(NamedTuple):
    """Touchpoints up to here have been looked at by the survey rules."""

    ts_ms: int
    event_ids: list[str]  # those at ts_ms (others at the same time may still come)


class Span(NamedTuple):
    """When a journey instance or a follow-up task was open (the guardrails ask)."""

    id: str
    opened_ms: int
    ended_ms: int | None  # None: still open, as far as the watermark knows


class Orders(NamedTuple):
    placed: int = 0  # not `count`: a tuple has a method of that name
    value: float = 0.0


@dataclass
class CustomerState:
    events: list[Event] = field(default_factory=list)  # sorted by (ts, id), not yet evicted
    floors: dict[str, Floor] = field(default_factory=dict)  # journey -> floor
    emitted: dict[str, Emitted] = field(default_factory=dict)  # journey id -> last sent
    # Rows emitted so far: a row's version, so the latest row wins in ClickHouse (a
    # journey id can come back after being superseded: content could not order that).
    seq: int = 0
    leaks: dict[str, list[str]] = field(default_factory=dict)  # journey id -> leaks reported
    alias: str | None = None  # the customer key this key was merged into (then nothing else)
    identified: bool = False  # the key is a customer id: only those get surveys
    # Merges absorbed so far; part of signatures, so every journey is re-sent under the
    # merged customer's key.
    generation: int = 0
    linked: list[str] = field(default_factory=list)  # anonymous ids a link was sent to
    profile: dict[str, Stamped] = field(default_factory=dict)
    # Survey decisions so far (see streams.core.surveys.new_contact); None until the first.
    contact: dict | None = None
    health: dict | None = None  # the customer's health items (see streams.core.health)
    partition: int | None = None  # where the key lives (the state scan counts its own)
    # Processing time (wall clock) the key last took touchpoints: strays wait for a merge
    # an identity window of it. None: unknown (tests), no wait.
    active_wall_ms: int | None = None
    # Event ids taken recently under this key, with their event times: the dedupe memory
    # (streams.core.dedupe) lives with the state it protects, in the same changelog record.
    seen: dict[str, int] = field(default_factory=dict)
    # Touchpoints reported outside a journey, per journey (event id -> reason), while the
    # customer keeps them above the journey's floor: a fold again (after a restart or a
    # merge) reports none twice, and corrects one that a merge put in an instance.
    told: dict[str, dict[str, str]] = field(default_factory=dict)
    # The journeys folded so far (streams.core.journeys.Runs); in memory only.
    runs: Any = field(default=None, compare=False, repr=False)

    def evolve(self, **changes: Any) -> CustomerState:
        """A copy with `changes`: dataclasses.replace without its per-field __init__ (the
        step makes a few per customer per batch)."""
        new = object.__new__(CustomerState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def to_json(self) -> dict:
        # Empty and default fields are left out (from_json fills them in): the record is
        # the state's cost per key, in the changelog and on every restore.
        doc: dict[str, Any] = {"v": LAYOUT_VERSION, "events": [_event_json(e) for e in self.events]}
        if self.floors:
            # closed_on only when set: most floors are of journeys without close_on
            doc["floors"] = {j: list(f if f.closed_on else f[:4]) for j, f in self.floors.items()}
        if self.emitted:
            doc["emitted"] = {
                jid: [list(e.signature), e.journey, e.entry_event_id, e.stage]
                for jid, e in self.emitted.items()
            }
        for name in ("alias", "seq", "leaks", "generation", "identified", "linked", "told"):
            if value := getattr(self, name):
                doc[name] = value
        if self.profile:
            doc["profile"] = {name: list(v) for name, v in self.profile.items()}
        if self.contact is not None:
            doc["contact"] = _contact_json(self.contact)
        if self.health is not None:
            doc["health"] = self.health
        if self.partition is not None:
            doc["partition"] = self.partition
        if self.active_wall_ms is not None:
            doc["active"] = self.active_wall_ms
        if self.seen:
            doc["seen"] = self.seen
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> CustomerState:
        doc = _migrate(doc)
        contact = doc.get("contact")
        return cls(
            events=[Event(*e) for e in doc.get("events", ())],
            floors={j: _floor(f) for j, f in doc.get("floors", {}).items()},
            emitted={
                jid: Emitted(Signature(*e[0]), e[1], e[2], e[3] if len(e) > 3 else "unknown")
                for jid, e in doc.get("emitted", {}).items()
            },
            seq=doc.get("seq", 0),
            leaks={jid: list(ids) for jid, ids in doc.get("leaks", {}).items()},
            alias=doc.get("alias"),
            identified=bool(doc.get("identified")),
            generation=doc.get("generation", 0),
            linked=list(doc.get("linked", ())),
            profile={name: Stamped(*v) for name, v in doc.get("profile", {}).items()},
            contact=None if contact is None else _contact_from_json(contact),
            health=doc.get("health"),
            partition=doc.get("partition"),
            active_wall_ms=doc.get("active"),
            seen=dict(doc.get("seen", ())),
            told={journey: dict(ids) for journey, ids in doc.get("told", {}).items()},
        )


LAYOUT_VERSION = 2


def _migrate(doc: dict) -> dict:
    """A stored state in the current layout.

    1 → 2: `ignored_entries` is gone (touchpoints outside journeys are reported as rows);
    journey signatures changed form, so each open journey is sent once more after the
    upgrade (the same row, a higher version). Floors without exit and start times (before
    re-entry rules) are read by `_floor`.
    """
    version = doc.get("v", 1)
    if version > LAYOUT_VERSION:
        raise ValueError(
            f"journey state of layout {version} is newer than this worker's "
            f"({LAYOUT_VERSION}): upgrade the worker"
        )
    if version < 2:
        doc = {k: v for k, v in doc.items() if k != "ignored_entries"}
    return doc


def as_event(item: Event | list | tuple) -> Event:
    """An event as a test or a stored list gives it: [ts, id, type, channel(, extras)]."""
    return item if isinstance(item, Event) else Event(*item)


def _event_json(event: Event) -> list:
    return list(event) if event.extras else list(event[:4])


def _floor(stored: list) -> Floor:
    # Floors written before re-entry rules existed hold only the event.
    ts_ms, event_id, *times = stored
    exit_at = times[0] if times and isinstance(times[0], int) else ts_ms
    start_at = times[1] if len(times) > 1 else exit_at
    return Floor(ts_ms, event_id, exit_at, start_at, bool(times[2]) if len(times) > 2 else False)


def new_contact() -> dict:
    """A customer's survey decisions before the first (streams.core.surveys.decide)."""
    return {
        "cursor": None,  # a Cursor: touchpoints up to here are decided
        "opted_out": False,
        "orders": Orders(),  # purchases, sum of their amounts
        "sent": [],  # Bookings within the caps' reach
        "held": [],  # invitation rows waiting for their send time (see decide)
        "journeys": {},  # rule -> journey ids it invited for
        "relational": {},  # rule -> trigger time of its last decision
        "completed": {},  # completion rule -> anchors decided (a merge may bring them late)
    }


_CONTACT_DEFAULTS = new_contact()


def _contact_json(contact: dict) -> dict:
    # Values still at their default are left out: most customers never get a survey, and
    # the changelog record is the state's cost per key. Reading fills them back in.
    doc = {k: v for k, v in contact.items() if _CONTACT_DEFAULTS.get(k, ...) != v}
    if contact.get("sent"):
        doc["sent"] = [list(b) for b in contact["sent"]]
    if "orders" in doc:
        doc["orders"] = list(doc["orders"])
    if (cursor := contact.get("cursor")) is not None:
        doc["cursor"] = [cursor.ts_ms, list(cursor.event_ids)]
    return doc


def _contact_from_json(doc: dict) -> dict:
    contact = {**new_contact(), **doc}
    contact["sent"] = [Booking(*b) for b in doc.get("sent", ())]
    contact["orders"] = Orders(*doc.get("orders", ()))
    cursor = doc.get("cursor")
    contact["cursor"] = None if cursor is None else Cursor(cursor[0], list(cursor[1]))
    return contact


def position(item: Event | Floor) -> tuple[int, str]:
    """Where an event (or a floor) stands in the customer's timeline: (ts, event id)."""
    return (item.ts_ms, item.event_id)


def event_time(item: Event | Floor) -> int:
    """An event's time: the key to bisect a sorted timeline by time alone."""
    return item.ts_ms
