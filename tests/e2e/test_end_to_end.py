"""End to end: real tansu broker, real worker process, real embedded ClickHouse.

Producers are aiokafka and, as an independent outside client, librdkafka (the
C client kcat is built on) through confluent-kafka: Debian's kcat links
librdkafka 2.0.2, which cannot parse tansu's ApiVersions v3 response.
Assertions read the rows ClickHouse holds after the worker stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import confluent_kafka
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from streams.core.ingest import kafka_partition
from streams.dev.local_stack import LocalBroker, wait_for
from streams.edge.produce import as_messages, create_topics, produce
from streams.edge.stamps import rfc3339
from streams.pipeline.epochs import Missing
from streams.pipeline.refetch import fetch_range
from tests.support.clickhouse import clickhouse
from tests.support.events import make_event

pytestmark = pytest.mark.e2e

MAX_MESSAGE_BYTES = 200_000  # the worker's limit in this test, so "oversize" is cheap to send


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    with LocalBroker(log_path=tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


def start_worker(broker, tmp_path, app_id, store="memory://"):
    return broker.worker(
        tmp_path,
        PARCOURS_APP_ID=app_id,
        PARCOURS_TOPIC_PREFIX=f"{app_id}.",
        PARCOURS_MAX_MESSAGE_BYTES=str(MAX_MESSAGE_BYTES),
        PARCOURS_STORE=store,  # the restart test runs on both table stores
    )


def valid_events(n: int) -> list[dict]:
    return [
        make_event(
            i, customer_id=f"c-{i % 97}", type=["site_visit", "purchase", "email_open"][i % 3]
        )
        for i in range(n)
    ]


def malformed() -> list[tuple[bytes, str]]:
    """50 bad messages, each with the reason the worker must give."""
    bad: list[tuple[bytes, str]] = []
    for i in range(6):
        bad.append((b'{"event_id": "x' + str(i).encode(), "invalid_json"))
    bad += [
        (b"", "invalid_json"),
        (b"\xff\xfe\xfd", "invalid_json"),
        (b"[" * 3000 + b"]" * 3000, "invalid_json"),
        (b"\xc3\x28", "invalid_json"),
    ]
    bad += [
        (b"[1,2,3]", "invalid_envelope"),
        (b'"text"', "invalid_envelope"),
        (b'{"events": 7}', "invalid_envelope"),
        (b"null", "invalid_envelope"),
        (b'{"events": {}}', "invalid_envelope"),
    ]
    schema_breakers = [
        {"event_id": None},
        {"customer_id": None},
        {"event_id": 12},
        {"ts": "soon"},
        {"channel": "fax"},
        {"properties": {"deep": {"er": 1}}},
        {"customerId": "c"},
        {"properties": {"blob": "x" * 150_000}},
        {"source": "NOPE"},
        {"ts": "2026-01-01T00:00:00"},
    ]
    for i, change in enumerate(schema_breakers * 2):
        bad.append((orjson.dumps(make_event(10_000 + i, **change)), "schema_violation"))
    for i in range(7):
        bad.append((orjson.dumps(make_event(20_000 + i, type="teleport")), "unknown_type"))
    bad += [
        (orjson.dumps(make_event(30_000 + i, ts="2999-01-01T00:00:00Z")), "ts_in_future")
        for i in range(3)
    ]
    bad += [
        (orjson.dumps(make_event(40_000 + i, ts="2001-01-01T00:00:00Z")), "ts_too_old")
        for i in range(3)
    ]
    bad += [
        (orjson.dumps(make_event(50_000 + i, pad="p" * MAX_MESSAGE_BYTES)), "oversize")
        for i in range(2)
    ]
    return bad


def librdkafka_produce(bootstrap: str, topic: str, messages: list[tuple]) -> None:
    """Send with librdkafka, a Kafka client independent of the worker's aiokafka."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0, "librdkafka could not deliver every message"


