"""What the bench reads off a worker's /metrics page: the longest batch it computed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams import metrics
from streams.dev.local_stack import longest_observed, samples


def page(*observed: float) -> str:
    registry = CollectorRegistry()
    histogram = Histogram(
        "parcours_compute_seconds",
        "as the worker's",
        buckets=metrics.COMPUTE_BUCKETS,
        registry=registry,
    )
    for seconds in observed:
        histogram.observe(seconds)
    return generate_latest(registry).decode()


def test_the_longest_batch_is_bounded_by_the_first_bucket_that_holds_every_one():
    assert longest_observed(samples(page(0.3, 4.2, 0.02)), "parcours_compute_seconds") == 5.0
    assert longest_observed(samples(page(0.3)), "parcours_compute_seconds") == 0.5


def test_a_batch_longer_than_every_bound_is_infinite_and_none_is_zero():
    assert longest_observed(samples(page(0.3, 45.0)), "parcours_compute_seconds") == float("inf")
    assert longest_observed(samples(page()), "parcours_compute_seconds") == 0.0
