"""Send touchpoint events to Kafka: one event per message, or batch envelopes per key or
partition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaClient, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from streams.core.eventtime import epoch_ms
from streams.core.ingest import customer_key, kafka_partition


def as_messages(
    events: Sequence[dict],
    envelope_size: int = 1,
    window_ms: int | None = None,
    partitions: int | None = None,
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs in the order of `events`: each event alone, or envelopes of up to
    `envelope_size` events of one key; with `partitions`, of all the keys that map to one
    partition of a topic with that many (keyed by the first event's key, which maps there
    too), so an envelope fills with many customers' events under load.

    With `window_ms` (events in time order), an envelope closes once the stream is more
    than `window_ms` past its first event, as a producer that flushes every few seconds
    would; keep it below the allowed lateness, since an envelope goes out when it closes.
    """
    if envelope_size <= 1:
        return [(customer_key(e).encode(), orjson.dumps(e)) for e in events]
    open_envelopes: dict[str | int, list[dict]] = {}
    messages: list[tuple[bytes, bytes]] = []

    def group(key: str) -> str | int:
        return key if partitions is None else kafka_partition(key, partitions)

    def close(at: str | int) -> None:
        members = open_envelopes.pop(at)
        key = customer_key(members[0]).encode()
        messages.append((key, orjson.dumps({"events": members})))

    for event in events:
        if window_ms is not None:
            now = _ts_ms(event)
            for at in [k for k, env in open_envelopes.items() if now - _ts_ms(env[0]) > window_ms]:
                close(at)
        at = group(customer_key(event))
        open_envelopes.setdefault(at, []).append(event)
        if len(open_envelopes[at]) >= envelope_size:
            close(at)
    for at in list(open_envelopes):
        close(at)
    return messages


# What one envelope may weigh: under the producer's max_request_size and the broker's
# message.max.bytes (both 1 MiB by default), with room for the record's own framing.
MAX_ENVELOPE_BYTES = 1_000_000


def envelopes_by_partition(
    events: Iterable[dict], partitions: int, max_bytes: int = MAX_ENVELOPE_BYTES
) -> list[tuple[bytes, bytes]]:
    """One batch envelope per partition of a topic with `partitions`, holding the events of
    every customer whose key maps there (each customer's in order), keyed by its first
    event's key; a partition whose events weigh more than `max_bytes` gets several."""
    by_partition: dict[int, tuple[str, list[bytes]]] = {}
    for event in events:
        key = customer_key(event)
        at = kafka_partition(key, partitions)
        by_partition.setdefault(at, (key, []))[1].append(orjson.dumps(event))
    messages = []
    for key, encoded in by_partition.values():
        for value in _packed(encoded, max_bytes):
            messages.append((key.encode(), value))
    return messages


def _packed(encoded: list[bytes], max_bytes: int) -> list[bytes]:
    """`{"events": [...]}` envelopes of the encoded events, each at most `max_bytes` (an
    event heavier than that alone goes alone: the worker's size check then says so)."""
    envelopes: list[bytes] = []
    members: list[bytes] = []
    size = len(b'{"events":[]}')
    for event in encoded:
        if members and size + len(event) + 1 > max_bytes:
            envelopes.append(b'{"events":[' + b",".join(members) + b"]}")
            members, size = [], len(b'{"events":[]}')
        members.append(event)
        size += len(event) + 1
    if members:
        envelopes.append(b'{"events":[' + b",".join(members) + b"]}")
    return envelopes


def kafka_producer(bootstrap: str, idempotent: bool = False, **options: Any) -> AIOKafkaProducer:
    """An aiokafka producer that waits for all in-sync replicas; `idempotent` makes a
    retried send land once (brokers without InitProducerId, like the local one, need False)."""
    options.setdefault("linger_ms", 5)
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap.removeprefix("kafka://"),
        acks="all",
        enable_idempotence=idempotent,
        **options,
    )


async def start_producer(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """Start `producer`; if the broker cannot be reached, close it before raising (an
    unclosed client warns at exit, on top of the error that matters)."""
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


async def reach_broker(bootstrap: str, wait_seconds: float) -> None:
    """Return once the broker answers a metadata request; retried for `wait_seconds` (a
    broker starting beside us), then KafkaConnectionError."""
    deadline = time.monotonic() + wait_seconds
    while True:
        client = AIOKafkaClient(bootstrap_servers=bootstrap.removeprefix("kafka://"))
        try:
            await client.bootstrap()
            return
        except KafkaConnectionError:
            if time.monotonic() >= deadline:
                raise
        finally:
            await client.close()
        await asyncio.sleep(1.0)


def _ts_ms(event: dict) -> int:
    return epoch_ms(datetime.fromisoformat(event["ts"]))


async def send_messages(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes]],
    due_seconds: Sequence[float] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> None:
    """Send and wait until the broker acknowledged every message.

    With `due_seconds`, message i is not sent before that many seconds after the start
    (a replay's pace); `on_progress(sent, total)` is called about once a second.
    """
    producer = await start_producer(kafka_producer(bootstrap))
    try:
        started = shown = time.monotonic()
        pending = []
        for index, (key, value) in enumerate(messages):
            if due_seconds is not None:
                delay = started + due_seconds[index] - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 5000:  # bound what waits for an ack
                await asyncio.gather(*pending)
                pending.clear()
            if on_progress and time.monotonic() - shown >= 1.0:
                shown = time.monotonic()
                on_progress(index + 1, len(messages))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    asyncio.run(send_messages(bootstrap, topic, messages))


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """Create topics with `partitions` partitions (one replica); existing ones are kept.

    Brokers auto-create topics with their default count on first use; a deployment with
    another `PARCOURS_PARTITIONS` creates them first (the state is co-partitioned).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.removeprefix("kafka://"))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if wanted:
            await admin.create_topics(wanted)
    finally:
        await admin.close()