def test_events_land_once_and_bad_input_lands_in_dead_letters(broker, tmp_path):
    topic = "e2e.touchpoints"
    events = valid_events(1000)
    singles = as_messages(events[:500])
    envelopes = as_messages(events[500:], envelope_size=25)
    bad = malformed()
    assert len(bad) == 50
    duplicates = singles[:10] + envelopes[:10]  # exact re-sends: 10 single, 10 envelopes
    # An envelope with one bad member loses only that member: here, a duplicate plus a bad one.
    mixed = orjson.dumps({"events": [events[0], make_event(60_000, channel="fax")]})
    bad_count = Counter(reason for _, reason in bad) + Counter({"schema_violation": 1})

    # librdkafka sends 200 valid singles and every other bad message; aiokafka the rest.
    librdkafka_produce(
        broker.bootstrap, topic, singles[:200] + [(None, value) for value, _ in bad[::2]]
    )
    rest_bad = [value for value, _ in bad[1::2]]

    with start_worker(broker, tmp_path, "e2e") as worker:
        produce(
            broker.bootstrap,
            topic,
            singles[200:]
            + envelopes
            + duplicates
            + [(None, v) for v in rest_bad]
            + [(b"c-0", mixed)],
        )
        worker.wait_for_rows({"touchpoints": 1000, "dead_letters": 51}, timeout=120)

    with clickhouse(tmp_path / "clickhouse") as client:
        total, distinct = client.query(
            "SELECT count(), uniqExact(event_id) FROM touchpoints"
        ).result_rows[0]
        reasons = dict(
            client.query("SELECT reason, count() FROM dead_letters GROUP BY reason").result_rows
        )
        non_utf8 = client.query(
            "SELECT payload FROM dead_letters WHERE origin_index = -1 AND detail LIKE '%UTF-8%' "
            "ORDER BY origin_offset",
            column_formats={"payload": "bytes"},
        ).result_rows
        member = client.query(
            "SELECT path, origin_index FROM dead_letters WHERE payload LIKE '%e-60000%'"
        ).result_rows
    assert (total, distinct) == (1000, 1000)  # every event once: duplicates were dropped
    assert reasons == dict(bad_count)
    assert sum(reasons.values()) == 51
    assert b"\xff\xfe\xfd" in [row[0] for row in non_utf8]  # original bytes are kept
    assert member == [("$.channel", 1)]


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_dedupe_memory_survives_a_worker_restart(broker, tmp_path, store):
    app_id = f"restart-{store[:-3]}"
    topic = f"{app_id}.touchpoints"
    first = as_messages(valid_events(100))
    with start_worker(broker, tmp_path, app_id, store) as worker:
        produce(broker.bootstrap, topic, first)
        worker.wait_for_rows({"touchpoints": 100}, timeout=120)

    fresh = as_messages([make_event(900 + i, customer_id=f"c-{i}") for i in range(10)])
    with start_worker(broker, tmp_path, app_id, store) as worker:
        # The new worker restores the seen ids from the changelog before it ingests.
        produce(broker.bootstrap, topic, first[:50] + fresh)
        worker.wait_for_rows({"touchpoints": 10}, timeout=120)

        # Duplicates write no rows, so the fresh rows can land while another partition's
        # re-sent events are still queued: wait for their count, not just for the rows.
        def duplicates() -> float:
            return worker.metric_sum("parcours_events_ingested_total", result="duplicate")

        def counts() -> str:  # what the worker saw, should the wait below time out
            consumed = worker.metric_sum("parcours_messages_consumed_total")
            refetched = worker.metric_sum("parcours_records_refetched_total")
            return f"{duplicates():.0f} duplicates, {consumed:.0f} messages, {refetched:.0f} read"

        # At least the 50 re-sent; more when the first worker stopped before its last offset
        # commit and the second re-read those messages too (at-least-once, deduplicated).
        wait_for(lambda: duplicates() >= 50, 60, "50 re-sent events as duplicates", seen=counts)
    with clickhouse(tmp_path / "clickhouse") as client:
        total = client.query("SELECT count() FROM touchpoints").result_rows[0][0]
    # Raw count, no FINAL: the restored memory dropped the re-sent events before the sink.
    assert total == 110


class AsFaust(RoundRobinPartitionAssignor):
    """Joins a group under Faust's protocol name, which the broker keeps for the group."""

    name = "faust"


