"""The simulator's stream: seeded, at the asked rate, with the asked faults, all valid."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.dev.simulate import Faults, Pace, deliveries
from streams.dev.synth import Mix

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def take(n: int, **options) -> list:
    return list(itertools.islice(deliveries(options.pop("seed", 3), START, **options), n))


def offset(event: dict) -> float:
    return (datetime.fromisoformat(event["ts"]) - START).total_seconds()


def test_deliveries_come_in_send_order_from_the_start_and_are_all_valid(parser):
    stream = take(3000)
    offsets = [d.send_offset for d in stream]
    assert offsets == sorted(offsets) and offsets[0] >= 0
    end_ms = int((START.timestamp() + offsets[-1]) * 1000)
    valid, rejected = parser.check_items([d.event for d in stream], end_ms)
    assert rejected == [] and len(valid) == 3000
    # Whole population traits show up: identified, anonymous, segments, channels.
    assert {d.event.get("segment") for d in stream} == {"silver", "gold", "platinum"}
    assert any("anonymous_id" in d.event and "customer_id" not in d.event for d in stream)
    assert {"web", "ads", "phone", "email", "delivery"} <= {d.event["channel"] for d in stream}


def test_the_same_seed_gives_the_same_stream_and_another_seed_another():
    first = [(d.send_offset, d.event) for d in take(500, seed=11)]
    assert first == [(d.send_offset, d.event) for d in take(500, seed=11)]
    assert first != [(d.send_offset, d.event) for d in take(500, seed=12)]


@pytest.mark.parametrize("rate", [5.0, 40.0])
def test_the_mean_rate_is_the_asked_rate(rate):
    horizon = 1200.0
    stream = itertools.takewhile(
        lambda d: d.send_offset < horizon, deliveries(5, START, Pace(rate), faults=Faults(0, 0))
    )
    measured = sum(1 for _ in stream) / horizon
    assert measured == pytest.approx(rate, rel=0.15)


def test_bursts_bring_customers_in_faster_and_keep_the_mean():
    pace = Pace(20.0, burst_factor=6.0, burst_every_seconds=60.0, burst_seconds=10.0)
    horizon = 3000.0
    arrivals = Counter()
    total = 0
    for d in itertools.takewhile(lambda d: d.send_offset < horizon, deliveries(5, START, pace)):
        total += 1
        if d.event["properties"]["step"] == 0 and d.kind == "event":  # a customer's first
            arrivals["burst" if offset(d.event) % 60 < 10 else "calm"] += 1
    per_second_in_burst = arrivals["burst"] / (horizon / 6)
    per_second_calm = arrivals["calm"] / (horizon * 5 / 6)
    assert per_second_in_burst > 3 * per_second_calm
    assert total / horizon == pytest.approx(20.0, rel=0.2)


@settings(max_examples=12, deadline=None)
@given(
    duplicate_rate=st.floats(0.0, 0.3),
    out_of_order_rate=st.floats(0.0, 0.3),
    max_delay=st.floats(2.0, 50.0),
)
def test_faults_come_at_their_rates_and_delays_stay_bounded(
    duplicate_rate, out_of_order_rate, max_delay
):
    stream = take(4000, faults=Faults(duplicate_rate, out_of_order_rate, max_delay))
    kinds = Counter(d.kind for d in stream)
    originals = kinds["event"] + kinds["delayed"]

    def within(rate: float) -> float:  # five standard deviations of a binomial share
        return 5 * math.sqrt(rate * (1 - rate) / originals) + 0.005

    assert kinds["duplicate"] / originals == pytest.approx(duplicate_rate, abs=within(0.3))
    assert kinds["delayed"] / originals == pytest.approx(out_of_order_rate, abs=within(0.3))
    for d in stream:
        held = d.send_offset - offset(d.event)
        if d.kind == "delayed":
            assert 0.999 <= held <= max_delay + 0.001  # event times are in milliseconds
        elif d.kind == "duplicate":
            assert 0.5 <= held <= max_delay + 5.0  # a retry of a possibly delayed event
        else:
            assert abs(held) < 1e-3
    # A delayed event really arrives after a newer one.
    event_times = [offset(d.event) for d in stream if d.kind != "duplicate"]
    assert (out_of_order_rate < 0.01) or any(
        later < earlier for earlier, later in itertools.pairwise(event_times)
    )
    # A duplicate is the very same event, sent after its original.
    sent: dict[str, dict] = {}
    for d in stream:
        if d.kind == "duplicate":
            assert sent.get(d.event["event_id"], d.event) == d.event
            assert d.event["event_id"] in sent
        else:
            sent[d.event["event_id"]] = d.event


def test_population_rates_shape_the_journeys():
    never_pay = take(3000, mix=Mix(anonymous_rate=0.0).with_checkout_abandonment(1.0))
    types = Counter(d.event["type"] for d in never_pay)
    assert types["checkout_started"] > 0 and types["purchase"] == 0
    assert not any("anonymous_id" in d.event for d in never_pay)

    always_pay = take(3000, mix=Mix().with_checkout_abandonment(0.0), faults=Faults(0, 0))
    by_customer: dict[str, list[str]] = {}
    for d in always_pay:
        if "customer_id" in d.event:
            by_customer.setdefault(d.event["customer_id"], []).append(d.event["type"])
    # A checkout seen and whose customer kept going (not cut by the end of the sample)
    # is always paid.
    kept_going = [t for t in by_customer.values() if "checkout_started" in t and "delivery" in t]
    assert kept_going and all("purchase" in t for t in kept_going)
    assert Mix().with_checkout_abandonment(0.4).checkout_abandonment == pytest.approx(0.4)
