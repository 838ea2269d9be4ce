"""Send touchpoints from CRM and back-office code.

    async with TouchpointProducer("localhost:9092") as producer:
        await producer.send(event)      # raises InvalidEvent at once if the event is bad
    # leaving the block sends what is batched and waits for the broker's acks

    with SyncTouchpointProducer("localhost:9092") as producer:  # plain scripts
        producer.send(event)

An event may leave out `event_id` (a UUIDv7 is made) and `ts` (the producer's clock);
`send` returns the event id. Each event is checked against the published touchpoint
schema and the worker's time limits before anything is sent, so a bad event fails where
it was made instead of in the dead-letter topic; the producer needs none of the server's
configuration (pass `known_types` to check the types too, e.g.
`load_config("journeys.yaml").touchpoint_types`).

Events are batched per partition into batch envelopes (the customers whose keys map to
one partition share them, each customer's events in order, so an envelope fills under
load and the worker takes many events per message), sent with acks=all and, unless the
settings turn it off, an idempotent producer; `flush()` returns once the broker has
acknowledged everything sent so far.

A batch goes out at `max_events`, `linger_seconds` after its first event, or once an
event `max_span_seconds` newer (in event time) is sent: holding a customer's events
back longer than the worker's allowed lateness while others' go ahead would make them
late, which matters when a backlog is sent faster than real time.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import threading
import time
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson

from streams.config.settings import TOUCHPOINTS, Settings
from streams.core.events import Rejection, ValidEvent, parser_for
from streams.core.ingest import customer_key, kafka_partition
from streams.edge.produce import kafka_producer, start_producer
from streams.edge.stamps import stamped

T = TypeVar("T")


class InvalidEvent(ValueError):
    """An event the worker would dead-letter; says where it is wrong and why."""

    def __init__(self, rejection: Rejection) -> None:
        self.reason, self.path, self.detail = rejection.reason, rejection.path, rejection.detail
        super().__init__(f"{rejection.path}: {rejection.detail} ({rejection.reason})")


class TouchpointProducer:
    """Validates, batches per customer key and sends touchpoints; flushes on exit."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        known_types: Iterable[str] | None = None,
        max_events: int = 100,
        linger_seconds: float = 1.0,
        max_span_seconds: float = 10.0,
    ) -> None:
        settings = settings or Settings()
        bootstrap = bootstrap or settings.broker
        if not bootstrap:
            raise ValueError("no broker: pass bootstrap='host:9092' or set KAFKA_BROKER")
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self._parser = parser_for(known_types, settings)
        self._topic = settings.topic(TOUCHPOINTS)
        batch = settings.producer_max_batch_bytes
        self._producer = kafka_producer(
            bootstrap, settings.producer_idempotent, **({"max_batch_size": batch} if batch else {})
        )
        self._max_events, self._linger = max_events, linger_seconds
        self._max_span_ms = int(max_span_seconds * 1000)
        self._partitions = settings.partitions  # of the touchpoints topic
        self._batches: dict[int, list[dict]] = {}  # partition -> its open batch
        # partition -> (monotonic time, event time in ms) of its batch's first event,
        # oldest first
        self._opened: dict[int, tuple[float, int]] = {}
        self._acks: list[asyncio.Future] = []
        self._in_order: dict[int, asyncio.Lock] = {}  # partition -> the lock its sends queue on
        self._lingering: asyncio.Task | None = None
        self._failure: Exception | None = None
        self.acknowledged = 0  # events the broker has acknowledged

    async def start(self) -> None:
        await start_producer(self._producer)
        self._lingering = asyncio.create_task(self._send_lingering())

    async def stop(self) -> None:
        """Send what is batched, wait for its acks, disconnect."""
        if self._lingering:
            self._lingering.cancel()
        try:
            await self.flush()
        finally:
            await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def check(self, event: dict) -> int:
        """Raise InvalidEvent if the worker would reject `event`; else its time in ms."""
        return self._checked(event).ts_ms

    def _checked(self, event: dict) -> ValidEvent:
        now_ms = int(time.time() * 1000)
        valid, rejected = self._parser.check_items([stamped(event, now_ms)], now_ms)
        if rejected:
            raise InvalidEvent(rejected[0])
        return valid[0]

    async def send(self, event: dict) -> str:
        """Queue one event; returns its event id (the one given, or the one made)."""
        return (await self.send_many([event]))[0]

    async def send_many(self, events: Iterable[dict]) -> list[str]:
        """Check all the events first, so a bad one stops the call before any is queued;
        returns their event ids."""
        checked = [self._checked(event) for event in events]
        events = [valid.event for valid in checked]
        times = [valid.ts_ms for valid in checked]
        if self._failure:
            raise self._failure
        for event, ts_ms in zip(events, times, strict=True):
            for key in self._spanned(ts_ms):
                await self._send_batch(key)
            # One batch per partition: many customers' events share an envelope, each
            # customer's in order, and every key in it maps to the envelope's partition.
            group = kafka_partition(customer_key(event), self._partitions)
            batch = self._batches.setdefault(group, [])
            if not batch:
                self._opened[group] = (time.monotonic(), ts_ms)
            batch.append(event)
            if len(batch) >= self._max_events:
                await self._send_batch(group)
            # Lingered batches go here too: a caller that sends without pause never lets
            # the linger task run, and its batches would wait, out of order, for seconds.
            await self._send_lingered()
        if len(self._acks) >= 1000:  # bound what waits for an ack
            await self._collect_acks()
        return [event["event_id"] for event in events]

    async def flush(self) -> None:
        """Send every open batch and wait until the broker acknowledged all sends."""
        for group in list(self._batches):
            await self._send_batch(group)
        await self._collect_acks()

    async def _send_batch(self, group: int) -> None:
        # The linger task and send_many both pick batches to send, and a send can wait
        # (the client's buffer is full): the other may have sent this one meanwhile.
        events = self._batches.pop(group, None)
        self._opened.pop(group, None)
        if not events:
            return
        value = orjson.dumps({"events": events})
        key = customer_key(events[0]).encode()  # maps to the partition of every event
        # The client's room for a partition frees after a drain, and then goes to the send
        # that asks first, not to the one that waited longest: under load an envelope of
        # the linger task's waited while a dozen newer ones went ahead, and its events
        # reached the worker a second late. A fair lock per partition keeps close order.
        async with self._in_order.setdefault(group, asyncio.Lock()):
            ack = await self._producer.send(self._topic, value=value, key=key)
        ack.add_done_callback(functools.partial(self._count, events=len(events)))
        self._acks.append(ack)

    def _count(self, ack: asyncio.Future, events: int) -> None:
        if not ack.cancelled() and ack.exception() is None:
            self.acknowledged += events

    async def _collect_acks(self) -> None:
        # A failed send raises here (or the background sender's failure): never silently.
        if self._failure:
            raise self._failure
        acks, self._acks = self._acks, []
        await asyncio.gather(*acks)

    def _spanned(self, ts_ms: int) -> list[int]:
        """Open batches whose first event is more than the span older than `ts_ms`."""
        spanned = []
        for group, (_, first_ms) in self._opened.items():
            if first_ms >= ts_ms - self._max_span_ms:
                break  # batches open in (roughly) event-time order; the rest are newer
            spanned.append(group)
        return spanned

    async def _send_lingered(self) -> None:
        """Send the batches open for `linger_seconds` or more (oldest first, in open order)."""
        due = time.monotonic() - self._linger
        lingered = []
        for group, (opened, _) in self._opened.items():
            if opened > due:
                break
            lingered.append(group)
        for group in lingered:
            await self._send_batch(group)

    async def _send_lingering(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._linger / 4)
                await self._send_lingered()
        except Exception as exc:  # kept for the next flush to raise
            self._failure = exc


class SyncTouchpointProducer:
    """TouchpointProducer for code without an event loop: runs one in a thread.

    Flushes when the `with` block ends, on close(), and at interpreter exit.
    """

    def __init__(self, bootstrap: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="parcours-producer", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self._producer = self._run(self._open(bootstrap, options))
        except BaseException:
            self._stop_loop()
            raise
        atexit.register(self.close)

    async def _open(self, bootstrap: str | None, options: dict) -> TouchpointProducer:
        producer = TouchpointProducer(bootstrap, **options)  # its client binds to this loop
        await producer.start()
        return producer

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def acknowledged(self) -> int:
        return self._producer.acknowledged

    def check(self, event: dict) -> None:
        self._producer.check(event)

    def send(self, event: dict) -> str:
        return self._run(self._producer.send(event))

    def send_many(self, events: Iterable[dict]) -> list[str]:
        return self._run(self._producer.send_many(list(events)))

    def flush(self) -> None:
        self._run(self._producer.flush())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self._run(self._producer.stop())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
