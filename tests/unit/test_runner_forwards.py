"""Events in messages not keyed by their customer: forwarded to the customer's partition,
and counted by source, so a producer that keys wrongly shows (see the runbook,
ParcoursEventsNotKeyedByCustomer)."""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import REGISTRY

from streams.core.ingest import kafka_partition
from tests.support.events import make_event
from tests.support.runner import RESOLVED, TOUCH, record, runner


def forwarded(source: str) -> float | None:
    return REGISTRY.get_sample_value("parcours_events_forwarded_total", {"source": source})


def test_an_event_keyed_by_another_customer_is_forwarded_and_counted_by_its_source():
    assert (kafka_partition("c-1", 2), kafka_partition("c-2", 2)) == (1, 0)
    before = forwarded("crm") or 0.0
    captured: list = []
    run = runner(end=3, captured=captured, partitions=2)
    run.indexed.add(0)
    events = [  # all read from partition 0, where c-2 lives and c-1 does not
        record(TOUCH, 0, make_event(0, customer_id="c-1", source="crm"), b"c-2"),
        record(TOUCH, 1, make_event(1, customer_id="c-1", source="crm"), b"order-77"),
        record(TOUCH, 2, make_event(2, customer_id="c-2", source="kiosk"), b"c-2"),
    ]
    asyncio.run(run.run(events))

    sent = [(topic, partition, orjson.loads(value)) for e in captured
            for topic, _key, value, partition, _h in e.sends]  # fmt: skip
    to_1 = [(topic, doc) for topic, partition, doc in sent if partition == 1]
    # Judged here, where they entered, then sent as one `entered` control; the entry
    # watermark is told after them, so partition 1 moves its journeys only past them.
    assert [(t, doc["control"]) for t, doc in to_1] == [(RESOLVED, "entered")]
    assert [e["event_id"] for e in to_1[0][1]["events"]] == ["e-0", "e-1"]
    tells = [(source, to, orjson.loads(value)) for e in captured for source, to, value in e.tells]
    mark = run.watermarks[0]
    assert tells == [
        (0, 1, {"control": "watermark", "from": 0, "value": mark.value, "idle": False})
    ]
    assert forwarded("crm") == before + 2
    assert forwarded("kiosk") == 0  # keyed by its customer: taken here, and shown at 0
