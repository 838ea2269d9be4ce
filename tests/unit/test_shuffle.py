"""Touchpoints that enter on a partition other than their customer's (a backfill keyed by
anything), without Kafka: queues stand in for the topics.

Each touchpoint is judged where it enters and goes on to its customer's partition; each
partition tells the others its entry watermark after what it sent them (see
streams.core.eventtime). Whatever partition each touchpoint enters on, and in whatever
order the partitions take their turns, the journeys, leaks and exclusions are those of
the same touchpoints keyed by their customers, and so are the survey invitations and
their suppressions.
"""

from __future__ import annotations

import random
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import load_config
from streams.config.settings import SCHEMAS_DIR
from streams.core.eventtime import NEVER, Watermark, tell_now
from streams.core.stitching import DueIndex, Message, journey_step

CONFIG = load_config(SCHEMAS_DIR / "journeys.yaml")
PARTITIONS = 3
HOUR = 3_600_000
START_MS = 1_700_000_000_000
KINDS = ["ad_click", "site_visit", "add_to_cart", "checkout_started", "purchase", "support_call"]


def home(key: str) -> int:
    return int(key.removeprefix("c-")) % PARTITIONS


def backfill(steps: list[tuple[int, int, int]]) -> list[dict]:
    """(customer, kind, hours after the previous touchpoint) -> touchpoints in time order."""
    events, clock = [], START_MS
    for n, (customer, kind, hours) in enumerate(steps):
        clock += hours * HOUR + n  # distinct times: the order in time is the order sent
        events.append(
            {
                "event_id": f"e{n}",
                "type": KINDS[kind],
                "ts": "",
                "ts_ms": clock,
                "channel": "web",
                "source": "test",
                "customer_id": f"c-{customer}",
                "customer_key": f"c-{customer}",
            }
        )
    return events


def run(events: list[dict], entry: list[int], seed: int) -> dict:
    """Deliver each touchpoint to partition `entry[i]`; let the partitions take turns in a
    seeded random order; at the end every partition goes idle. What was published."""
    rng = random.Random(seed)
    table: dict = {}
    watermarks = {}
    for p in range(PARTITIONS):
        watermarks[p] = Watermark(CONFIG.allowed_lateness_ms, CONFIG.idle_timeout_ms)
        watermarks[p].expect([q for q in range(PARTITIONS) if q != p])
    due = DueIndex()
    entering = {p: deque() for p in range(PARTITIONS)}
    for event, p in zip(events, entry, strict=True):
        entering[p].append(event)
    resolved: dict[int, deque] = {p: deque() for p in range(PARTITIONS)}
    told: dict = {}
    published: dict = {
        "journeys": {}, "leaks": set(), "invitations": set(), "suppressions": set(),
        "outside": set(), "late": [],
    }  # fmt: skip

    def step(p: int, doc: dict, wall_ms: int = 0) -> None:
        result = journey_step(
            CONFIG, [Message(None, p, 0, doc)], lambda k, _p: table.get(k), watermarks, due,
            wall_ms=wall_ms, home=home,
        )  # fmt: skip
        for key, (_, state) in result.states.items():
            table[key] = state
        for q, forwarded in result.forwards.items():
            resolved[q].append({"control": "entered", "events": forwarded})
        mark = watermarks[p]
        for q in range(PARTITIONS):
            if q != p and tell_now(mark, told.get((p, q)), q in result.forwards, True, wall_ms):
                told[p, q] = (mark.value, mark.idle, wall_ms)
                resolved[q].append(
                    {"control": "watermark", "from": p, "value": mark.value, "idle": mark.idle}
                )
        published["late"] += [e["event_id"] for _, e in result.late]
        for row in (r for rows in result.rows.get("journeys", {}).values() for r in rows):
            latest = published["journeys"].get(row["journey_id"])
            if latest is None or row["version"] > latest["version"]:
                published["journeys"][row["journey_id"]] = row
        for row in (r for rows in result.rows.get("leaks", {}).values() for r in rows):
            published["leaks"].add((row["leak_id"], row["customer_key"], row["anchor_event_id"]))
        for row in (r for rows in result.rows.get("invitations", {}).values() for r in rows):
            published["invitations"].add((row["invitation_id"], row["send_at_ms"]))
        for row in (r for rows in result.rows.get("suppressions", {}).values() for r in rows):
            decided = {k: str(v) for k, v in row.items() if k != "decided_ms"}  # wall time
            published["suppressions"].add(tuple(sorted(decided.items())))
        for row in (r for rows in result.rows.get("outside", {}).values() for r in rows):
            published["outside"].add((row["journey"], row["event_id"], row["reason"]))

    def drain() -> None:
        while any(entering.values()) or any(resolved.values()):
            p = rng.choice([q for q in range(PARTITIONS) if entering[q] or resolved[q]])
            if resolved[p] and (not entering[p] or rng.random() < 0.5):
                step(p, resolved[p].popleft())
            else:
                step(p, {"events": [entering[p].popleft()]})

    drain()
    for p in range(PARTITIONS):  # traffic stops: every partition follows the clock
        step(p, {"control": "tick"}, wall_ms=10**13)
    drain()
    journeys = {
        (r["journey"], r["customer_key"], r["status"], r["stage"], tuple(r["path"]))
        for r in published["journeys"].values()
        if r["status"] != "superseded"
    }
    return {**published, "journeys": journeys}


