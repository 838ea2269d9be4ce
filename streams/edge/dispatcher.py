"""`parcours dispatcher`: deliver survey invitations to survey tools, and follow-up
tasks to the tools people work in, once each.

Consumes `survey-invitations` (messages `{"invitations": [...]}`) and, when a
destination takes them, `follow-ups` (`{"follow_ups": [...]}`: a task when it opens and
again when it closes), and POSTs every item to every destination that takes its kind
(see streams.edge.destinations): JSON body from the destination's template, signed with
Standard Webhooks signatures, at most `rate_limit` requests/s and `concurrency` at a
time. Timeouts, connection errors, 408, 429 and 5xx are retried with jittered
exponential backoff (a 429's or 503's Retry-After is honoured) up to `max_attempts`;
other 4xx answers and the last failure go to the `dispatch-dlq` topic with the reason,
and the dispatcher moves on.

Once: a delivery ledger (SQLite, one row per destination and item id) is written as
soon as a destination accepts an item, and offsets are committed only after every item
of a batch is delivered or dead-lettered. After a crash the batch is
read again and the ledger skips what was delivered. The one window left (killed after
the destination answered, before the ledger write: microseconds) is covered by the
`webhook-id` header (also sent as `Idempotency-Key`), the item id (see item_id_of),
which receivers should dedupe on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from streams import metrics
from streams.config.settings import DISPATCH_DLQ, Settings
from streams.core.text import printable
from streams.edge.destinations import (
    FOLLOW_UPS,
    IDEMPOTENCY_HEADER,
    INVITATIONS,
    KIND_HEADER,
    Destination,
    TokenBucket,
    signed_headers,
)
from streams.edge.produce import kafka_producer, start_producer
from streams.outputs import OUTPUT_OF

log = logging.getLogger("parcours.dispatcher")

RETRYABLE_STATUS = {408, 429}  # and every 5xx
RETRY_AFTER_STATUS = {429, 503}  # answers whose Retry-After says when to come back
# How much of an answer is read: enough for an error message, never a receiver's
# whole (possibly huge) body.
MAX_ANSWER_BYTES = 4096


class Ledger:
    """What each destination has accepted (or given up on), across restarts."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)  # autocommit: each write lands
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries (destination TEXT, item_id TEXT, "
            "status TEXT, attempts INTEGER, at REAL, detail TEXT, "
            "PRIMARY KEY (destination, item_id))"
        )

    def settled(self, destination: str, item_id: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM deliveries WHERE destination = ? AND item_id = ?",
            (destination, item_id),
        ).fetchone()
        return row is not None

    def record(
        self, destination: str, item_id: str, status: str, attempts: int, detail: str = ""
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?)",
            (destination, item_id, status, attempts, time.time(), detail),
        )

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, count() FROM deliveries GROUP BY status"))

    def close(self) -> None:
        self._db.close()


@dataclass
class Attempt:
    ok: bool
    retry: bool
    detail: str
    retry_after: float | None = None  # seconds the receiver asked to wait (429, 503)


