"""Journeys of one customer, computed from their touchpoints in event time. Pure.

A journey instance opens on an entry touchpoint, advances through stages, completes on
a goal touchpoint (then, and only then, later stages such as delivery attach), closes after
`expiry` without any of its touchpoints, or when a new entry starts the next instance.
Re-entry rules (never, after_exit, always, a cool-down) decide whether an entry may start
another instance; one that may not joins the open instance or is ignored and counted.

Journeys are a function of the customer's retained events sorted by (ts, event_id):
any arrival order within the allowed lateness gives the same journeys, and merging two
customers is the union of their events. The watermark (event time minus lateness)
decides what is final: an instance closed before it is *sealed* (emitted one last time,
then forgotten), and events before it that belong to no unsealed instance are evicted,
which keeps state bounded. `floors` remember, per journey, the last event of the last
sealed instance, so a recompute never reopens what was sealed. The customer's state
(`streams.core.state.CustomerState`) holds the events, floors and what was emitted.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.config import Config, Journey
from streams.core.leaks import Leak, find
from streams.core.state import CustomerState, Event, Floor, Signature, position

MAX_PATH = 100  # touchpoints kept in a journey's path; longer paths say so


@functools.lru_cache(maxsize=1 << 16)  # asked for every open journey on each step
def journey_id(journey: str, entry_event_id: str) -> str:
    """Stable across merges and replays: the journey and the event that opened it."""
    return hashlib.blake2b(f"{journey}/{entry_event_id}".encode(), digest_size=12).hexdigest()


@dataclass
class Instance:
    journey: Journey
    entry: Event
    events: list[Event] = field(default_factory=list)
    stage: int = 0
    stage_reached: dict[int, int] = field(default_factory=dict)  # stage -> first ts
    completed_ms: int | None = None
    closed_ms: int | None = None
    expired: bool = False
    closed_by: Event | None = None  # the touchpoint that closed it, if one did
    leaks: list[Leak] = field(default_factory=list)  # what the leak rules find in it

    @property
    def id(self) -> str:
        return journey_id(self.journey.name, self.entry.event_id)

    @property
    def last_ms(self) -> int:
        return self.events[-1].ts_ms

    @property
    def deadline_ms(self) -> int:
        return self.last_ms + self.journey.expiry_ms

    def add(self, event: Event) -> None:
        stage = self.journey.stage_of[event.type]
        self.events.append(event)
        self.stage = max(self.stage, stage)
        self.stage_reached.setdefault(stage, event.ts_ms)
        if event.type in self.journey.goal and self.completed_ms is None:
            self.completed_ms = event.ts_ms

    def close(self, at_ms: int, expired: bool, by: Event | None = None) -> None:
        self.closed_ms = at_ms
        self.closed_by = by
        self.expired = expired and self.completed_ms is None

    @property
    def status(self) -> str:
        if self.expired:
            return "expired"
        if self.completed_ms is not None:
            return "closed" if self.closed_ms is not None else "completed"
        return "open"

    def signature(self, generation: int) -> Signature:
        ids = hashlib.blake2b("\n".join(e.event_id for e in self.events).encode(), digest_size=8)
        return Signature(ids.hexdigest(), self.status, generation)


def run_journey(
    journey: Journey,
    events: Iterable[Event],
    floor: Floor | None,
    watermark_ms: int,
    ignored: list[str] | None = None,
) -> list[Instance]:
    """The instances of one journey over sorted events (see module docstring); the ids
    of entry touchpoints the re-entry rules kept out go to `ignored`."""
    instances: list[Instance] = []
    current: Instance | None = None
    reentry = _Reentry(journey, floor)
    for event in events:
        if floor is not None and position(event) <= position(floor):
            continue
        if current is not None and current.deadline_ms <= event.ts_ms:
            current.close(current.deadline_ms, expired=True)
            reentry.exited(current)
            current = None
        stage = journey.stage_of.get(event.type)
        if stage is None:
            continue
        is_entry = event.type in journey.entry
        if (
            current is not None
            and current.completed_ms is not None
            and stage <= current.journey.goal_stage
        ):
            if is_entry and not reentry.allowed(event.ts_ms, current):
                _ignore(ignored, event)
                continue
            if journey.reentry == "never":  # no next instance: it stays in this one
                current.add(event)
                continue
            current.close(event.ts_ms, expired=False, by=event)  # the next instance starts here
            reentry.exited(current)
            current = None
        if current is None:
            if not is_entry:
                continue
            if not reentry.allowed(event.ts_ms):
                _ignore(ignored, event)
                continue
            current = Instance(journey, entry=event)
            instances.append(current)
        elif is_entry and current.completed_ms is None:  # an entry while one is open
            if journey.reentry == "always" and reentry.allowed(event.ts_ms, current):
                current.close(event.ts_ms, expired=True, by=event)
                reentry.exited(current)
                current = Instance(journey, entry=event)
                instances.append(current)
            elif journey.blocked_entry == "ignore":
                _ignore(ignored, event)
                continue
        elif current.completed_ms is None and stage > current.journey.goal_stage:
            continue  # after-goal stages (delivery) belong to completed journeys only
        current.add(event)
    if current is not None and current.deadline_ms <= watermark_ms:
        current.close(current.deadline_ms, expired=True)
    return instances


class _Reentry:
    """When an entry touchpoint may start another instance (the journey's re-entry rule),
    given the previous instance: in this run, or sealed before it (its floor)."""

    def __init__(self, journey: Journey, floor: Floor | None) -> None:
        self.journey = journey
        self.previous = floor is not None
        self.exit_ms = floor.exit_ms if floor is not None else None
        self.start_ms = floor.start_ms if floor is not None else None

    def exited(self, instance: Instance) -> None:
        self.previous = True
        self.exit_ms = exit_ms(instance)
        self.start_ms = instance.entry.ts_ms

    def allowed(self, ts_ms: int, leaving: Instance | None = None) -> bool:
        """May an entry at `ts_ms` start an instance (after `leaving`, if one is open)?"""
        if leaving is not None:
            previous, exit_at, start_at = True, exit_ms(leaving), leaving.entry.ts_ms
        else:
            previous, exit_at, start_at = self.previous, self.exit_ms, self.start_ms
        if not previous:
            return True
        if self.journey.reentry == "never":
            return False
        since = start_at if self.journey.reentry == "always" else exit_at
        return since is None or ts_ms >= since + self.journey.cooldown_ms


def exit_ms(instance: Instance) -> int:
    """When a customer left an instance: its goal, else its close."""
    if instance.completed_ms is not None:
        return instance.completed_ms
    return instance.closed_ms if instance.closed_ms is not None else instance.last_ms


def _ignore(ignored: list[str] | None, event: Event) -> None:
    if ignored is not None:
        ignored.append(event.event_id)


def compute(
    config: Config,
    state: CustomerState,
    watermark_ms: int,
    ignored: dict[str, list[str]] | None = None,
) -> list[Instance]:
    """Every journey's instances, with their leaks; entries the re-entry rules kept out go
    to `ignored` by journey."""
    instances = []
    for journey in config.journeys.values():
        kept_out = [] if ignored is None else ignored.setdefault(journey.name, [])
        floor = state.floors.get(journey.name)
        instances += run_journey(journey, state.events, floor, watermark_ms, kept_out)
    for instance in instances:
        instance.leaks = _leaks(config, instance)
    return instances


def sealed(instance: Instance, watermark_ms: int) -> bool:
    """Final: closed, and every leak it may hold decided, before the watermark."""
    if instance.closed_ms is None:
        return False
    return max([instance.closed_ms, *(leak.due_ms for leak in instance.leaks)]) <= watermark_ms


def _leaks(config: Config, instance: Instance) -> list[Leak]:
    """The leaks (decided or pending) the configured rules find in one instance."""
    found = []
    for rule in config.leaks.values():
        if rule.journey == instance.journey.name:
            leak = find(
                rule, instance.id, instance.events, instance.journey.stage_of, instance.completed_ms
            )
            if leak is not None:
                found.append(leak)
    return found


def journey_row(
    instance: Instance, customer_key: str, version: int, now_ms: int, segment: str = ""
) -> dict:
    journey = instance.journey
    path = instance.events[:MAX_PATH]
    return {
        "journey_id": instance.id,
        "journey": journey.name,
        "customer_key": customer_key,
        "status": instance.status,
        "stage": journey.stages[instance.stage],
        "stage_index": instance.stage,
        "stages_reached": [journey.stages[i] for i in sorted(instance.stage_reached)],
        "stages_reached_ms": [instance.stage_reached[i] for i in sorted(instance.stage_reached)],
        "path": [e.type for e in path],
        "path_event_ids": [e.event_id for e in path],
        "path_stages": [journey.stages[journey.stage_of[e.type]] for e in path],
        "path_truncated": len(instance.events) > MAX_PATH,
        "touchpoints": len(instance.events),
        "entry_event_id": instance.entry.event_id,
        "opened_ms": instance.entry.ts_ms,
        "last_event_ms": instance.last_ms,
        "completed_ms": instance.completed_ms,
        "closed_ms": instance.closed_ms,
        "superseded_by": "",
        "version": version,
        "updated_ms": now_ms,
        "entry_channel": instance.entry.channel,
        "segment": segment,  # the customer's segment when the row was emitted
    }


def superseded_row(
    jid: str, journey: str, customer_key: str, version: int, successor: str, now_ms: int
) -> dict:
    return {
        "journey_id": jid,
        "journey": journey,
        "customer_key": customer_key,
        "status": "superseded",
        "stage": "",
        "stage_index": 0,
        "stages_reached": [],
        "stages_reached_ms": [],
        "path": [],
        "path_event_ids": [],
        "path_stages": [],
        "path_truncated": False,
        "touchpoints": 0,
        "entry_event_id": "",
        "opened_ms": 0,
        "last_event_ms": 0,
        "completed_ms": None,
        "closed_ms": None,
        "superseded_by": successor,
        "version": version,
        "updated_ms": now_ms,
    }
