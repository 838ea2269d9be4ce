"""Read a range of offsets of one partition straight from the broker: what a re-run
epoch needs that the first batch after a restart did not bring, and records the
group's consumer skipped (see streams.pipeline.epochs). Rare, so a short-lived
consumer outside any group."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.pipeline.epochs import Missing, Record

FETCH_TIMEOUT_SECONDS = 60.0

log = logging.getLogger("parcours.worker")


def broker_hosts(broker: str) -> list[str]:
    """host:port of each broker `broker` names (kafka:// URLs, comma or semicolon separated)."""
    return [h.removeprefix("kafka://") for h in broker.replace(";", ",").split(",") if h]


async def fetch_range(
    broker: str, gap: Missing, timeout: float = FETCH_TIMEOUT_SECONDS
) -> list[Record]:
    """The records of `gap` (offsets first..last) that the partition holds, in offset
    order; `broker` as the worker takes it (host:port, or kafka:// URLs, comma or
    semicolon separated). Offsets without a record (transaction markers, records the
    broker deleted) are passed over."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=broker_hosts(broker),
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",  # records deleted by retention: start at the oldest
    )
    await consumer.start()
    try:
        tp = TopicPartition(gap.topic, gap.partition)
        consumer.assign([tp])
        consumer.seek(tp, gap.first)
        found: list[Record] = []
        try:
            async with asyncio.timeout(timeout):
                while await consumer.position(tp) <= gap.last:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    for m in batch.get(tp, []):
                        if gap.first <= m.offset <= gap.last:
                            seconds = m.timestamp / 1000
                            found.append(
                                Record(m.key, m.value, m.topic, m.partition, m.offset, seconds)
                            )
        except TimeoutError:
            log.warning(
                "%s partition %d: offsets %d..%d not all readable after %.0f s; going on "
                "with the %d records found",
                gap.topic, gap.partition, gap.first, gap.last, timeout,
                len(found),
            )  # fmt: skip
        return found
    finally:
        await consumer.stop()
