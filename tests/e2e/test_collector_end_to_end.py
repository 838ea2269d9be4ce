"""The collector against the local broker and a worker: events land once in ClickHouse,
rejections in dead letters, a body near the size limit is split into envelopes the broker
takes, and /healthz follows the broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import orjson
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
    # One customer's body just under the 1 MiB limit: with the source the collector adds,
    # one envelope would be over the producer's 1 MiB request size (a 503 for ever).
    note = "n" * 1000
    big = [event(1000 + n, "big", properties={"note": note}) for n in range(915)]
    big_body = orjson.dumps(big)
    assert 1_030_000 < len(big_body) < 1_048_576 < len(big_body) + 16 * len(big)
    # The producer contract: ids and times left out, a client clock one hour fast.
    now = datetime.now(UTC)
    fast = now + timedelta(hours=1)
    bare = {"customer_id": "skewed", "type": "site_visit", "channel": "mobile"}
    contract = [
        bare,  # no event_id, no ts
        {
            **bare,
            "event_id": "skewed-1",
            "ts": (fast - timedelta(seconds=10)).isoformat(),  # ten seconds before sending
            "sent_at": fast.isoformat(),
            "context": {"campaign": {"source": "news"}, "ip": "203.0.113.77"},
        },
        {**bare, "event_id": "skewed-2", "schema_version": "1.99", "loyalty_tier": "gold"},
    ]

    async def send_all(bootstrap):
        # The local broker has no idempotent producers (LocalBroker.WORKER_ENV).
        publisher = KafkaPublisher(bootstrap, "touchpoints", "touchpoints-dlq", idempotent=False)
        await publisher.start()
        app = create_collector(PARSER, publisher.publish, CollectorSettings(write_keys=KEYS))
        try:
            async with TestClient(TestServer(app)) as client:
                answers = await asyncio.gather(*(post(client, batch) for batch in batches))
                retry = await post(client, batches[0])  # a client retry after a timeout
                big_answer = await post(client, big)
                contract_answer = await post(client, contract)
        finally:
            await publisher.stop()
        accepted = [a[1]["accepted"] for a in answers]
        return accepted, retry[0], big_answer[:2], contract_answer[:2]

    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path) as worker,
    ):
        accepted, retry_status, big_answer, contract_answer = asyncio.run(
            send_all(broker.bootstrap)
        )
        worker.wait_for_rows({"touchpoints": 199 + 915 + 3, "dead_letters": 1}, timeout=90)
        duplicates = worker.metric_sum("parcours_events_ingested_total", result="duplicate")
    with clickhouse(tmp_path / "clickhouse") as client:
        rows = client.query(
            "SELECT count(), uniqExact(event_id), countIf(source = 'site') FROM touchpoints "
            "WHERE customer_key NOT IN ('big', 'skewed')"
        ).result_rows[0]
        big_rows = client.query(
            "SELECT count(), uniqExact(event_id) FROM touchpoints WHERE customer_key = 'big'"
        ).result_rows[0]
        letters = client.query("SELECT reason, source, origin_topic FROM dead_letters").result_rows
        skewed = client.query(
            "SELECT event_id, ts, original_ts, sent_at, received_at, channel, context, "
            "schema_version, extensions FROM touchpoints WHERE customer_key = 'skewed' "
            "ORDER BY event_id"
        ).named_results()
        skewed = list(skewed)
    assert (sum(accepted), retry_status) == (199, 202)
    assert rows == (199, 199, 199)  # the retried batch is dropped as duplicates by ingest
    assert duplicates == 10
    assert big_answer == (202, {"accepted": 915, "rejected": 0, "errors": []})
    assert big_rows == (915, 915)
    assert letters == [("unknown_type", "site", "http")]

    assert contract_answer == (202, {"accepted": 3, "rejected": 0, "errors": []})
    made, corrected, newer = sorted(skewed, key=lambda r: r["event_id"].startswith("skewed"))
    assert uuid.UUID(made["event_id"]).version == 7
    assert abs(made["ts"] - now.replace(tzinfo=None)) < timedelta(seconds=30)  # its clock
    assert made["ts"] == made["received_at"] and made["original_ts"] is None
    # ts = received_at - (sent_at - ts): ten seconds before the collector received it.
    assert corrected["ts"] == corrected["received_at"] - timedelta(seconds=10)
    assert corrected["original_ts"] - corrected["ts"] > timedelta(minutes=59)
    assert corrected["sent_at"] - corrected["original_ts"] == timedelta(seconds=10)
    assert corrected["context"] == {"campaign.source": "news", "ip": "203.0.113.0"}
    assert corrected["channel"] == "mobile"
    assert (newer["schema_version"], newer["extensions"]) == ("1.99", {"loyalty_tier": "gold"})


@pytest.mark.e2e
def test_healthz_answers_503_while_the_broker_is_unreachable(tmp_path):
    from streams.dev.local_stack import LocalBroker
    from streams.edge.collector import PROBE_SECONDS, KafkaPublisher

    async def scenario(broker):
        publisher = KafkaPublisher(broker.bootstrap, "touchpoints", "touchpoints-dlq", False)
        await publisher.start()
        app = create_collector(
            PARSER,
            publisher.publish,
            CollectorSettings(write_keys=KEYS),
            lambda: publisher.connected,
        )
        try:
            async with TestClient(TestServer(app)) as client:
                before = (await client.get("/healthz")).status
                broker.stop()
                deadline = asyncio.get_running_loop().time() + 6 * PROBE_SECONDS
                after = before
                while after == 200 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.2)
                    after = (await client.get("/healthz")).status
                body = await (await client.get("/healthz")).json()
        finally:
            await publisher.stop()
        return before, after, body

    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        before, after, body = asyncio.run(scenario(broker))
    assert (before, after, body) == (200, 503, {"status": "broker unavailable"})
