"""Poison input: whatever one message does to the step, the others are processed and it
ends up as a dead letter with a reason. Nothing is lost, nothing raises out of a step."""

from __future__ import annotations

import orjson
import pytest

from streams.core import events as ev
from streams.core import stitching
from streams.core.ingest import RawMessage, ingest_batch
from streams.core.stitching import DueIndex, Message, journey_step
from tests.support.events import NOW_MS, make_event
from tests.unit.test_stitching import CONFIG, event


def ingest(parser, values: list[bytes]):
    messages = [RawMessage(b"k", v, "touchpoints", 0, i) for i, v in enumerate(values)]
    return ingest_batch(
        messages, parser, CONFIG.phases, lambda _k, _p: None, lambda _k: 0,
        now_ms=NOW_MS, dedupe_window_ms=86_400_000, dedupe_max_ids=1000,
    )  # fmt: skip


def test_an_envelope_member_too_deep_to_encode_costs_only_itself(parser):
    # orjson writes at most 254 levels: the member cannot be re-encoded for its letter.
    members = orjson.dumps({"events": [make_event(i) for i in range(100)]})
    raw = members[: -len(b"]}")] + b"," + _deep_member(300) + b"]}"
    valid, rejected = parser.parse(raw, NOW_MS)
    assert len(valid) == 100
    assert [(r.reason, r.index) for r in rejected] == [(ev.SCHEMA_VIOLATION, 100)]
    assert rejected[0].payload == raw  # kept whole: the member alone cannot be written


def _deep_member(depth: int) -> bytes:
    event = orjson.dumps(make_event(999, properties={"x": 1}))
    return event.replace(b'{"x":1}', b'{"x":' + b'{"n":' * depth + b"1" + b"}" * depth + b"}")


def test_properties_too_deep_for_the_explainer_are_a_schema_violation(parser):
    raw = _deep_member(1000)  # orjson reads up to 1024 levels; jsonschema recurses past 987
    valid, rejected = parser.parse(raw, NOW_MS)
    assert valid == []
    assert [(r.reason, r.path) for r in rejected] == [(ev.SCHEMA_VIOLATION, "$")]
    assert "nested too deeply" in rejected[0].detail


def test_any_exception_in_an_events_checks_isolates_that_event(parser, monkeypatch):
    check = parser._check_event

    def poisoned(item, index, now_ms):
        if item.get("event_id") == "e-poison":
            raise ValueError("planted")
        return check(item, index, now_ms)

    monkeypatch.setattr(parser, "_check_event", poisoned)
    values = [orjson.dumps(make_event(i)) for i in range(20)]
    values.insert(7, orjson.dumps(make_event(event_id="e-poison")))
    outcome = ingest(parser, values)
    forwarded = [e["event_id"] for batch in outcome.forward.values() for e in batch]
    assert forwarded == [f"e-{i}" for i in range(20)]
    letters = [(d.rejection.reason, d.offset, d.rejection.detail) for d in outcome.dead_letters]
    assert letters == [(ev.PROCESSING_ERROR, 7, "ValueError: planted")]


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00Z", "1999-12-31T23:59:59Z"])
def test_an_event_time_before_2000_is_rejected_whatever_the_max_age(config, ts):
    parser = ev.EventParser(config.touchpoint_types, max_age_seconds=0)  # no age limit
    valid, rejected = parser.parse(orjson.dumps(make_event(ts=ts)), NOW_MS)
    assert valid == []
    assert [(r.reason, r.path) for r in rejected] == [(ev.TS_OUT_OF_RANGE, "$.ts")]


def step(table, docs, watermarks, due, wall_ms=0):
    result = journey_step(
        CONFIG, docs, lambda k, _p: table.get(k), watermarks, due, wall_ms=wall_ms
    )
    for key, (_, state) in result.states.items():
        table[key] = state
    return result


