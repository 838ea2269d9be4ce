"""Shared test helpers."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from click.testing import CliRunner

from streams.cli import main
from streams.config.settings import Settings
from streams.core.ingest import kafka_partition
from streams.dev.local_stack import LocalBroker
from streams.edge.producer import SyncTouchpointProducer, TouchpointProducer
from tests.support.clickhouse import clickhouse
from tests.support.events import LOCAL, make_event


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with LocalBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


def read_topic(bootstrap: str, topic: str, events: int, timeout: float = 30.0) -> list:
    """(key, events of the message) for every message, until `events` events were read."""

    async def consume() -> list:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        messages, seen = [], 0
        try:
            async with asyncio.timeout(timeout):
                while seen < events:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        for record in records:
                            batch = orjson.loads(record.value)["events"]
                            messages.append((record.key.decode(), batch))
                            seen += len(batch)
        finally:
            await consumer.stop()
        return messages

    return asyncio.run(consume())


def test_events_are_batched_per_partition_and_flushed_when_the_block_ends(broker):
    settings = LOCAL.__class__(producer_idempotent=False, topic_prefix="sync.")
    events = [make_event(i, customer_id=f"c-{i % 30}") for i in range(250)]
    with SyncTouchpointProducer(broker.bootstrap, settings=settings, max_events=10) as producer:
        producer.send_many(events[:100])
        for event in events[100:]:
            producer.send(event)
        # No flush: leaving the block sends the open batches.
    assert producer.acknowledged == 250

    messages = read_topic(broker.bootstrap, "sync.touchpoints", 250)
    received = [e["event_id"] for _, batch in messages for e in batch]
    assert Counter(received) == Counter(e["event_id"] for e in events)
    assert all(len(batch) <= 10 for _, batch in messages)
    # Every customer in an envelope maps to the partition its key sends it to.
    assert all(
        {kafka_partition(e["customer_id"], 4) for e in batch} == {kafka_partition(key, 4)}
        for key, batch in messages
    )
    assert max(len({e["customer_id"] for e in batch}) for _, batch in messages) > 1
    assert len(messages) < 250 // 5  # batched, not one message per event


@pytest.mark.e2e
def test_an_open_batch_goes_out_after_the_linger_time(broker):
    settings = Settings(producer_idempotent=False, topic_prefix="linger.")

    async def scenario():
        async with TouchpointProducer(
            broker.bootstrap, settings=settings, linger_seconds=0.2
        ) as producer:
            await producer.send_many([make_event(i, customer_id="c-7") for i in range(3)])
            await asyncio.sleep(1.0)
            before_flush = producer.acknowledged
        return before_flush

    assert asyncio.run(scenario()) == 3
    [(key, batch)] = read_topic(broker.bootstrap, "linger.touchpoints", 3)
    assert key == "c-7" and [e["event_id"] for e in batch] == ["e-0", "e-1", "e-2"]


@pytest.mark.e2e
def test_simulated_customers_flow_through_the_worker_into_clickhouse(broker, tmp_path):
    env = {"PARCOURS_APP_ID": "sim", "PARCOURS_TOPIC_PREFIX": "sim."}
    result = CliRunner().invoke(
        main,
        [
            "simulate",
            "--broker",
            broker.bootstrap,
            "--events",
            "1500",
            "--fast",
            "--rate",
            "10",
            "--duplicate-rate",
            "0.05",
            "--seed",
            "21",
        ],
        env={**broker.WORKER_ENV, **env},  # the local broker: no idempotent producer
    )
    assert result.exit_code == 0, result.output
    assert "sent 1,500 events" in result.output
    duplicates = int(result.output.split(" duplicates")[0].rsplit(", ", 1)[1])
    assert duplicates > 30

    with broker.worker(tmp_path, **env) as worker:
        worker.wait_for_rows({"touchpoints": 1500 - duplicates}, timeout=90)
        worker.wait_until_quiet("journeys")
    with clickhouse(tmp_path / "clickhouse") as client:
        touchpoints, unique = client.query(
            "SELECT count(), uniqExact(event_id) FROM touchpoints"
        ).result_rows[0]
        letters = client.query(
            "SELECT reason, count() FROM dead_letters GROUP BY reason"
        ).result_rows
        journeys = dict(
            client.query("SELECT journey, count() FROM journeys FINAL GROUP BY journey").result_rows
        )
    assert touchpoints == unique == 1500 - duplicates  # every copy dropped, nothing lost
    assert letters == []  # out-of-order events came within the lateness; all valid
    assert journeys["purchase"] > 100
