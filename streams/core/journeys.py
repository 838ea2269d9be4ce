"""Journeys of one customer, folded from their touchpoints in event time. Pure.

Semantics (README "Journeys" says the same for users). Per configured journey, over the
customer's touchpoints sorted by (ts, event_id):

- **Opening.** A touchpoint of one of the journey's `entry` types opens an instance when
  none is open and the re-entry rule allows it (`reentry`: never, after_exit, always;
  `cooldown`). The entry may be any configured stage, not only the first: a ticket first
  seen at its take-in-charge still gets a journey, and `entry_stage` records where it
  came in. Stages a journey jumped over are "skipped", not "reached".
- **Advancing.** Each touchpoint of the journey's types joins the open instance; the
  stage is the furthest reached. A `goal` touchpoint completes it.
- **After the goal** (`after_goal`): stages past the goal's (delivery) always join the
  completed instance. A touchpoint of a stage up to the goal's
    attach (default)  joins the completed instance as a post-goal touchpoint; an entry
                      touchpoint that re-entry allows opens the next instance instead;
    reopen            joins it and re-opens it: open again until a goal comes again;
    new               closes it and opens the next instance (re-entry permitting; if
                      not, it attaches).
- **Closing.** An instance closes `expiry` after its last touchpoint, at a `close_on`
  touchpoint (which joins it first), or when the next instance opens. Status: open,
  completed (goal reached, still open), closed (ended after its goal, or by a closing
  touchpoint), expired (ended without its goal).
- **After a close** (`after_close`), a touchpoint of the journey's types after a closing
  touchpoint ended the instance:
    outside (default)  is reported outside it (an entry that re-entry allows opens the
                       next instance, as after any end);
    reopen             joins it and re-opens it while its expiry (after its last
                       touchpoint) has not passed: `reopened` counts it, `closures_ms`
                       keeps each closure; its goal time stays, so clocks that start at
                       the entry do not restart;
    new                opens the next instance, whatever its type, if re-entry allows.
- **Nothing falls through.** A touchpoint of the journey's types that joins no instance
  gets a reason (`OUTSIDE_REASONS`): the customer step reports it in
  `touchpoints_outside_journeys` once that is final, i.e. once the watermark has passed
  it (the fold is causal: later touchpoints cannot change a verdict; an identity merge
  that brings older ones can, and is corrected).
- **Equal times.** Touchpoints are ordered by event time, then event id: the same order
  on every replay, whatever the arrival order.

The fold is incremental: `JourneyRun.feed` takes one touchpoint in O(1) (plus the leak
rules' small partial states, streams.core.leaks), so an in-order touchpoint costs one
step. An out-of-order touchpoint or an identity merge re-folds the customer's retained
touchpoints from the journey's floor: the same function, so both give the same
journeys. The watermark (event time minus lateness) decides what is final: an instance
closed before it, whose leaks are decided, is *sealed* (emitted one last time, then
forgotten); its `Floor` keeps what re-entry needs and nothing at or before it is folded
again.
"""

from __future__ import annotations

import functools
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from streams.config import Config, Journey
from streams.core.leaks import Leak, Tracker, trackers_for
from streams.core.state import Event, Floor, Signature, position

MAX_PATH = 100  # touchpoints kept in a journey's path; longer paths say so

# Why a touchpoint of a journey's types joined no instance of it.
NO_OPEN_JOURNEY = "no_open_journey"  # not an entry type, and no instance open
REENTRY_NOT_ALLOWED = "reentry_not_allowed"  # an entry the re-entry rule kept out
ENTRY_BLOCKED = "entry_blocked"  # an entry while one is open, with blocked_entry: ignore
GOAL_NOT_REACHED = "goal_not_reached"  # a stage past the goal's before the goal
OUTSIDE_REASONS = (NO_OPEN_JOURNEY, REENTRY_NOT_ALLOWED, ENTRY_BLOCKED, GOAL_NOT_REACHED)


@functools.lru_cache(maxsize=1 << 16)  # asked for every open journey on each step
def journey_id(journey: str, entry_event_id: str) -> str:
    """Stable across merges and replays: the journey and the event that opened it."""
    return hashlib.blake2b(f"{journey}/{entry_event_id}".encode(), digest_size=12).hexdigest()


