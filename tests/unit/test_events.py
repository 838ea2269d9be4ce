"""Parsing and validation of raw message values, good and bad."""

from __future__ import annotations

import math

import jsonschema
import jsonschema_rs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import events as ev
from tests.support.events import NOW_MS, make_event


def parse(parser, value):
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return parser.parse(raw, NOW_MS)


def test_a_valid_single_event_comes_out_with_its_event_time(parser):
    valid, rejected = parse(parser, make_event(ts="2026-11-22T10:00:00.250+01:00"))
    assert rejected == []
    assert [v.event["event_id"] for v in valid] == ["e-0"]
    assert valid[0].ts_ms == 1795338000250


def test_an_envelope_keeps_order_and_loses_only_its_bad_event(parser):
    batch = {"events": [make_event(1), make_event(2, channel="pigeon"), make_event(3)]}
    valid, rejected = parse(parser, batch)
    assert [v.event["event_id"] for v in valid] == ["e-1", "e-3"]
    assert [v.index for v in valid] == [0, 2]
    assert [(r.reason, r.path, r.index) for r in rejected] == [
        (ev.SCHEMA_VIOLATION, "$.channel", 1)
    ]
    # The rejected member is kept as its own JSON document, not the whole envelope.
    assert orjson.loads(rejected[0].payload)["event_id"] == "e-2"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", ev.INVALID_JSON),
        (b"\xff\xfe\xfa", ev.INVALID_JSON),  # not UTF-8
        (b'{"event_id": ', ev.INVALID_JSON),
        (b"[" * 5000 + b"]" * 5000, ev.INVALID_JSON),  # nesting deeper than orjson allows
        (b"[1, 2]", ev.INVALID_ENVELOPE),
        (b"42", ev.INVALID_ENVELOPE),
        (b'{"events": {"a": 1}}', ev.INVALID_ENVELOPE),
    ],
)
def test_unusable_messages_are_rejected_whole_with_their_bytes(parser, raw, reason):
    valid, rejected = parser.parse(raw, NOW_MS)
    assert valid == []
    assert [(r.reason, r.index, r.payload) for r in rejected] == [(reason, -1, raw)]


def test_none_value_is_treated_as_empty(parser):
    _, rejected = parser.parse(None, NOW_MS)
    assert rejected[0].reason == ev.INVALID_JSON


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"event_id": None}, "$"),  # missing id
        ({"customer_id": None}, "$"),  # neither customer_id nor anonymous_id
        ({"event_id": 17}, "$.event_id"),
        ({"ts": "yesterday"}, "$.ts"),
        ({"ts": "2026-11-22T10:00:00"}, "$.ts"),  # no offset
        ({"properties": {"nested": {"a": 1}}}, "$.properties.nested"),
        ({"properties": {"list": [1]}}, "$.properties.list"),
        ({"customerId": "c-1"}, "$"),  # a typo of a field name is not silently ignored
        ({"source": "Bad Source!"}, "$.source"),
    ],
)
def test_schema_violations_name_the_json_path(parser, change, path):
    _, rejected = parse(parser, make_event(**change))
    assert [(r.reason, r.path) for r in rejected] == [(ev.SCHEMA_VIOLATION, path)]
    assert rejected[0].detail


def test_a_one_megabyte_string_is_rejected_and_the_reason_stays_short(parser):
    _, rejected = parse(parser, make_event(properties={"blob": "x" * 1_000_000}))
    assert rejected[0].reason == ev.SCHEMA_VIOLATION
    assert rejected[0].path == "$.properties.blob"
    assert len(rejected[0].detail) <= 300


def test_a_message_over_the_size_limit_is_oversize(config):
    small = ev.EventParser(config.touchpoint_types, max_message_bytes=1000)
    raw = orjson.dumps(make_event(properties={"blob": "x" * 900}))
    _, rejected = small.parse(raw, NOW_MS)
    assert [(r.reason, r.payload) for r in rejected] == [(ev.OVERSIZE, raw)]


def test_unknown_types_are_named(parser):
    _, rejected = parse(parser, make_event(type="teleport"))
    assert (rejected[0].reason, rejected[0].path) == (ev.UNKNOWN_TYPE, "$.type")
    assert "teleport" in rejected[0].detail