steps = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, len(KINDS) - 1), st.sampled_from([0, 1, 30, 200])),
    min_size=1,
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(steps, st.data(), st.integers(0, 10**6))
def test_a_backfill_entering_anywhere_publishes_what_it_does_keyed_by_its_customers(
    plan, data, seed
):
    events = backfill(plan)
    anywhere = data.draw(st.lists(st.integers(0, PARTITIONS - 1), min_size=len(events),
                                  max_size=len(events)))  # fmt: skip
    keyed_right = run(events, [home(e["customer_key"]) for e in events], seed=0)
    assert keyed_right["late"] == []  # sent in time order
    assert run(events, anywhere, seed) == keyed_right


def test_journeys_wait_for_a_partition_not_heard_from_and_not_for_an_idle_one():
    mark = Watermark(lateness_ms=1000, idle_timeout_ms=5000)
    mark.expect([1, 2])
    mark.observe(50_000, wall_ms=0)
    assert mark.combine() == NEVER  # 1 and 2 may still send touchpoints of before 49 s
    mark.hear(1, 20_000, idle=False)
    mark.hear(2, 0, idle=True)  # idle: it drops out
    assert mark.combine() == 20_000
    mark.hear(1, 10_000, idle=False)  # an older one, re-sent: stale, and never backwards
    assert mark.combine() == 20_000
    mark.hear(1, 90_000, idle=False)
    assert mark.combine() == 49_000  # its own entry watermark is the least now
    mark.on_idle(wall_ms=60_000)  # all idle: nothing on its way, each follows the clock
    mark.hear(1, 95_000, idle=True)
    assert mark.combine() == max(mark.value, 95_000) > 49_000


def test_a_watermark_is_told_after_forwards_the_first_time_and_when_it_moved():
    mark = Watermark(lateness_ms=1000, idle_timeout_ms=5000)
    mark.observe(10_000, wall_ms=0)
    assert tell_now(mark, None, forwarded=False, ticked=False, wall_ms=0)
    told = (mark.value, mark.idle, 0)
    assert not tell_now(mark, told, forwarded=False, ticked=True, wall_ms=9_000)  # unchanged
    assert tell_now(mark, told, forwarded=True, ticked=False, wall_ms=1)
    mark.observe(20_000, wall_ms=1)
    assert not tell_now(mark, told, forwarded=False, ticked=False, wall_ms=500)  # too soon
    assert tell_now(mark, told, forwarded=False, ticked=True, wall_ms=500)
    assert tell_now(mark, told, forwarded=False, ticked=False, wall_ms=1000)


def test_a_touchpoint_late_where_it_entered_is_late_where_its_customer_lives():
    events = backfill([(1, 0, 0), (2, 0, 5)])
    early = {**events[0], "ts_ms": events[1]["ts_ms"] - 2 * CONFIG.allowed_lateness_ms}
    published = run([events[1], early], entry=[0, 0], seed=0)
    assert published["late"] == [early["event_id"]]
    assert all(early["event_id"] not in path for *_, path in published["journeys"])


def test_a_watermark_control_not_written_by_a_worker_moves_nothing_and_is_a_letter():
    watermarks = {0: Watermark(CONFIG.allowed_lateness_ms, CONFIG.idle_timeout_ms)}
    watermarks[0].expect([1])
    bad = Message(None, 0, 7, {"control": "watermark", "from": 1, "value": "soon"})
    result = journey_step(CONFIG, [bad], lambda k, _p: None, watermarks, DueIndex(), wall_ms=0)
    assert [(m.offset, e) for m, e, _ in result.failed] == [(7, None)]
    assert watermarks[0].heard == {"1": [NEVER, False]}
