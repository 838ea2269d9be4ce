"""The epoch's commit marker on the local broker: a reader that stops at the end offset,
as Faust's changelog recovery does, sees every record sent before the marker, however
the producer batched them (see streams.pipeline.epochs and LocalBroker). Without the
marker, the same reader saw 1 of 40 records of a batch on this broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.dev.local_stack import LocalBroker
from streams.edge.produce import create_topics, kafka_producer

pytestmark = pytest.mark.e2e

TOPIC = "state-changelog"


async def write_epochs(bootstrap: str, epochs: int, per_epoch: int) -> None:
    """Each epoch: its state records in one flush (batched), then the marker alone."""
    producer = kafka_producer(bootstrap)
    await producer.start()
    try:
        for epoch in range(epochs):
            for n in range(per_epoch):
                await producer.send(TOPIC, f"state {epoch}/{n}".encode(), key=b"k", partition=0)
            await producer.flush()
            await producer.send(TOPIC, f"mark {epoch}".encode(), key=b"m", partition=0)
            await producer.flush()
    finally:
        await producer.stop()


async def read_to_end(bootstrap: str) -> list[bytes]:
    """Read partition 0 from the start up to the end offset the broker reports."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, 0)
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while await consumer.position(tp) < end:
                for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                    values += [r.value for r in records if r.offset < end]
        return values
    finally:
        await consumer.stop()


def test_every_record_before_the_marker_is_read_by_a_reader_stopping_at_the_end(tmp_path):
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        asyncio.run(create_topics(broker.bootstrap, [TOPIC], 1))
        asyncio.run(write_epochs(broker.bootstrap, epochs=3, per_epoch=40))
        values = asyncio.run(read_to_end(broker.bootstrap))
    expected = [
        v
        for epoch in range(3)
        for v in [*(f"state {epoch}/{n}".encode() for n in range(40)), f"mark {epoch}".encode()]
    ]
    assert values == expected
