"""Fuzz: arbitrary JSON through the real ingest step. Every input is accounted for, as a
touchpoint or as a dead letter with a reason, and no exception escapes."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.core import events as ev
from streams.core.ingest import RawMessage, ingest_batch
from tests.support.events import NOW_MS, make_event
from tests.unit.test_stitching import CONFIG

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Valid events with one field replaced by anything, so the checks past the schema run too.
FIELDS = ("event_id", "type", "ts", "channel", "source", "customer_id", "properties", "segment")
mutated = st.builds(
    lambda n, field, value: {**make_event(n), field: value},
    st.integers(0, 10**6), st.sampled_from(FIELDS), json_values,
)  # fmt: skip
members = mutated | json_values | st.builds(make_event, st.integers(0, 10**6))


def deep(depth: int) -> bytes:
    return b'{"events":[' + b"[" * depth + b"]" * depth + b"]}"


raw_values = (
    members.map(lambda m: orjson.dumps(m, option=orjson.OPT_NON_STR_KEYS))
    | st.lists(members, max_size=6).map(lambda ms: orjson.dumps({"events": ms}))
    | st.binary(max_size=64)
    | st.integers(200, 1100).map(deep)
    | st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


def events_in(raw: bytes) -> int:
    """How many events a message holds, as the parser counts them (1 if not an envelope)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 1
    if isinstance(doc, dict) and set(doc) == {"events"} and isinstance(doc["events"], list):
        return len(doc["events"])
    return 1


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_values, min_size=1, max_size=8))
def test_every_input_is_a_touchpoint_or_a_dead_letter_with_a_reason(values):
    parser = ev.EventParser(CONFIG.touchpoint_types, max_age_seconds=0)
    messages = [RawMessage(b"k", v, "touchpoints", 0, i) for i, v in enumerate(values)]
    outcome = ingest_batch(
        messages, parser, CONFIG.phases, lambda _k, _p: None, lambda _k: 0,
        now_ms=NOW_MS, dedupe_window_ms=86_400_000, dedupe_max_ids=1000,
    )  # fmt: skip
    forwarded = sum(len(batch) for batch in outcome.forward.values())
    letters = outcome.dead_letters
    assert all(letter.rejection.reason in ev.REASONS for letter in letters)
    # Each letter keeps the bytes it is about (empty only if the message was).
    assert all(d.rejection.payload or not values[d.offset] for d in letters)
    whole = {d.offset for d in letters if d.rejection.index == ev.WHOLE_MESSAGE}
    expected = sum(events_in(m.value) for m in messages if m.offset not in whole)
    per_event = len(letters) - len(whole)
    assert forwarded + per_event + outcome.counts["duplicate"] == expected