@dataclass(eq=False)
class Instance:
    """One journey instance: its touchpoints and a summary kept up to date as they join."""

    journey: Journey
    entry: Event
    leak_rules: list[Tracker]
    events: list[Event] = field(default_factory=list)
    stage: int = 0
    stage_reached: dict[int, int] = field(default_factory=dict)  # stage -> first ts
    completed_ms: int | None = None
    closed_ms: int | None = None
    expired: bool = False
    closed_by: Event | None = None  # the touchpoint that opened the next instance, if one did
    closed_on: bool = False  # ended by one of the journey's close_on touchpoints
    reopened: int = 0  # times a touchpoint re-opened it after its goal or its close
    closures_ms: list[int] = field(default_factory=list)  # closes undone by a re-opening
    digest: int = 0  # of its event ids, order-free: part of the signature
    # What the leak rules found, kept until a touchpoint joins or the goal is undone.
    _leaks: list[Leak] | None = field(default=None, repr=False)
    _signature: Signature | None = field(default=None, repr=False)  # until it changes

    @functools.cached_property
    def id(self) -> str:
        return journey_id(self.journey.name, self.entry.event_id)

    @property
    def entry_stage(self) -> int:
        return self.journey.stage_of[self.entry.type]

    @property
    def last_ms(self) -> int:
        return self.events[-1].ts_ms

    @property
    def deadline_ms(self) -> int:
        return self.events[-1].ts_ms + self.journey.expiry_ms

    def add(self, event: Event) -> None:
        stage = self.journey.stage_of[event.type]
        self.events.append(event)
        self.digest ^= zlib.crc32(event.event_id.encode())
        if stage > self.stage:
            self.stage = stage
        if stage not in self.stage_reached:
            self.stage_reached[stage] = event.ts_ms
        if event.type in self.journey.goal and self.completed_ms is None:
            self.completed_ms = event.ts_ms
        for tracker in self.leak_rules:
            tracker.feed(event, self.completed_ms)
        self._leaks = self._signature = None

    def reopen(self) -> None:
        self.completed_ms = None
        self.reopened += 1
        self._leaks = self._signature = None
        for tracker in self.leak_rules:
            tracker.reopened()

    def reopen_after_close(self) -> None:
        """Open again after a closing touchpoint (`after_close: reopen`); the goal stays."""
        assert self.closed_ms is not None
        self.closures_ms.append(self.closed_ms)
        self.closed_ms, self.closed_on = None, False
        self.reopened += 1
        self._signature = None

    def close(
        self, at_ms: int, expired: bool, by: Event | None = None, closing: bool = False
    ) -> None:
        self.closed_ms = at_ms
        self.closed_by = by
        self.closed_on = closing
        self.expired = expired and self.completed_ms is None
        self._signature = None

    @property
    def reopenable(self) -> bool:
        """Closed by a closing touchpoint, and a later one may still re-open it."""
        return self.closed_on and self.journey.after_close == "reopen"

    @property
    def final_ms(self) -> int | None:
        """When nothing can change it any more but its leaks: None while open."""
        if self.closed_ms is None:
            return None
        return self.deadline_ms if self.reopenable else self.closed_ms

    @property
    def status(self) -> str:
        if self.expired:
            return "expired"
        if self.closed_ms is not None:
            return "closed"
        return "open" if self.completed_ms is None else "completed"

    @property
    def leaks(self) -> list[Leak]:
        """What the leak rules find in it so far (decided or pending)."""
        if self._leaks is None:
            found = (t.leak(self.id, self.completed_ms) for t in self.leak_rules)
            self._leaks = [leak for leak in found if leak is not None]
        return self._leaks

    @property
    def exit_ms(self) -> int:
        """When the customer left it: its goal, else its close, else its last touchpoint."""
        if self.completed_ms is not None:
            return self.completed_ms
        return self.closed_ms if self.closed_ms is not None else self.last_ms

    def signature(self, generation: int) -> Signature:
        cached = self._signature
        if cached is None or cached.generation != generation:
            events_hash = f"{len(self.events)}:{self.digest:08x}"
            cached = self._signature = Signature(events_hash, self.status, generation)
        return cached


