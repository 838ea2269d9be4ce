"""A batch bigger than `PARCOURS_BATCH_BYTES` is computed and made durable in runs: the
cut (`runs_of`), and a runner whose runs see what the runs before them stored."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.epochs import mark_key
from streams.pipeline.runner import runs_of
from tests.support.events import make_event
from tests.support.runner import SETTINGS, TOUCH, Event, Message, iso, record, runner


def sized(sizes: list[int]) -> list[Event]:
    return [Event(Message(TOUCH, n, None), b"x" * size) for n, size in enumerate(sizes)]


@given(st.lists(st.integers(0, 400), max_size=40), st.integers(1, 1000))
def test_runs_keep_every_message_in_order_and_are_as_big_as_the_bound_allows(sizes, most):
    events = sized(sizes)
    runs = runs_of(events, most)

    assert [e for run in runs for e in run] == events
    for run in runs:
        total = sum(len(e.value) for e in run)
        assert run and (total <= most or len(run) == 1)  # a bigger message runs alone
    for before, after in pairwise(runs):  # cut only where it had to
        assert sum(len(e.value) for e in before) + len(after[0].value) > most


def test_a_batch_under_the_bound_is_one_run():
    events = sized([100, 200, 300])
    assert runs_of(events, 600) == [events]


def test_a_batch_over_the_bound_runs_in_parts_that_see_what_the_parts_before_stored():
    """Three messages of one customer, the third repeating the first's event: run in three
    parts, each made durable before the next is computed, the repeat is a duplicate (the
    first part's state, with its event ids, was stored) and the mark ends at the last."""
    now_ms = int(time.time() * 1000)
    ts = [iso(now_ms - 30_000 + n) for n in range(3)]
    messages = [
        record(TOUCH, 0, make_event(0, ts=ts[0]), b"c-1"),
        record(TOUCH, 1, make_event(1, ts=ts[1]), b"c-1"),
        record(TOUCH, 2, make_event(0, ts=ts[0]), b"c-1"),  # sent again
    ]
    one = max(len(m.value) for m in messages)
    captured: list = []
    run = runner(3, captured, dataclasses.replace(SETTINGS, batch_bytes=one), store=True)
    run.indexed.add(0)
    asyncio.run(run.run(messages))

    assert [(e.epoch.first, e.epoch.last) for e in captured] == [(0, 0), (1, 1), (2, 2)]
    stored = [row[0] for e in captured for row in e.rows.get("touchpoints", (None, []))[1]]
    assert stored == ["e-0", "e-1"]
    assert [e.event_id for e in run.table["c-1"].events] == ["e-0", "e-1"]
    assert run.table[mark_key(0)].done == {TOUCH: 2}