class Dispatcher:
    def __init__(
        self,
        destinations: list[Destination],
        ledger: Ledger,
        session: aiohttp.ClientSession,
        dead_letter: Callable[[dict, Destination, str], Awaitable[None]],
    ) -> None:
        self.destinations = destinations
        self.ledger = ledger
        self.session = session
        self.dead_letter = dead_letter
        self.buckets = {d.name: TokenBucket(d.rate_limit) for d in destinations}
        self.slots = {d.name: asyncio.Semaphore(d.concurrency) for d in destinations}
        self.in_flight: dict[tuple[str, str], asyncio.Task] = {}

    async def deliver_all(self, items: list[tuple[str, dict]]) -> None:
        """Every (kind, item) to every destination that takes its kind; returns once each
        is delivered or dead-lettered."""
        await asyncio.gather(
            *(
                self.deliver(d, kind, item)
                for kind, item in items
                for d in self.destinations
                if kind in d.deliver
            )
        )

    async def deliver(self, destination: Destination, kind: str, item: dict) -> None:
        item_id = item_id_of(kind, item)
        key = (destination.name, item_id)
        if key in self.in_flight:  # the same invitation twice in one batch: send once
            await self.in_flight[key]
            return
        if self.ledger.settled(*key):
            metrics.DISPATCHED.labels(destination.name, "already_delivered").inc()
            return
        task = asyncio.ensure_future(self._deliver(destination, kind, item, item_id))
        self.in_flight[key] = task
        try:
            await task
        finally:
            self.in_flight.pop(key, None)

    async def _deliver(self, destination: Destination, kind: str, item: dict, item_id: str) -> None:
        started = time.monotonic()
        try:
            body = orjson.dumps(destination.body(item))
        except Exception as exc:  # a template checked at load can still meet odd values
            detail = f"template failed: {type(exc).__name__}: {exc}"[:300]
            await self._give_up(destination, item, item_id, 0, detail)
            return
        detail = ""
        attempt = 0
        for attempt in range(1, destination.max_attempts + 1):
            wait = self.buckets[destination.name].wait_seconds()
            if wait:
                await asyncio.sleep(wait)
            async with self.slots[destination.name]:
                result = await self.post(destination, kind, item_id, body)
            detail = result.detail
            if result.ok:
                self.ledger.record(destination.name, item_id, "delivered", attempt)
                metrics.DISPATCH_ATTEMPTS.labels(destination.name, "ok").inc()
                metrics.DISPATCHED.labels(destination.name, "delivered").inc()
                metrics.DISPATCH_SECONDS.labels(destination.name).observe(
                    time.monotonic() - started
                )
                return
            outcome = "retry" if result.retry else "refused"
            metrics.DISPATCH_ATTEMPTS.labels(destination.name, outcome).inc()
            if not result.retry:
                break
            if attempt < destination.max_attempts:
                await asyncio.sleep(destination.retry_wait(attempt, result.retry_after))
        await self._give_up(destination, item, item_id, attempt, detail)

    async def _give_up(
        self, destination: Destination, item: dict, item_id: str, attempts: int, detail: str
    ) -> None:
        log.warning("giving up on %s for %s: %s", item_id, destination.name, detail)
        await self.dead_letter(item, destination, detail)
        self.ledger.record(destination.name, item_id, "dead_lettered", attempts, detail)
        metrics.DISPATCHED.labels(destination.name, "dead_lettered").inc()

    async def post(self, destination: Destination, kind: str, item_id: str, body: bytes) -> Attempt:
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            KIND_HEADER: kind,
            IDEMPOTENCY_HEADER: item_id,
        }
        if destination.secrets:
            headers |= signed_headers(
                destination.secrets, item_id, timestamp, body, destination.legacy_headers
            )
        try:
            async with self.session.post(
                destination.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=destination.timeout_seconds),
                allow_redirects=False,  # a redirect would carry the signed body elsewhere
            ) as response:
                status = response.status
                location = response.headers.get("Location", "")
                retry_after = response.headers.get("Retry-After")
                # A bounded prefix; leaving the rest unread closes the connection.
                head = b"" if 200 <= status < 300 else await response.content.read(MAX_ANSWER_BYTES)
        except Exception as exc:  # whatever a receiver sends back is an attempt, not a crash
            return Attempt(False, True, f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return Attempt(True, False, "")
        text = printable(head.decode("utf-8", "replace"))
        if 300 <= status < 400:
            return Attempt(
                False,
                False,
                f"HTTP {status}: redirect to {printable(location)!r} not followed; "
                "set the destination's url to the final address",
            )
        retry = status >= 500 or status in RETRYABLE_STATUS
        wait = seconds_after(retry_after) if status in RETRY_AFTER_STATUS else None
        return Attempt(False, retry, f"HTTP {status}: {text}", wait)


def seconds_after(retry_after: str | None, now: float | None = None) -> float | None:
    """A Retry-After header's wait in seconds (delay-seconds or an HTTP date), None when
    absent or unreadable (then the backoff decides)."""
    if not retry_after:
        return None
    value = retry_after.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def items_of(value: bytes | None) -> tuple[str, list[dict]] | None:
    """(kind, items) of one message, or None if it is neither `{"invitations": [...]}`
    nor `{"follow_ups": [...]}`."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for kind in (INVITATIONS, FOLLOW_UPS):
        items = doc.get(kind)
        if isinstance(items, list) and all(isinstance(i, dict) for i in items):
            return kind, items
    return None


def item_id_of(kind: str, item: dict) -> str:
    """What a receiver dedupes on: the invitation id; a task's id and status (a task is
    delivered when it opens and again when it closes)."""
    if kind == FOLLOW_UPS:
        return f"{item.get('task_id', '')}/{item.get('status', '')}"
    return str(item.get("invitation_id", ""))


def topics_for(settings: Settings, destinations: list[Destination]) -> list[str]:
    """The topics of the kinds some destination takes."""
    kinds = sorted({kind for d in destinations for kind in d.deliver})
    # A destination takes only published kinds (the schema's enum): each has a topic.
    topics = [OUTPUT_OF[kind].topic for kind in kinds]
    return [settings.topic(topic) for topic in topics if topic is not None]


async def run_dispatcher(
    settings: Settings,
    destinations: list[Destination],
    ledger_path: Path,
    group_id: str,
    stop: asyncio.Event | None = None,
) -> None:
    """Consume and deliver until SIGTERM/SIGINT (or `stop` is set)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    bootstrap = settings.broker.removeprefix("kafka://")
    topics = topics_for(settings, destinations)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = kafka_producer(bootstrap, idempotent=settings.producer_idempotent)
    ledger = Ledger(ledger_path)
    dlq = settings.topic(DISPATCH_DLQ)

    async def dead_letter(item: dict | bytes, destination: Destination | None, reason: str) -> None:
        value = item if isinstance(item, bytes) else orjson.dumps(item)
        headers = [
            ("parcours.reason", reason.encode()),
            ("parcours.destination", (destination.name if destination else "").encode()),
        ]
        await producer.send_and_wait(dlq, value=value, headers=headers)

    await consumer.start()
    try:
        await start_producer(producer)
    except BaseException:
        await consumer.stop()
        raise
    try:
        async with aiohttp.ClientSession() as session:
            dispatcher = Dispatcher(destinations, ledger, session, dead_letter)
            log.info("dispatching %s to %s", topics, [d.name for d in destinations])
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                items: list[tuple[str, dict]] = []
                for messages in batches.values():
                    for message in messages:
                        found = items_of(message.value)
                        if found is None:
                            await dead_letter(message.value or b"", None, "malformed message")
                            continue
                        kind, found_items = found
                        items += [(kind, item) for item in found_items]
                if items:
                    await dispatcher.deliver_all(items)
                if batches:
                    await consumer.commit()  # only once everything read is settled
    finally:
        await consumer.stop()
        await producer.stop()
        ledger.close()
