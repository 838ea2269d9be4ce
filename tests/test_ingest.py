"""The ingest step over a batch of raw messages."""

from __future__ import annotations

import orjson

from streams.ingest import RawMessage, dead_letter_id, ingest_batch
from streams.rows import DEAD_LETTER_COLUMNS, TOUCHPOINT_COLUMNS, dead_letter_row, touchpoint_row
from tests.conftest import NOW_MS, make_event


def message(value, offset=0, partition=1, key=b"c-1"):
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return RawMessage(key, raw, "touchpoints", partition, offset)


def run(parser, config, messages, store=None):
    store = {} if store is None else store
    phases = {name: t.phase for name, t in config.touchpoint_types.items()}
    outcome = ingest_batch(
        messages,
        parser,
        phases,
        lambda key, _partition: store.get(key),
        now_ms=NOW_MS,
        dedupe_window_ms=86_400_000,
        dedupe_max_ids=100,
    )
    for key, (_, ids) in outcome.seen_updates.items():
        store[key] = ids
    return outcome


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
    assert {k: [e["event_id"] for e in v] for k, v in outcome.forward.items()} == {
        "c-1": ["e-1", "e-2"],
        "a-9": ["e-4"],
    }
    assert [(d.rejection.reason, d.offset, d.rejection.index) for d in outcome.dead_letters] == [
        ("unknown_type", 1, 1),
        ("invalid_json", 2, -1),
    ]
    assert dict(outcome.counts) == {"valid": 3, "invalid": 2, "duplicate": 1}


def test_duplicates_are_dropped_across_batches_through_the_remembered_ids(parser, config):
    store = {}
    first = run(parser, config, [message(make_event(1))], store)
    second = run(parser, config, [message(make_event(1), offset=5), message(make_event(2))], store)
    assert [e["event_id"] for e in first.forward["c-1"]] == ["e-1"]
    assert [e["event_id"] for e in second.forward["c-1"]] == ["e-2"]
    assert second.counts["duplicate"] == 1


def test_seen_ids_go_to_the_partition_the_key_came_from(parser, config):
    outcome = run(parser, config, [message(make_event(1), partition=3)])
    assert outcome.seen_updates["c-1"][0] == 3


def test_resolved_events_become_touchpoint_rows(parser, config):
    outcome = run(
        parser, config, [message(make_event(1, segment="gold", properties={"n": 2, "ok": True}))]
    )
    row = dict(zip(TOUCHPOINT_COLUMNS, touchpoint_row(outcome.forward["c-1"][0]), strict=True))
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
