"""The event-time watermark of one partition. Pure.

The watermark is the largest event time seen minus the allowed lateness: an event older
than it is late. It only moves forward. When a partition has been idle for longer than
the idle timeout, it follows the wall clock from where it stood, so journeys still
expire (and leaks still fire) when traffic stops. Idle means no records to read: a
partition whose records wait for the worker (a backlog, a worker that was stalled) is
behind, not idle, or the events of the backlog would be judged late by the time it
took to reach them.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    value: int = NEVER
    max_event_ms: int = NEVER
    last_arrival_wall_ms: int | None = None

    def observe(self, event_ms: int, wall_ms: int) -> bool:
        """Record an arriving event; return False if it is late."""
        on_time = event_ms >= self.value
        self.max_event_ms = max(self.max_event_ms, event_ms)
        self.value = max(self.value, self.max_event_ms - self.lateness_ms)
        self.last_arrival_wall_ms = wall_ms
        return on_time

    def on_idle(self, wall_ms: int, behind: bool = False) -> int:
        """Let the watermark follow the wall clock after the idle timeout; return it.
        `behind`: the partition has records not read yet, so the idle clock restarts."""
        if behind:
            self.last_arrival_wall_ms = max(self.last_arrival_wall_ms or wall_ms, wall_ms)
            return self.value
        if self.last_arrival_wall_ms is None or self.max_event_ms == NEVER:
            return self.value
        idle_for = wall_ms - self.last_arrival_wall_ms - self.idle_timeout_ms
        if idle_for > 0:
            self.value = max(self.value, self.max_event_ms - self.lateness_ms + idle_for)
        return self.value
