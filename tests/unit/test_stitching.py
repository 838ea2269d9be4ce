"""Identity stitching in the journey step, without Kafka: a loop stands in for the topic.

The loop delivers each sent message to its key's partition, in an order the test picks,
which is exactly the freedom Kafka has between partitions.
"""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import load_config
from streams.config.settings import SCHEMAS_DIR
from streams.core.stitching import DueIndex, Message, journey_step

CONFIG = load_config(SCHEMAS_DIR / "journeys.yaml")
PARTITIONS = 4


def event(n, kind, customer_id=None, anonymous_id=None, minute=0):
    e = {
        "event_id": f"e{n}",
        "type": kind,
        "ts": "",
        "ts_ms": 1_000_000 + minute * 60_000,
        "channel": "web",
    }
    if customer_id:
        e["customer_id"] = customer_id
    if anonymous_id:
        e["anonymous_id"] = anonymous_id
    e["customer_key"] = customer_id or anonymous_id
    return e


def key_of(e):
    return e.get("customer_id") or e["anonymous_id"]


def partition_of(key):
    return sum(key.encode()) % PARTITIONS


def run(events, seed):
    """Send each event as its own message; deliver everything in a seeded random order."""
    rng = random.Random(seed)
    table, rows, watermarks, due = {}, {}, {}, DueIndex()
    pending = [(key_of(e), {"events": [e]}) for e in events]
    offset = 0
    while pending:
        # Kafka keeps order within a key; across keys any interleaving can happen.
        keys = sorted({k for k, _ in pending})
        key = rng.choice(keys)
        index = next(i for i, (k, _) in enumerate(pending) if k == key)
        _, doc = pending.pop(index)
        offset += 1
        result = journey_step(
            CONFIG,
            [Message(key, partition_of(key), offset, doc)],
            lambda k, _p: table.get(k),
            watermarks,
            due,
            wall_ms=0,
        )
        for k, (_, state) in result.states.items():
            table[k] = state
        pending += result.sends
        for updates in result.rows.get("journeys", {}).values():
            for row in updates:
                if row["version"] > rows.get(row["journey_id"], {"version": -1})["version"]:
                    rows[row["journey_id"]] = row
    return {
        jid: (r["journey"], r["customer_key"], r["status"], r["stage"], tuple(r["path"]))
        for jid, r in rows.items()
        if r["status"] != "superseded"
    }


ANONYMOUS_THEN_LOGIN = [
    event(1, "ad_click", anonymous_id="anon-1", minute=0),
    event(2, "site_visit", anonymous_id="anon-1", minute=1),
    event(3, "checkout_started", customer_id="cust", anonymous_id="anon-1", minute=2),
    event(4, "purchase", customer_id="cust", minute=3),
]

TWO_DEVICES = [
    event(1, "site_visit", anonymous_id="phone", minute=0),
    event(2, "product_view", anonymous_id="laptop", minute=1),
    event(3, "add_to_cart", customer_id="cust", anonymous_id="phone", minute=2),
    event(4, "checkout_started", customer_id="cust", anonymous_id="laptop", minute=3),
    event(5, "site_visit", anonymous_id="phone", minute=4),  # after login, still anonymous
    event(6, "purchase", customer_id="cust", minute=5),
]


def test_anonymous_history_joins_the_customers_journey():
    assert set(run(ANONYMOUS_THEN_LOGIN, seed=1).values()) == {
        (
            "purchase",
            "cust",
            "completed",
            "purchase",
            ("ad_click", "site_visit", "checkout_started", "purchase"),
        ),
    }


def test_two_devices_and_later_anonymous_events_resolve_to_one_customer():
    assert set(run(TWO_DEVICES, seed=3).values()) == {
        (
            "purchase",
            "cust",
            "completed",
            "purchase",
            (
                "site_visit",
                "product_view",
                "add_to_cart",
                "checkout_started",
                "site_visit",
                "purchase",
            ),
        ),
    }


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**6))
def test_the_merge_does_not_depend_on_which_side_is_processed_first(seed):
    assert run(TWO_DEVICES, seed) == run(TWO_DEVICES, seed=0)
    assert run(ANONYMOUS_THEN_LOGIN, seed) == run(ANONYMOUS_THEN_LOGIN, seed=0)


