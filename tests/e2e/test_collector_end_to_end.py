"""Shared test helpers."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streams.edge.collector import CollectorSettings, create_collector
from tests.support.collector import KEYS, PARSER, event, post


@pytest.mark.e2e
def test_collected_events_land_in_clickhouse_once_and_rejections_in_dead_letters(tmp_path):
    from streams.dev.local_stack import LocalBroker
    from streams.edge.collector import KafkaPublisher
    from tests.support.clickhouse import clickhouse

    batches = [[event(i * 10 + j, f"c{i}") for j in range(10)] for i in range(20)]
    batches[3][4] = event(34, "c3", type="teleport")  # rejected: 199 good, 1 bad

    async def send_all(bootstrap):
        # The local broker has no idempotent producers (LocalBroker.WORKER_ENV).
        publisher = KafkaPublisher(bootstrap, "touchpoints", "touchpoints-dlq", idempotent=False)
        await publisher.start()
        app = create_collector(PARSER, publisher.publish, CollectorSettings(write_keys=KEYS))
        try:
            async with TestClient(TestServer(app)) as client:
                answers = await asyncio.gather(*(post(client, batch) for batch in batches))
                retry = await post(client, batches[0])  # a client retry after a timeout
        finally:
            await publisher.stop()
        return [a[1]["accepted"] for a in answers], retry[0]

    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path) as worker,
    ):
        accepted, retry_status = asyncio.run(send_all(broker.bootstrap))
        worker.wait_for_rows({"touchpoints": 199, "dead_letters": 1}, timeout=90)
        duplicates = worker.metric_sum("parcours_events_ingested_total", result="duplicate")
    with clickhouse(tmp_path / "clickhouse") as client:
        rows = client.query(
            "SELECT count(), uniqExact(event_id), countIf(source = 'site') FROM touchpoints"
        ).result_rows[0]
        letters = client.query("SELECT reason, source, origin_topic FROM dead_letters").result_rows
    assert (sum(accepted), retry_status) == (199, 202)
    assert rows == (199, 199, 199)  # the retried batch is dropped as duplicates by ingest
    assert duplicates == 10
    assert letters == [("unknown_type", "site", "http")]
