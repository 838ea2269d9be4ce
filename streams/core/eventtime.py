"""The event-time watermark of one partition. Pure.

The watermark is the largest event time seen minus the allowed lateness: an event older
than it is late. It only moves forward. When a partition has been idle for longer than
the idle timeout, it follows the wall clock from where it stood, so journeys still
expire (and leaks still fire) when traffic stops. Idle means no records to read: a
partition whose records wait for the worker (a backlog, a worker that was stalled) is
behind, not idle, or the events of the backlog would be judged late by the time it
took to reach them.

Events are judged where they enter, on the partition of the message that brought them,
and go on to their customer's partition (a message not keyed by its customer). So the
journeys of a partition move on a watermark of their own: the least of the entry
watermarks of every partition that may still send them events, each told in-band after
the events it sent (how Flink moves watermarks through a shuffle). An idle partition
drops out of the minimum; a partition not heard from yet holds it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

NEVER = -(2**62)  # before any event
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (floor). `int(moment.timestamp() * 1000)`
    goes through a float and is one millisecond short for about a quarter of values."""
    return (moment - EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """The UTC moment `ms` milliseconds after the epoch, exactly."""
    return EPOCH + ms * _MS


@dataclass
class Watermark:
    lateness_ms: int
    idle_timeout_ms: int
    value: int = NEVER  # the entry watermark: events entering here below it are late
    max_event_ms: int = NEVER
    last_arrival_wall_ms: int | None = None
    idle: bool = False  # no records for longer than the idle timeout
    # Other partitions that may forward events here -> [their entry watermark, idle], as
    # last told (keys are strings: the mark is stored as JSON).
    heard: dict[str, list] = field(default_factory=dict)
    journeys_ms: int = NEVER  # what this partition's journeys move on (see module doc)

    def observe(self, event_ms: int, wall_ms: int) -> bool:
        """Record an arriving event; return False if it is late."""
        on_time = event_ms >= self.value
        self.max_event_ms = max(self.max_event_ms, event_ms)
        self.value = max(self.value, self.max_event_ms - self.lateness_ms)
        self.last_arrival_wall_ms = wall_ms
        self.idle = False
        return on_time

    def expect(self, sources: list[int]) -> None:
        """Wait for these partitions' watermarks: until one is told, it holds the
        journeys back (a backfill's forwards may be on their way)."""
        for source in sources:
            self.heard.setdefault(str(source), [NEVER, False])

    def hear(self, source: int, value: int, idle: bool) -> None:
        """Another partition's entry watermark, told after the events it forwarded."""
        before = self.heard.get(str(source), [NEVER, False])[0]
        self.heard[str(source)] = [max(before, value), idle]  # a re-sent older one is stale

    def combine(self) -> int:
        """Move the journeys' watermark to the least of the active partitions' (this one's
        own entry watermark among them); when all are idle, nothing is on its way: to
        the greatest (each follows the clock). It only moves forward. Return it."""
        members = [(self.value, self.idle), *((v, i) for v, i in self.heard.values())]
        active = [v for v, i in members if not i]
        moved = min(active) if active else max(v for v, _ in members)
        self.journeys_ms = max(self.journeys_ms, moved)
        return self.journeys_ms

    def on_idle(self, wall_ms: int, behind: bool = False) -> int:
        """Let the watermark follow the wall clock after the idle timeout; return it.
        `behind`: the partition has records not read yet, so the idle clock restarts."""
        if behind:
            self.last_arrival_wall_ms = max(self.last_arrival_wall_ms or wall_ms, wall_ms)
            self.idle = False
            return self.value
        if self.last_arrival_wall_ms is None or self.max_event_ms == NEVER:
            self.idle = True  # never had an event: nothing of it can be on its way
            return self.value
        idle_for = wall_ms - self.last_arrival_wall_ms - self.idle_timeout_ms
        if idle_for > 0:
            self.value = max(self.value, self.max_event_ms - self.lateness_ms + idle_for)
            self.idle = True
        return self.value


# How often at most a partition tells another its entry watermark when it sent it no
# touchpoints: each tell is a message on the other partition.
TELL_EVERY_MS = 1000


def tell_now(
    mark: Watermark,
    told: tuple[int, bool, int] | None,
    forwarded: bool,
    ticked: bool,
    wall_ms: int,
) -> bool:
    """Should a partition tell another its entry watermark `mark` now? `told` is what it
    told last (value, idle, wall ms; None: nothing since this process started). Always
    after touchpoints it sent there (the tell follows them), and the first time; else
    when it moved, at a tick or at most every TELL_EVERY_MS."""
    if forwarded or told is None:
        return True
    if told[:2] == (mark.value, mark.idle):
        return False
    return ticked or wall_ms - told[2] >= TELL_EVERY_MS
