"""Send touchpoint events to Kafka: one event per message, or batch envelopes per key."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer

from streams.ingest import customer_key


def as_messages(events: Sequence[dict], envelope_size: int = 1) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: each event alone, or up to `envelope_size` events of a key together."""
    if envelope_size <= 1:
        return [(customer_key(e).encode(), orjson.dumps(e)) for e in events]
    by_key: dict[str, list[dict]] = {}
    for event in events:
        by_key.setdefault(customer_key(event), []).append(event)
    messages = []
    for key, batch in by_key.items():
        for i in range(0, len(batch), envelope_size):
            chunk = batch[i : i + envelope_size]
            messages.append((key.encode(), orjson.dumps({"events": chunk})))
    return messages


async def send_messages(
    bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]
) -> None:
    """Send and wait until the broker acknowledged every message."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        acks = [await producer.send(topic, value=value, key=key) for key, value in messages]
        await asyncio.gather(*acks)
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    asyncio.run(send_messages(bootstrap, topic, messages))