def test_an_idle_partition_expires_journeys_on_ticks():
    table, watermarks, due = {}, {}, DueIndex()

    def step(doc, key, wall_ms):
        result = journey_step(
            CONFIG, [Message(key, 0, 0, doc)], lambda k, _p: table.get(k), watermarks, due, wall_ms
        )
        for k, (_, state) in result.states.items():
            table[k] = state
        return [r for rows in result.rows.get("journeys", {}).values() for r in rows]

    opened = step({"events": [event(1, "site_visit", customer_id="c")]}, "c", wall_ms=0)
    assert [r["status"] for r in opened] == ["open"]
    expiry = CONFIG.journeys["purchase"].expiry_ms
    wait = CONFIG.idle_timeout_ms + CONFIG.allowed_lateness_ms + expiry
    assert step({"control": "tick"}, None, wall_ms=wait - 1) == []
    expired = step({"control": "tick"}, None, wall_ms=wait)
    assert [(r["customer_key"], r["status"]) for r in expired] == [("c", "expired")]
    # Sealed once the watermark is past its end (a touchpoint at the watermark is on time).
    assert table["c"].events != []
    assert step({"control": "tick"}, None, wall_ms=wait + 1) == []
    assert table["c"].events == []  # sealed and evicted


def test_ticks_of_a_partition_the_worker_is_behind_on_expire_nothing():
    table, watermarks, due = {}, {}, DueIndex()

    def step(doc, wall_ms):
        result = journey_step(
            CONFIG, [Message(None, 0, 0, doc)], lambda k, _p: table.get(k), watermarks, due, wall_ms
        )
        table.update((k, state) for k, (_, state) in result.states.items())
        return [r for rows in result.rows.get("journeys", {}).values() for r in rows]

    step({"events": [event(1, "site_visit", customer_id="c")]}, wall_ms=0)
    wait = CONFIG.idle_timeout_ms + CONFIG.allowed_lateness_ms
    wait += CONFIG.journeys["purchase"].expiry_ms
    assert step({"control": "tick", "behind": True}, wall_ms=wait) == []
    assert step({"control": "tick"}, wall_ms=wait) == []  # the idle clock started again
    later = wait + CONFIG.idle_timeout_ms + CONFIG.allowed_lateness_ms
    expired = step({"control": "tick"}, wall_ms=later + CONFIG.journeys["purchase"].expiry_ms)
    assert [(r["customer_key"], r["status"]) for r in expired] == [("c", "expired")]


def test_the_state_table_codec_stores_the_json_layout_and_reads_it_back():
    from streams.core.state import CustomerState
    from streams.pipeline.tables import CustomerStateCodec

    table = {}
    for k, (_, state) in journey_step(
        CONFIG,
        [Message("c", 0, 0, {"events": [event(1, "site_visit", customer_id="c")]})],
        lambda k, _p: None,
        {},
        DueIndex(),
        wall_ms=0,
    ).states.items():
        table[k] = state
    codec = CustomerStateCodec()
    raw = codec.dumps(table["c"])
    assert orjson.loads(raw) == table["c"].to_json()  # what the changelog held before
    assert codec.loads(raw) == table["c"]
    assert isinstance(codec.loads(raw), CustomerState)


