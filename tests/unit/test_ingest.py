"""The ingest step over a batch of raw messages."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.clickhouse.rows import (
    DEAD_LETTER_COLUMNS,
    TOUCHPOINT_COLUMNS,
    dead_letter_row,
    touchpoint_row,
)
from streams.core.ingest import (
    RawMessage,
    dead_letter_id,
    ingest_batch,
    kafka_partition,
)
from streams.pipeline.payloads import batch_payloads
from tests.support.events import NOW_MS, make_event


def message(value, offset=0, partition=1, key=b"c-1"):
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return RawMessage(key, raw, "touchpoints", partition, offset)


def run(parser, config, messages, store=None):
    store = {} if store is None else store
    outcome = ingest_batch(
        messages,
        parser,
        config.phases,
        lambda key, _partition: store.get(key),
        lambda key: kafka_partition(key, 4),
        now_ms=NOW_MS,
        dedupe_window_ms=86_400_000,
        dedupe_max_ids=100,
    )
    for key, (_, ids) in outcome.seen_updates.items():
        store[key] = ids
    return outcome


def by_key(outcome):
    """Forwarded event ids per customer key, checking each went to its key's partition."""
    out = {}
    for partition, events in outcome.forward.items():
        for event in events:
            assert kafka_partition(event["customer_key"], 4) == partition
            out.setdefault(event["customer_key"], []).append(event["event_id"])
    return out


def test_a_mixed_batch_forwards_good_events_per_key_and_dead_letters_the_rest(parser, config):
    outcome = run(
        parser,
        config,
        [
            message(make_event(1)),
            message(
                {
                    "events": [
                        make_event(2),
                        make_event(3, type="nope"),
                        make_event(4, customer_id=None, anonymous_id="a-9"),
                    ]
                },
                offset=1,
            ),
            message(b"{broken", offset=2),
            message(make_event(1), offset=3),  # re-sent
        ],
    )
    assert by_key(outcome) == {
        "c-1": ["e-1", "e-2"],
        "a-9": ["e-4"],
    }
    assert [(d.rejection.reason, d.offset, d.rejection.index) for d in outcome.dead_letters] == [
        ("unknown_type", 1, 1),
        ("invalid_json", 2, -1),
    ]
    assert dict(outcome.counts) == {"valid": 3, "invalid": 2, "duplicate": 1}
    # For metrics: by type, channel and source; invalid ones have no trustworthy labels.
    assert dict(outcome.tally) == {
        ("site_visit", "web", "site", "valid"): 3,
        ("site_visit", "web", "site", "duplicate"): 1,
    }


def test_duplicates_are_dropped_across_batches_through_the_remembered_ids(parser, config):
    store = {}
    first = run(parser, config, [message(make_event(1))], store)
    second = run(parser, config, [message(make_event(1), offset=5), message(make_event(2))], store)
    assert by_key(first) == {"c-1": ["e-1"]}
    assert by_key(second) == {"c-1": ["e-2"]}
    assert second.counts["duplicate"] == 1


def test_seen_ids_go_to_the_partition_the_key_came_from(parser, config):
    outcome = run(parser, config, [message(make_event(1), partition=3)])
    assert outcome.seen_updates["c-1"][0] == 3


def test_resolved_events_become_touchpoint_rows(parser, config):
    outcome = run(
        parser, config, [message(make_event(1, segment="gold", properties={"n": 2, "ok": True}))]
    )
    row = dict(
        zip(
            TOUCHPOINT_COLUMNS, touchpoint_row(next(iter(outcome.forward.values()))[0]), strict=True
        )
    )
    assert row["event_id"] == "e-1"
    assert row["phase"] == "before"
    assert row["segment"] == "gold"
    assert row["properties"] == {"n": "2", "ok": "true"}
    assert row["ts"].tzinfo is not None


def test_dead_letters_round_trip_through_kafka_headers(parser, config):
    outcome = run(parser, config, [message(b"\xff", offset=9, partition=2)])
    letter = outcome.dead_letters[0]
    headers = dict(letter.headers("ingest"))
    row = dict(zip(DEAD_LETTER_COLUMNS, dead_letter_row(b"\xff", headers), strict=True))
    assert row["dead_letter_id"] == dead_letter_id("touchpoints", 2, 9, -1)
    assert (row["reason"], row["origin_partition"], row["origin_offset"]) == ("invalid_json", 2, 9)
    assert row["payload"] == b"\xff"


def test_dead_letter_ids_are_deterministic_and_distinct():
    assert dead_letter_id("t", 0, 1, -1) == dead_letter_id("t", 0, 1, -1)
    assert len({dead_letter_id("t", 0, 1, i) for i in range(-1, 50)}) == 51


def test_events_are_forwarded_in_arrival_order_across_customers(parser, config):
    """Grouping by customer would reorder event time within a partition (late events)."""
    keys = [f"c-{i}" for i in range(40)]
    messages = [
        message(make_event(i, customer_id=keys[i % 40]), offset=i, key=keys[i % 40].encode())
        for i in range(200)
    ]
    outcome = run(parser, config, messages)
    for events in outcome.forward.values():
        offsets = [e["src_offset"] for e in events]
        assert offsets == sorted(offsets)
    assert sum(len(v) for v in outcome.forward.values()) == 200
    assert len(outcome.forward) == 4  # 40 customers spread over the 4 partitions


@given(
    st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=300), max_size=4), max_size=60),
    st.integers(min_value=20, max_value=2000),
)
def test_forwarded_batches_are_split_below_the_size_limit_in_order(events, max_bytes):
    payloads = batch_payloads(events, "events", max_bytes)
    decoded = [orjson.loads(p)["events"] for p in payloads]
    assert [e for batch in decoded for e in batch] == events
    for payload, batch in zip(payloads, decoded, strict=True):
        assert batch, "no empty payloads"
        assert len(payload) <= max_bytes or len(batch) == 1


def test_a_large_batch_for_one_partition_is_several_messages():
    events = [make_event(f"e{i}", properties={"note": "x" * 1000}) for i in range(2000)]
    payloads = batch_payloads(events)
    assert len(payloads) >= 4
    assert all(len(p) <= 512 * 1024 for p in payloads)