class JourneyRun:
    """The fold of one journey over a customer's sorted touchpoints (module docstring).

    `feed` takes the next touchpoint; `finish` closes what the watermark has expired.
    Instances are appended in order; `outside` maps each touchpoint of the journey's
    types that joined none to its reason, and `outside_events` holds them in order: the
    first `told` of them have been reported (streams.core.customer).
    """

    def __init__(self, journey: Journey, leak_rules: tuple, floor: Floor | None) -> None:
        self.journey = journey
        self.leak_rules = leak_rules  # the rules watching this journey
        self.floor = floor
        self.instances: list[Instance] = []
        self.current: Instance | None = None
        self.outside: dict[str, str] = {}
        self.outside_events: list[Event] = []
        self.told = 0
        # The previous instance, for re-entry: in this run, or sealed before (its floor).
        self.previous = floor is not None
        self.closed_on = floor is not None and floor.closed_on  # ... and a touchpoint closed it
        self.exit_at = floor.exit_ms if floor is not None else None
        self.start_at = floor.start_ms if floor is not None else None

    def feed(self, event: Event) -> bool:
        """Take the next touchpoint; True if it joined an instance."""
        journey, current = self.journey, self.current
        if current is not None and current.deadline_ms <= event.ts_ms:
            self._end(current.deadline_ms, expired=True)
            current = None
        stage = journey.stage_of.get(event.type)
        if stage is None:
            return False
        is_entry = event.type in journey.entry
        if current is None:
            if self.closed_on and journey.after_close != "outside" and self._after_close(event):
                return True
            if not is_entry:
                self._out(event, NO_OPEN_JOURNEY)
            elif not self._allowed(event.ts_ms):
                self._out(event, REENTRY_NOT_ALLOWED)
            else:
                self._open(event)
                return True
            return False
        if current.completed_ms is not None and stage <= journey.goal_stage:
            mode = journey.after_goal
            if mode == "reopen":
                current.reopen()
            elif (is_entry or mode == "new") and self._allowed(event.ts_ms, current):
                self._end(event.ts_ms, expired=False, by=event)
                self._open(event)
                return True
        elif is_entry and current.completed_ms is None:  # an entry while one is open
            if journey.reentry == "always" and self._allowed(event.ts_ms, current):
                self._end(event.ts_ms, expired=True, by=event)
                self._open(event)
                return True
            if journey.blocked_entry == "ignore":
                self._out(event, ENTRY_BLOCKED)
                return False
        elif current.completed_ms is None and stage > journey.goal_stage:
            self._out(event, GOAL_NOT_REACHED)
            return False
        self._add(current, event)
        return True

    def _out(self, event: Event, reason: str) -> None:
        self.outside[event.event_id] = reason
        self.outside_events.append(event)

    def kept(self, retained: dict[str, Event]) -> None:
        """Forget the verdicts of touchpoints the customer no longer keeps."""
        if any(e.event_id not in retained for e in self.outside_events):
            told = self.outside_events[: self.told]
            self.told = sum(e.event_id in retained for e in told)
            self.outside_events = [e for e in self.outside_events if e.event_id in retained]
            self.outside = {e.event_id: self.outside[e.event_id] for e in self.outside_events}

    def finish(self, watermark_ms: int) -> None:
        """Close the open instance if the watermark has passed its deadline."""
        if self.current is not None and self.current.deadline_ms <= watermark_ms:
            self._end(self.current.deadline_ms, expired=True)

    def _after_close(self, event: Event) -> bool:
        """A touchpoint after a closing one (`after_close`: reopen or new): True if it
        joined an instance; else it takes the ordinary way (and its reason)."""
        last = self.instances[-1] if self.instances else None
        if self.journey.after_close == "reopen":
            if last is None or not last.reopenable or event.ts_ms >= last.deadline_ms:
                return False
            last.reopen_after_close()
            self.current = last
            self._add(last, event)
            return True
        if not self._allowed(event.ts_ms):
            return False
        self._open(event)
        return True

    def _open(self, event: Event) -> None:
        instance = Instance(self.journey, event, [t.fresh() for t in self.leak_rules])
        self.instances.append(instance)
        self.current = instance
        self._add(instance, event)

    def _add(self, instance: Instance, event: Event) -> None:
        instance.add(event)
        if event.type in self.journey.close_on:
            self._end(event.ts_ms, expired=False, closing=True)

    def _end(
        self, at_ms: int, expired: bool, by: Event | None = None, closing: bool = False
    ) -> None:
        instance = self.current
        assert instance is not None
        instance.close(at_ms, expired, by, closing)
        self.previous, self.exit_at, self.start_at = True, instance.exit_ms, instance.entry.ts_ms
        self.closed_on = closing
        self.current = None

    def _allowed(self, ts_ms: int, leaving: Instance | None = None) -> bool:
        """May an entry at `ts_ms` open an instance (after `leaving`, if one is open)?"""
        exit_at: int | None
        start_at: int | None
        if leaving is not None:
            previous, exit_at, start_at = True, leaving.exit_ms, leaving.entry.ts_ms
        else:
            previous, exit_at, start_at = self.previous, self.exit_at, self.start_at
        if not previous:
            return True
        if self.journey.reentry == "never":
            return False
        since = start_at if self.journey.reentry == "always" else exit_at
        return since is None or ts_ms >= since + self.journey.cooldown_ms