def test_timestamps_too_far_ahead_or_behind_are_rejected(parser):
    _, future = parse(parser, make_event(ts="2999-01-01T00:00:00Z"))
    _, old = parse(parser, make_event(ts="2001-01-01T00:00:00Z"))
    assert future[0].reason == ev.TS_IN_FUTURE
    assert old[0].reason == ev.TS_TOO_OLD


def test_the_age_check_can_be_turned_off_for_historical_replays(config):
    replay = ev.EventParser(config.touchpoint_types, max_age_seconds=0)
    valid, rejected = replay.parse(orjson.dumps(make_event(ts="2012-03-04T05:06:07Z")), NOW_MS)
    assert rejected == [] and len(valid) == 1


def test_every_reason_is_in_the_closed_set():
    assert len(set(ev.REASONS)) == len(ev.REASONS) == 12


@pytest.mark.parametrize(
    ("sent", "read"), [(3, 3), ("3", 3), (" 4.5 ", 4.5), ("10", 10), (9.0, 9.0)]
)
def test_a_numeric_score_string_is_read_as_the_number_it_writes(parser, sent, read):
    answer = make_event(type="survey_response", properties={"metric": "nps", "score": sent})
    valid, rejected = parse(parser, answer)
    assert rejected == []
    score = valid[0].event["properties"]["score"]
    assert score == read and type(score) is type(read)


@pytest.mark.parametrize("sent", ["three", "", "nan", "inf", True, [3], {"v": 3}, None])
def test_a_score_that_is_no_number_is_rejected_naming_its_path(parser, sent):
    answer = make_event(type="survey_response", properties={"metric": "nps", "score": sent})
    valid, rejected = parse(parser, answer)
    assert valid == []
    assert (rejected[0].reason, rejected[0].path) == ("schema_violation", "$.properties.score")


@pytest.mark.parametrize("field", ["type", "ts", "source"])
def test_a_pattern_field_with_a_trailing_newline_is_rejected_naming_it(parser, field):
    # Python's `re` lets `$` match before a final newline, so jsonschema would pass
    # "purchase\n"; the spec's `$` does not, nor does the hot-path validator. The dead
    # letter still names the field and what its value must look like.
    event = make_event()
    valid, rejected = parse(parser, {**event, field: event[field] + "\n"})
    assert valid == []
    [letter] = rejected
    assert (letter.reason, letter.path) == (ev.SCHEMA_VIOLATION, f"$.{field}")
    assert "does not match" in letter.detail


_REFERENCE = jsonschema.Draft202012Validator(ev.load_touchpoint_schema())
_HOT_PATH = jsonschema_rs.validator_for(ev.load_touchpoint_schema())
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
_FIELDS = (
    *("event_id", "type", "ts", "channel", "source", "customer_id", "anonymous_id"),
    *("properties", "context", "segment", "schema_version", "sent_at", "extensions"),
)


@settings(max_examples=600, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(_FIELDS), _values)
def test_the_hot_path_validator_agrees_with_jsonschema(n, field, value):
    """jsonschema-rs decides on the hot path and jsonschema explains its rejections: they
    must agree, but for two places where jsonschema-rs is the stricter, rightly: a pattern
    field ending in a newline (see above), and infinity or NaN, which are no JSON numbers
    (orjson never decodes them; only a Python producer can pass them)."""
    event = {**make_event(n), field: value}
    fast, reference = _HOT_PATH.is_valid(event), _REFERENCE.is_valid(event)
    if fast != reference:
        assert reference and not fast
        if not _has_non_finite(value):
            error = next(iter(_HOT_PATH.iter_errors(event)))
            assert isinstance(error.instance, str) and error.instance.endswith("\n")
            assert "does not match" in error.message


def _has_non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(_has_non_finite(v) for v in value)


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_a_number_json_cannot_carry_is_rejected_naming_it(config, number):
    # Only a Python producer can hand over infinity or NaN (orjson decodes neither).
    parser = ev.EventParser(config.touchpoint_types)
    [rejected] = parser.check_items([make_event(properties={"amount": number})], NOW_MS)[1]
    assert (rejected.reason, rejected.path) == (ev.SCHEMA_VIOLATION, "$.properties.amount")
    assert "not a JSON number" in rejected.detail
    # Named wherever it sits, also where jsonschema-rs reports another error first.
    [rejected] = parser.check_items([make_event(properties={"": number})], NOW_MS)[1]
    assert (rejected.path, "not a JSON number" in rejected.detail) == ("$.properties.", True)