def test_a_fast_replay_keeps_the_anonymous_history_for_the_login_that_comes_late():
    """A visitor browses, logs in, checks out and buys; other customers' events push every
    partition's watermark ten days ahead before the link from the login is delivered (a
    replay or a backlog runs far ahead of the topic round trip). Nothing is lost: the
    customer's journey holds all five touchpoints, as it does when the link comes at once.
    """
    visitor = [
        event(1, "site_visit", anonymous_id="anon-1"),
        event(2, "product_view", anonymous_id="anon-1", minute=1),
        event(3, "add_to_cart", anonymous_id="anon-1", minute=2),
        event(4, "login", customer_id="c-1", anonymous_id="anon-1", minute=3),
        event(5, "checkout_started", customer_id="c-1", minute=4),
        event(6, "purchase", customer_id="c-1", minute=5),
    ]
    others = [
        event(100 + i, "site_visit", customer_id=f"other-{i}", minute=60 * 24 * day)
        for i, day in enumerate(d for d in range(1, 11) for _ in range(8))
    ]

    def journeys(link_lags: bool) -> dict:
        table, rows, watermarks, due = {}, {}, {}, DueIndex()
        sends: list = []

        def deliver(messages):
            result = journey_step(
                CONFIG, messages, lambda k, _p: table.get(k), watermarks, due, wall_ms=0
            )
            for k, (_, state) in result.states.items():
                table[k] = state
            for updates in result.rows.get("journeys", {}).values():
                for row in updates:
                    if row["version"] > rows.get(row["journey_id"], {"version": -1})["version"]:
                        rows[row["journey_id"]] = row
            return result.sends

        for offset, e in enumerate(visitor + others):
            key = key_of(e)
            sends += deliver([Message(key, partition_of(key), offset, {"events": [e]})])
            if not link_lags:
                while sends:
                    key, doc = sends.pop(0)
                    sends += deliver([Message(key, partition_of(key), 0, doc)])
        while sends:  # the round trip catches up, days of event time later
            key, doc = sends.pop(0)
            sends += deliver([Message(key, partition_of(key), 0, doc)])
        return {
            r["customer_key"]: (r["status"], r["path"])
            for r in rows.values()
            if r["status"] != "superseded" and r["journey"] == "purchase"
        }

    steps = ["site_visit", "product_view", "add_to_cart", "checkout_started", "purchase"]
    assert journeys(link_lags=True)["c-1"] == journeys(link_lags=False)["c-1"]
    assert journeys(link_lags=True)["c-1"][1] == steps


KEYS = ("k0", "k1", "k2", "k3")
linked_event = st.tuples(st.sampled_from(KEYS), st.sampled_from((*KEYS, None)))


@settings(max_examples=150, deadline=None)
@given(st.lists(linked_event, min_size=1, max_size=8), st.integers(0, 10**6))
def test_identity_merges_end_without_a_loop_and_each_touchpoint_has_one_customer(pairs, seed):
    """Any keys, each both a customer id and an anonymous id ({A, anon C} then {C, anon
    A} made a forwarding loop): the messages run out, aliases form no cycle, and every
    touchpoint is held by exactly one customer that is no alias."""
    rng = random.Random(seed)
    events = [
        event(n, "site_visit", customer_id=c, anonymous_id=a, minute=n)
        for n, (c, a) in enumerate(pairs)
    ]
    table, watermarks, due = {}, {}, DueIndex()
    pending = [(key_of(e), {"events": [e]}) for e in events]
    delivered = 0
    while pending:
        delivered += 1
        assert delivered < 500, f"messages still circulating: {pending[:3]}"
        key = rng.choice(sorted({k for k, _ in pending}))
        _, doc = pending.pop(next(i for i, (k, _) in enumerate(pending) if k == key))
        result = journey_step(
            CONFIG, [Message(key, partition_of(key), delivered, doc)],
            lambda k, _p: table.get(k), watermarks, due, wall_ms=0,
        )  # fmt: skip
        assert not result.failed and not result.late
        for k, (_, state) in result.states.items():
            table[k] = state
        pending += result.sends

    for key in table:  # every alias chain ends at a key that is no alias
        seen, at = set(), key
        while table.get(at) is not None and table[at].alias:
            assert at not in seen, f"alias cycle through {at}"
            seen.add(at)
            at = table[at].alias
    holders = {
        e.event_id: [k for k, s in table.items() if not s.alias and e in s.events]
        for s in table.values()
        for e in s.events
    }
    assert sorted(holders) == sorted(e["event_id"] for e in events)
    assert all(len(keys) == 1 for keys in holders.values()), holders