def test_a_customer_the_journey_step_raises_on_costs_only_that_customer(monkeypatch):
    real_advance = stitching.advance

    def advance(config, state, key, *args, **kwargs):
        if key == "poisoned":
            raise KeyError("planted")
        return real_advance(config, state, key, *args, **kwargs)

    monkeypatch.setattr(stitching, "advance", advance)
    table, watermarks, due = {}, {}, DueIndex()
    first = [event(1, "site_visit", customer_id="poisoned")]
    step(table, [Message(None, 0, 0, {"events": first})], watermarks, due)
    assert "poisoned" not in table  # the state stays as stored (none)
    docs = [
        event(2, "site_visit", customer_id="a", minute=1),
        event(3, "product_view", customer_id="poisoned", minute=1),
        event(4, "site_visit", customer_id="b", minute=1),
    ]
    message = Message(None, 0, 1, {"events": docs})
    result = step(table, [message], watermarks, due)
    assert sorted(result.states) == ["a", "b"]
    assert [e.event_id for e in table["a"].events] == ["e2"]
    assert [(m, e["event_id"], d) for m, e, d in result.failed] == [
        (message, "e3", "KeyError: 'planted'")
    ]


def test_a_re_delivered_touchpoint_behind_the_watermark_is_a_duplicate_not_late():
    """After a crash, the journey step can see touchpoints it applied again once the
    watermark has passed them: they are already in the journey, not late."""
    table, watermarks, due = {}, {}, DueIndex()
    applied = [event(n, "site_visit", customer_id="c", minute=n) for n in range(3)]
    step(table, [Message(None, 0, 0, {"events": applied})], watermarks, due)
    ahead = [event(10, "site_visit", customer_id="d", minute=600)]
    step(table, [Message(None, 0, 1, {"events": ahead})], watermarks, due)
    new_but_late = event(20, "product_view", customer_id="c", minute=5)
    again = [*applied, new_but_late]
    result = step(table, [Message(None, 0, 2, {"events": again})], watermarks, due)
    assert result.replayed == 3
    assert [e["event_id"] for _, e in result.late] == ["e20"]


def test_a_message_the_parser_itself_raises_on_is_a_letter_and_the_batch_goes_on(
    parser, monkeypatch
):
    parse = parser.parse

    def poisoned(raw, now_ms):
        if b"e-poison" in (raw or b""):
            raise RecursionError("planted")
        return parse(raw, now_ms)

    monkeypatch.setattr(parser, "parse", poisoned)
    values = [orjson.dumps(make_event(i)) for i in range(5)]
    values.insert(2, orjson.dumps(make_event(event_id="e-poison")))
    outcome = ingest(parser, values)
    assert sum(len(b) for b in outcome.forward.values()) == 5
    assert [(d.rejection.reason, d.rejection.index, d.offset) for d in outcome.dead_letters] == [
        (ev.PROCESSING_ERROR, ev.WHOLE_MESSAGE, 2)
    ]
    assert outcome.dead_letters[0].rejection.payload == values[2]


def test_the_journey_step_s_letters_name_the_record_their_event_came_in():
    from streams.core.stitching import Message
    from streams.pipeline import records

    handed = {"event_id": "e-1", "ts": "2026-01-01T00:00:00Z", "src_offset": 41}
    other = {"event_id": "e-2", "ts": "2026-01-01T00:00:00Z", "src_offset": 44}
    # Ingest's events of an epoch starting at offset 40: each names its own record.
    ingested = Message(None, 3, 40, {"events": [handed, other]})
    late = records.late_letter(ingested, other, "touchpoints")
    assert (late.topic, late.partition, late.offset, late.rejection.index) == (
        "touchpoints", 3, 44, 1
    )  # fmt: skip
    assert late.rejection.reason == ev.LATE
    # A forward carries events of other partitions: it names itself.
    forwarded = Message("c-1", 3, 7, {"control": "forward", "events": [handed]})
    failed = records.step_letter(forwarded, handed, "touchpoints-resolved", "x", "boom")
    assert (failed.topic, failed.offset) == ("touchpoints-resolved", 7)
