"""The epoch runner's ticks and a partition the worker is behind on, without a broker.

The runner is the worker's one agent body (streams.pipeline.runner). Here it runs a batch
whose records are given, with a stand-in for Faust's consumer (assignment and end
offsets) and its durable writes captured instead of sent: what is tested is which
events its journey step judges late.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from streams.core.eventtime import Watermark
from streams.edge.stamps import rfc3339
from tests.support.events import make_event
from tests.support.runner import RESOLVED, TOUCH, record, runner


def late_letters(effects: list) -> list[str]:
    return [
        orjson.loads(value)["event_id"]
        for e in effects
        for topic, _key, value, _p, headers in e.sends
        if headers and dict(headers).get("parcours.reason") == b"late"
    ]


def test_ticks_computed_before_the_touchpoints_they_came_with_move_no_watermark():
    """A batch can hold a partition's ticks ahead of its touchpoints. The worker was busy
    for a minute since it last observed an event: were the ticks taken as idleness, the
    watermark would jump a minute and every touchpoint of the batch would be late."""
    now_ms = int(time.time() * 1000)
    captured: list = []
    run = runner(end=3, captured=captured)  # offsets 0..2 are in the log
    # The last event observed a minute ago (wall clock), 61 s before now in event time.
    mark = Watermark(1000, 5000)
    mark.observe(now_ms - 61_000, wall_ms=now_ms - 60_000)
    run.watermarks[0] = mark
    run.indexed.add(0)
    events = [
        record(RESOLVED, 0, {"control": "tick", "wall_ms": now_ms}),  # first in the batch
        *(
            record(TOUCH, n, make_event(n, ts=rfc3339(now_ms - 60_500 + n)), b"c-1")
            for n in range(3)
        ),
    ]
    asyncio.run(run.run(events))

    assert [e.epoch.topic for e in captured] == [RESOLVED, TOUCH]
    assert late_letters(captured) == []
    assert captured[0].epoch.behind is True  # recorded with the intent, for a re-run
    assert run.watermarks[0].value == now_ms - 60_500 + 2 - 1000


def test_ticks_of_a_partition_with_nothing_left_to_read_move_its_watermark():
    now_ms = int(time.time() * 1000)
    captured: list = []
    run = runner(end=3, captured=captured)
    mark = Watermark(1000, 5000)
    mark.observe(now_ms - 61_000, wall_ms=now_ms - 60_000)
    run.watermarks[0] = mark
    run.indexed.add(0)
    run.read_to[0] = 2  # offsets 0..2 computed in an earlier batch: all read
    asyncio.run(run.run([record(RESOLVED, 5, {"control": "tick", "wall_ms": now_ms})]))

    assert captured[0].epoch.behind is False
    # Idle for 55 s past the timeout: the watermark follows the wall clock.
    assert run.watermarks[0].value >= now_ms - 61_000 - 1000 + 55_000