async def move_committed_offsets(bootstrap: str, group: str, topic: str, by: int) -> int:
    """Move `group`'s committed offset on each partition of `topic` `by` records ahead,
    as a consumer that skipped records leaves it; the number of records skipped."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,  # else stopping commits its own positions over ours
        partition_assignment_strategy=(AsFaust,),
    )
    await consumer.start()  # a member of the group: the broker takes commits from members
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=200, max_records=1)
        partitions = sorted(consumer.assignment())
        committed = {tp: await consumer.committed(tp) for tp in partitions}
        await consumer.commit({tp: offset + by for tp, offset in committed.items()})
        return by * len(partitions)
    finally:
        await consumer.stop()


def test_records_the_consumer_skipped_are_fetched_by_the_worker_itself(broker, tmp_path):
    """Faust can drop the first records after a restart (the restart test above met it
    once in five runs); the partition's mark knows the last offset made durable, so the
    worker fetches what its consumer skipped. Made certain here by moving the group's
    committed offsets past records the worker never saw."""
    app_id = "skipped"
    topic = f"{app_id}.touchpoints"
    with start_worker(broker, tmp_path, app_id) as worker:
        produce(broker.bootstrap, topic, as_messages(valid_events(100)))
        worker.wait_for_rows({"touchpoints": 100}, timeout=120)
    later = [make_event(500 + i, customer_id=f"c-{i % 40}") for i in range(60)]
    produce(broker.bootstrap, topic, as_messages(later))
    skipped = asyncio.run(move_committed_offsets(broker.bootstrap, app_id, topic, by=3))

    with start_worker(broker, tmp_path, app_id) as worker:
        worker.wait_for_rows({"touchpoints": 60}, timeout=120)
        refetched = worker.metric_sum("parcours_records_refetched_total", topic=topic)
    with clickhouse(tmp_path / "clickhouse") as client:
        ids = client.query("SELECT uniqExact(event_id), count() FROM touchpoints").result_rows[0]
    assert ids == (160, 160)  # every event once, the skipped ones included
    # 3 on each of the 4 partitions, and up to one more on each where Faust dropped the
    # first record after the restart itself (seen in one run of four).
    assert skipped == 12
    assert 12 <= refetched <= 16


def test_a_range_of_offsets_is_read_as_far_as_the_partition_holds_it(broker):
    topic = "refetch"
    asyncio.run(create_topics(broker.bootstrap, [topic], 1))
    produce(broker.bootstrap, topic, [(b"k", b"%d" % i) for i in range(100)])

    def offsets(first: int, last: int, timeout: float = 30) -> list[int]:
        gap = Missing(topic, 0, first, last)
        return [r.offset for r in asyncio.run(fetch_range(broker.bootstrap, gap, timeout))]

    assert offsets(3, 3) == [3]
    assert offsets(10, 60) == list(range(10, 61))
    # Past the end, it gives what there is once its time is up (and logs it).
    assert offsets(95, 120, timeout=2) == list(range(95, 100))


@pytest.fixture(scope="module")
def keyed_wrong(broker, tmp_path_factory):
    """A backfill: ten minutes of touchpoints sent at once (see `sent_keyed_wrong`)."""
    return sent_keyed_wrong(broker, tmp_path_factory.mktemp("backfill"), step_ms=60_000)


@pytest.fixture(scope="module")
def keyed_wrong_months(broker, tmp_path_factory):
    """A backfill of two and a half months (inside the default 90-day maximum age): a
    customer's touchpoints fifteen days apart, so their journeys expire and their leaks
    fire between two of them."""
    return sent_keyed_wrong(broker, tmp_path_factory.mktemp("months"), step_ms=15 * 86_400_000)


@pytest.fixture(scope="module")
def keyed_wrong_live(broker, tmp_path_factory):
    """Live traffic: the same touchpoints within three seconds of now, well inside the
    allowed lateness (60 s)."""
    return sent_keyed_wrong(broker, tmp_path_factory.mktemp("live"), step_ms=500)


def sent_keyed_wrong(broker, root, step_ms: int) -> dict:
    """The same touchpoints of 30 customers in time order (a customer's `step_ms` apart),
    sent keyed by their customer and, to a second deployment, keyed by a session id (a
    third of them unkeyed): what each deployment's ClickHouse holds, and its count of
    forwarded events."""
    now_ms = int(time.time() * 1000)
    kinds = ["ad_click", "site_visit", "add_to_cart", "checkout_started", "purchase"]
    first_ms = now_ms - 5 * step_ms - 30
    events = [
        make_event(
            c * 10 + k,
            customer_id=f"c-{c}",
            type=kind,
            channel="ads" if kind == "ad_click" else "web",
            ts=rfc3339(first_ms + c + k * step_ms),
        )
        for k, kind in enumerate(kinds)
        for c in range(30)
        if k < 2 + c % 4
    ]  # in time order, as a website sends them
    keyed_right = as_messages(events)
    # Keyed by a session id, every third one unkeyed, still in time order (a loader reads
    # its file in order): judged where they enter, none is late.
    wrong = [
        (None if n % 3 == 0 else f"session-{n % 7}".encode(), v)
        for n, (_, v) in enumerate(keyed_right)
    ]
    unkeyed = [m for m in wrong if m[0] is None]
    # Where a session key sends an event is known; an unkeyed message goes anywhere.
    misplaced = sum(
        kafka_partition(key.decode(), 4) != kafka_partition(orjson.loads(value)["customer_id"], 4)
        for key, value in wrong
        if key is not None
    )
    found = {"events": events, "misplaced": misplaced, "unkeyed": len(unkeyed)}
    for name, messages in (("right", keyed_right), ("wrong", wrong)):
        app_id = f"{root.name}-keyed-{name}"
        with start_worker(broker, root / name, app_id) as worker:
            produce(broker.bootstrap, f"{app_id}.touchpoints", messages)
            worker.wait_for_rows({"touchpoints": len(events)}, timeout=120)
            worker.wait_until_quiet("journeys", quiet_seconds=3.0, timeout=120)
            worker.wait_until_quiet("dead_letters", quiet_seconds=1.0, timeout=120)
            forwarded = worker.metric_sum("parcours_events_forwarded_total")
        with clickhouse(root / name / "clickhouse") as client:
            found[name] = {
                "forwarded": forwarded,
                "touchpoints": client.query("SELECT count() FROM touchpoints").result_rows[0][0],
                "journeys": sorted(
                    client.query(
                        "SELECT customer_key, journey, status, path_event_ids FROM journeys "
                        "FINAL WHERE superseded_by = ''"
                    ).result_rows
                ),
                "late": sorted(
                    client.query(
                        "SELECT JSONExtractString(toString(payload), 'event_id') "
                        "FROM dead_letters WHERE reason = 'late'"
                    ).result_rows
                ),
            }
    return found


def test_events_not_keyed_by_their_customer_are_forwarded_counted_and_never_lost(keyed_wrong):
    events, right, wrong = keyed_wrong["events"], keyed_wrong["right"], keyed_wrong["wrong"]
    assert right["touchpoints"] == wrong["touchpoints"] == len(events)
    assert len(right["journeys"]) == 30 and right["late"] == [] and right["forwarded"] == 0
    misplaced = keyed_wrong["misplaced"]
    assert misplaced <= wrong["forwarded"] <= misplaced + keyed_wrong["unkeyed"]
    assert misplaced > len(events) // 3  # many of them took the second hop
    # A touchpoint judged late names itself in its letter and is in no journey (those in
    # none yet, such as a lone purchase, are reported outside journeys once final).
    in_journeys = [e for *_, path in wrong["journeys"] for e in path]
    late = [event_id for (event_id,) in wrong["late"]]
    assert set(late) <= {e["event_id"] for e in events}
    assert not set(late) & set(in_journeys)


def test_live_events_not_keyed_by_their_customer_make_the_same_journeys(keyed_wrong_live):
    """Their second hop takes far less than the allowed lateness: none is late."""
    right, wrong = keyed_wrong_live["right"], keyed_wrong_live["wrong"]
    assert wrong["forwarded"] >= keyed_wrong_live["misplaced"] > 0
    assert len(right["journeys"]) == 30
    assert wrong["late"] == right["late"] == []
    assert wrong["journeys"] == right["journeys"]


@pytest.mark.parametrize("span", ["keyed_wrong", "keyed_wrong_months"])
def test_a_backfill_not_keyed_by_its_customers_makes_the_same_journeys(span, request):
    """Each event is judged where it enters, and a partition's journeys wait for the
    watermarks of the partitions that forward to it (streams.core.eventtime)."""
    sent = request.getfixturevalue(span)
    right, wrong = sent["right"], sent["wrong"]
    assert wrong["forwarded"] >= sent["misplaced"] > 0
    assert wrong["late"] == right["late"] == []
    assert wrong["journeys"] == right["journeys"]
    assert len({(key, journey) for key, journey, *_ in right["journeys"]}) == 30
