"""Read a range of offsets of one partition straight from the broker: what a re-run
epoch needs that the first batch after a restart did not bring (see
streams.pipeline.epochs). Rare, so a short-lived consumer outside any group."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.pipeline.epochs import Missing, Record

FETCH_TIMEOUT_SECONDS = 60.0


async def fetch_range(broker: str, gap: Missing) -> list[Record]:
    """The records of `gap` (offsets first..last), in offset order; `broker` as the
    worker takes it (host:port, or kafka:// URLs, comma or semicolon separated)."""
    hosts = [h.removeprefix("kafka://") for h in broker.replace(";", ",").split(",") if h]
    consumer = AIOKafkaConsumer(bootstrap_servers=hosts, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(gap.topic, gap.partition)
        consumer.assign([tp])
        consumer.seek(tp, gap.first)
        found: list[Record] = []
        async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
            while not found or found[-1].offset < gap.last:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for m in batch.get(tp, []):
                    if m.offset <= gap.last:
                        seconds = m.timestamp / 1000
                        found.append(
                            Record(m.key, m.value, m.topic, m.partition, m.offset, seconds)
                        )
        return found
    finally:
        await consumer.stop()
