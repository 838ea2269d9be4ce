"""What the journey step keeps in memory: folds for the recently stepped keys only, and
anonymous keys deleted once a merge could no longer want anything of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from streams.core.customer import new_state
from streams.core.state import CustomerState, Event, new_contact
from streams.core.stitching import forgettable
from streams.dev.bench_core import Core
from streams.dev.synth import generate
from streams.edge.produce import as_messages
from tests.support.scripted import touch

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def run(core: Core, messages: list[tuple[bytes, bytes]], wall_ms: int) -> list[list]:
    """Every row each step emitted, in order, with wall-clock fields as they are."""
    emitted = []
    for start in range(0, len(messages), 200):
        _, result = core.step(messages[start : start + 200], wall_ms=wall_ms + start)
        for kind in sorted(result.rows):
            for key in sorted(result.rows[kind]):
                emitted.append([kind, key, result.rows[kind][key]])
    return emitted


def test_keys_without_a_fold_in_memory_step_exactly_as_those_with_one():
    events = generate(300, seed=11, now=NOW, arrivals_seconds=3600, max_gap_seconds=120)
    messages = as_messages(events)
    wall_ms = int(NOW.timestamp() * 1000)
    roomy, tight = Core(4), Core(4)
    tight.folds.limit = 1  # every key but the last stepped folds again from its events
    assert run(roomy, messages, wall_ms) == run(tight, messages, wall_ms)
    assert len(tight.folds) == 1
    assert sum(s.runs is not None for s in tight.states.values()) <= 1
    assert sum(s.runs is not None for s in roomy.states.values()) > 100


def visit(n: int, when: datetime, anonymous_id: str | None = None, customer_id: str | None = None):
    event = touch(n, "site_visit", int(when.timestamp() * 1000), customer_id, anonymous_id)
    return (customer_id or anonymous_id).encode(), orjson.dumps(event)


def test_an_anonymous_key_that_can_no_longer_merge_is_deleted():
    core = Core(1)  # one partition: every event moves the same watermark
    start = NOW - timedelta(days=90)
    wall = int(start.timestamp() * 1000)
    core.step([visit(1, start, anonymous_id="lonely")], wall_ms=wall)
    core.step([visit(2, start, customer_id="c1")], wall_ms=wall)
    assert {"lonely", "c1"} <= core.states.keys()
    # Within the identity window nothing of the anonymous visitor is dropped.
    day = start + timedelta(hours=12)
    core.step([visit(4, day, customer_id="other")], wall_ms=int(day.timestamp() * 1000))
    assert core.states["lonely"].events
    # Weeks later (event time and the wall clock): the visit's journey expired, the
    # identity window passed, nothing waits: the key is gone. A customer stays.
    for days in range(2, 80, 2):
        later = start + timedelta(days=days)
        core.step([visit(100 + days, later, customer_id="other")], int(later.timestamp() * 1000))
    assert "lonely" not in core.states
    assert "c1" in core.states


def test_what_is_kept_for_ever_is_what_a_later_event_still_needs():
    state = new_state()
    assert forgettable(state)
    assert not forgettable(state.evolve(alias="c1"))  # forwards the key's later events
    assert not forgettable(state.evolve(identified=True))  # a customer: surveys, caps
    assert not forgettable(state.evolve(events=[Event(1, "e1", "site_visit", "web")]))


def test_a_stored_state_leaves_out_defaults_and_reads_back_equal():
    """The changelog record is the state's cost per key: fields still at their default
    (no survey sent, no merge, no floor) are left out, and reading fills them back in."""
    core = Core()
    core.step(as_messages(generate(40, seed=3)))
    assert core.states
    defaults = new_contact()
    shortened = 0
    for state in core.states.values():
        doc = orjson.loads(orjson.dumps(state.to_json()))
        assert ("alias" in doc) == (state.alias is not None)
        assert ("generation" in doc) == (state.generation > 0)
        assert ("floors" in doc) == bool(state.floors)
        if state.contact:
            # Keys with no default (follow-up tasks) are always kept.
            kept = {k for k, v in state.contact.items() if k not in defaults or v != defaults[k]}
            assert set(doc["contact"]) == kept
            shortened += len(kept) < len(defaults)
    assert shortened  # the events' customers left some survey decision at its default
    for state in core.states.values():
        stored = orjson.loads(orjson.dumps(state.to_json()))
        assert CustomerState.from_json(stored).to_json() == state.to_json()
        assert CustomerState.from_json(stored).contact == state.contact