def run_journey(
    journey: Journey,
    events: Iterable[Event],
    floor: Floor | None,
    watermark_ms: int,
    outside: dict[str, str] | None = None,
    leak_rules: tuple = (),
) -> list[Instance]:
    """The instances of one journey over sorted events, folded from scratch; the
    touchpoints that joined none go to `outside` with their reason."""
    run = JourneyRun(journey, leak_rules, floor)
    for event in events:
        if floor is None or position(event) > position(floor):
            run.feed(event)
    run.finish(watermark_ms)
    if outside is not None:
        outside.update(run.outside)
    return run.instances


@dataclass
class Runs:
    """Every journey's run over one customer's retained touchpoints, kept between steps in
    memory (never stored: rebuilt from the touchpoints after a restart)."""

    runs: dict[str, JourneyRun]
    last: tuple[int, str] | None = None  # position of the last touchpoint fed
    # Touchpoints fed that joined no instance, in order: they wait for an identity merge
    # (or eviction). Kept here so a step need not look for them among its instances.
    strays: dict[str, Event] = field(default_factory=dict)

    @classmethod
    def fold(cls, config: Config, events: list[Event], floors: dict[str, Floor]) -> Runs:
        runs = cls(
            {
                name: JourneyRun(journey, trackers_for(config, name), floors.get(name))
                for name, journey in config.journeys.items()
            }
        )
        runs.feed(events)
        return runs

    def feed(self, events: Iterable[Event]) -> None:
        """Touchpoints after `last`, in order."""
        runs = self.runs.values()
        for event in events:
            at = (event.ts_ms, event.event_id)
            joined = False
            for run in runs:
                # Another journey's touchpoint matters only to expire an open instance.
                current = run.current
                if event.type not in run.journey.stage_of and (
                    current is None or current.deadline_ms > event.ts_ms
                ):
                    continue
                if run.floor is None or at > (run.floor.ts_ms, run.floor.event_id):
                    joined = run.feed(event) or joined
            if not joined:
                self.strays[event.event_id] = event
            self.last = at

    def takes(self, events: list[Event]) -> bool:
        """Can `events` (sorted) be fed on, or must the customer be folded again?"""
        return not events or self.last is None or position(events[0]) > self.last

    def finish(self, watermark_ms: int) -> None:
        for run in self.runs.values():
            run.finish(watermark_ms)

    def instances(self) -> list[Instance]:
        return [i for run in self.runs.values() for i in run.instances]

    def forget(self, sealed: set[int], floors: dict[str, Floor]) -> None:
        """Drop sealed instances (by id()); folds start from the new floors."""
        for name, run in self.runs.items():
            if any(id(i) in sealed for i in run.instances):
                run.instances = [i for i in run.instances if id(i) not in sealed]
                run.floor = floors.get(name)

    def retained(self, events: list[Event], kept: dict[str, Event]) -> None:
        """The customer now keeps only `events` (`kept`: the same, by id): strays are those
        of them in no instance left (a touchpoint of a sealed instance kept for an open one
        counts as one); the runs forget the verdicts of the others."""
        joined = {e.event_id for i in self.instances() for e in i.events}
        self.strays = {e.event_id: e for e in events if e.event_id not in joined}
        for run in self.runs.values():
            run.kept(kept)


def sealed(instance: Instance, watermark_ms: int, leaks: list[Leak] | None = None) -> bool:
    """Final: closed (past re-opening), and every leak it may hold decided, before the
    watermark. Strictly before: a touchpoint at the watermark is on time, and one at the
    instance's last time may still come with a smaller id, before it."""
    final_ms = instance.final_ms
    if final_ms is None:
        return False
    leaks = instance.leaks if leaks is None else leaks
    return max([final_ms, *(leak.due_ms for leak in leaks)]) < watermark_ms
