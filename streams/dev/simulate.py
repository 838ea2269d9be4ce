"""`parcours simulate`: a live synthetic population sending touchpoints.

Customers arrive as a Poisson process (seeded) and walk the synthetic journeys of
`streams.dev.synth` (segments, channels, funnel abandonment, support contacts, survey
answers, anonymous visitors who log in at checkout), so the stream's mean rate is the
requested events/s. A burst pattern multiplies the arrival rate for a few seconds at a
fixed period, as a campaign email does; the touchpoints of those customers follow over
the next minutes. Delivery faults are simulated at configurable rates: a duplicate is
the same event sent again a few seconds later (a producer retry), an out-of-order event
is held back up to `max_delay_seconds` (keep it below the allowed lateness, or the
worker counts it as late).

Paced, event time is the wall clock: an event is sent when its time comes. `--fast`
sends as fast as the broker takes it, with event times back-dated so the last events
are about now.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO

import orjson

from streams.config.settings import Settings
from streams.dev.synth import DEFAULT_MIX, Mix, journey_events, new_customer
from streams.edge.producer import TouchpointProducer

SAMPLE_CUSTOMERS = 2000  # to estimate the mean touchpoints per customer of a mix
WARM_UP_GAPS = 5  # most journeys span fewer touchpoint gaps than this


@dataclass(frozen=True)
class Pace:
    events_per_second: float = 20.0
    burst_factor: float = 1.0  # arrival rate multiplier during a burst; 1 is steady
    burst_every_seconds: float = 60.0
    burst_seconds: float = 10.0

    def arrival_factor(self, offset_seconds: float) -> float:
        in_burst = offset_seconds % self.burst_every_seconds < self.burst_seconds
        return self.burst_factor if in_burst else 1.0

    def mean_factor(self) -> float:
        """The average multiplier over a period, so bursts keep the mean rate."""
        share = min(1.0, self.burst_seconds / self.burst_every_seconds)
        return share * self.burst_factor + (1 - share)


@dataclass(frozen=True)
class Faults:
    duplicate_rate: float = 0.01
    out_of_order_rate: float = 0.02
    max_delay_seconds: float = 30.0


@dataclass(frozen=True, order=True)
class Delivery:
    """One message to send: an event at `send_offset` seconds after the start."""

    send_offset: float
    sequence: int
    event: dict = field(compare=False)
    kind: str = field(compare=False, default="event")  # event, duplicate or delayed


def mean_touchpoints(mix: Mix, seed: int) -> float:
    rng = random.Random(seed)
    start = datetime(2000, 1, 1)
    total = sum(
        len(journey_events(new_customer("x", rng, mix), start, rng, 60, mix))
        for _ in range(SAMPLE_CUSTOMERS)
    )
    return total / SAMPLE_CUSTOMERS


def deliveries(
    seed: int,
    start: datetime,
    pace: Pace = Pace(),
    mix: Mix = DEFAULT_MIX,
    faults: Faults = Faults(),
    max_gap_seconds: int = 60,
    id_prefix: str = "sim",
) -> Iterator[Delivery]:
    """An endless stream of deliveries in send order, sent from `start` on.

    A customer's touchpoints come 5 s to `max_gap_seconds` apart. The population is
    already busy at `start` (customers arrive from a few journeys' length before), so
    the rate holds from the first second; what they did before `start` is not sent.
    """
    rng = random.Random(seed)
    customer_rate = pace.events_per_second / mean_touchpoints(mix, seed) / pace.mean_factor()
    pending: list[Delivery] = []
    sequence = itertools.count()
    arrival: float = -WARM_UP_GAPS * max_gap_seconds  # next customer's arrival, seconds after start
    for number in itertools.count():
        # Every event lies after its customer's arrival, so once the next arrival is
        # later than the earliest pending delivery, that delivery is the next to go.
        while pending and pending[0].send_offset <= arrival:
            delivery = heapq.heappop(pending)
            if delivery.send_offset >= 0:
                yield delivery
        customer = new_customer(f"{id_prefix}-{number:07d}", rng, mix)
        arrived = start + timedelta(seconds=arrival)
        events = journey_events(customer, arrived, rng, max_gap_seconds, mix)
        lead = datetime.fromisoformat(events[0]["ts"]) - arrived  # first touch on arrival
        for event in events:
            at = datetime.fromisoformat(event["ts"]) - lead
            event["ts"] = at.isoformat(timespec="milliseconds")
            offset = (at - start).total_seconds()
            kind = "event"
            if rng.random() < faults.out_of_order_rate:
                kind, offset = "delayed", offset + rng.uniform(1.0, faults.max_delay_seconds)
            heapq.heappush(pending, Delivery(offset, next(sequence), event, kind))
            # The producer retries a few seconds later (an original before start is not sent).
            if rng.random() < faults.duplicate_rate and offset >= 0:
                again = offset + rng.uniform(0.5, 5.0)
                heapq.heappush(pending, Delivery(again, next(sequence), event, "duplicate"))
        arrival += rng.expovariate(customer_rate * pace.arrival_factor(arrival))


@dataclass
class Summary:
    sent: Counter = field(default_factory=Counter)  # by delivery kind
    types: Counter = field(default_factory=Counter)
    customers: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    @property
    def messages(self) -> int:
        return sum(self.sent.values())

    def add(self, delivery: Delivery) -> None:
        self.sent[delivery.kind] += 1
        if delivery.kind != "duplicate":
            self.types[delivery.event["type"]] += 1
        self.customers.add(delivery.event.get("customer_id") or delivery.event["anonymous_id"])

    def progress(self) -> str:
        elapsed = time.monotonic() - self.started
        return (
            f"sent {self.messages:,} events in {elapsed:.0f} s "
            f"({self.messages / max(elapsed, 1e-9):,.0f}/s), {len(self.customers):,} customers, "
            f"{self.sent['duplicate']:,} duplicates, {self.sent['delayed']:,} out of order"
        )


Send = Callable[[dict], Awaitable[object]]  # what it returns is not used


async def run(
    stream: Iterator[Delivery],
    send: Send,
    limit: int | None,
    paced: bool,
    summary: Summary,
    progress_every: float = 5.0,
    heartbeat: Path | None = None,
) -> Summary:
    """Send deliveries (paced by their offsets, or as fast as possible) until `limit`
    messages or until cancelled; progress goes to stderr, and `heartbeat` (a file a
    container's health check reads the age of) is touched with it."""
    started = shown = time.monotonic()
    for delivery in itertools.islice(stream, limit):
        if paced:
            delay = started + delivery.send_offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await send(delivery.event)
        summary.add(delivery)
        if time.monotonic() - shown >= progress_every:
            shown = time.monotonic()
            print(summary.progress(), file=sys.stderr, flush=True)
            if heartbeat is not None:
                heartbeat.touch()
    return summary


def fast_start(now: datetime, events: int, pace: Pace) -> datetime:
    """Where to start event time so that `events` sent at once end about now."""
    return now - timedelta(seconds=events / pace.events_per_second)


def cancel_on_sigterm() -> None:
    """Stop like Ctrl-C on SIGTERM (`docker stop`), so what is batched is still sent."""
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)


async def to_kafka(
    stream: Iterator[Delivery],
    settings: Settings,
    limit: int | None,
    paced: bool,
    summary: Summary,
    envelope: int,
) -> Summary:
    """Send through the producer helper: checked, batched per key, flushed on stop."""
    cancel_on_sigterm()
    async with TouchpointProducer(settings=settings, max_events=envelope) as producer:
        return await run(
            stream, producer.send, limit, paced, summary, heartbeat=settings.heartbeat_file
        )


async def to_jsonl(
    stream: Iterator[Delivery],
    out: IO[bytes],
    limit: int | None,
    paced: bool,
    summary: Summary,
    heartbeat: Path | None = None,
) -> Summary:
    cancel_on_sigterm()

    async def write(event: dict) -> None:
        out.write(orjson.dumps(event) + b"\n")

    return await run(stream, write, limit, paced, summary, heartbeat=heartbeat)
