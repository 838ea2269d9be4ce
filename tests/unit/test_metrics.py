"""The worker's metrics helpers: bounded labels, running scores, state scan, lag, ports."""

from __future__ import annotations

import socket
import urllib.request
from collections import namedtuple

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from streams import metrics
from streams.core.state import CustomerState
from streams.pipeline import worker_metrics
from tests.support.events import make_event

TP = namedtuple("TP", "topic partition")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def answer(metric: str, score: float, **props) -> dict:
    return make_event(
        0, type="survey_response", properties={"metric": metric, "score": score, **props}
    )


def test_sources_beyond_the_cap_are_counted_as_other():
    label = metrics.SourceLabels(limit=2)
    assert [label(s) for s in ("site", "crm", "site", "app", "pos")] == [
        "site",
        "crm",
        "site",
        "other",
        "other",
    ]


def test_answers_are_counted_by_subject_and_class_with_running_scores(config):
    subjects = worker_metrics.answer_subjects(config)
    assert subjects == {
        "csat": "delivery",
        "ces": "support_call",
        "why_not_buy": "abandoned_checkout",
        "nps": "relationship",
    }
    scores = metrics.AnswerScores(subjects, config.touchpoint_types)
    before = sample(
        "parcours_survey_responses_total", metric="nps", touchpoint="delivery", answer="positive"
    )
    scores.count(
        [
            answer("NPS", 10, about="delivery"),  # promoter
            answer("nps", 9, about="delivery"),  # promoter
            answer("nps", 3, about="delivery"),  # detractor
            answer("nps", 7, about="delivery"),  # passive
            answer("csat", 5),
            answer("csat", 2),
            answer("ces", 3),
            answer("ces", 6),
            answer("nps", "ten"),  # not a score: ignored
            make_event(1),  # not an answer
        ]
    )
    assert (
        sample(
            "parcours_survey_responses_total",
            metric="nps",
            touchpoint="delivery",
            answer="positive",
        )
        - before
        == 2
    )
    assert scores.tallies["nps", "delivery"][:3] == [4, 2, 1]
    assert sample("parcours_survey_score", metric="nps", touchpoint="delivery") == pytest.approx(
        100 * (2 - 1) / 4
    )
    assert sample("parcours_survey_score", metric="csat", touchpoint="delivery") == 50.0
    assert sample("parcours_survey_score", metric="ces", touchpoint="support_call") == 4.5


def test_the_state_scan_counts_only_owned_partitions_and_zeroes_gone_stages():
    def state(partition, *journeys):
        emitted = {
            f"j{n}": [["sig", status, 0], journey, f"e{n}", stage]
            for n, (journey, status, stage) in enumerate(journeys)
        }
        return CustomerState.from_json(
            {"partition": partition, "events": [[0, "e", "t", "web"]] * 3, "emitted": emitted}
        )

    states = [
        state(0, ("purchase", "open", "cart"), ("purchase", "completed", "purchase")),
        state(1, ("purchase", "open", "cart"), ("support_resolution", "open", "contact")),
        state(2, ("purchase", "open", "cart")),  # a standby copy: not ours
        None,
        CustomerState(alias="c-1"),  # merged away: no partition field
    ]
    worker_metrics.scan_journey_state(states, {0, 1})
    assert sample("parcours_journeys_open", journey="purchase", stage="cart") == 2
    assert sample("parcours_journeys_open", journey="support_resolution", stage="contact") == 1
    assert sample("parcours_state_keys", table="journey-state") == 2
    assert sample("parcours_state_events") == 6

    worker_metrics.scan_journey_state(states[:1], {0})
    assert sample("parcours_journeys_open", journey="support_resolution", stage="contact") == 0
    assert sample("parcours_journeys_open", journey="purchase", stage="cart") == 1


def test_consumer_lag_is_end_minus_committed_and_forgets_revoked_partitions():
    worker_metrics.report_consumer_lag(
        {TP("touchpoints", 0): 120, TP("touchpoints", 1): 40, TP("touchpoints", 2): None},
        {TP("touchpoints", 0): 100},
    )
    assert sample("parcours_consumer_lag_messages", topic="touchpoints", partition="0") == 20
    assert sample("parcours_consumer_lag_messages", topic="touchpoints", partition="1") == 40
    worker_metrics.report_consumer_lag({TP("touchpoints", 0): 120}, {TP("touchpoints", 0): 120})
    assert sample("parcours_consumer_lag_messages", topic="touchpoints", partition="0") == 0
    assert sample("parcours_consumer_lag_messages", topic="touchpoints", partition="1") == 0.0


def test_a_broker_that_lost_its_data_is_noticed_once_per_partition():
    watch = worker_metrics.BrokerResetWatch()
    a, b = TP("touchpoints", 0), TP("touchpoints", 1)
    assert watch.check({a: 120, b: 50}, {a: 100, b: 50}) == []
    assert watch.check({a: 130, b: 60}, {a: 120, b: 55}) == []
    # Restarted empty: a's end offset is below what was committed; b was committed again
    # before the check, from the new log's start.
    assert watch.check({a: 3, b: 8}, {a: 120, b: 2}) == [(a, 3, 120), (b, 2, 55)]
    assert watch.check({a: 9, b: 12}, {a: 120, b: 10}) == []  # a: old commit, already told
    assert watch.check({a: 9, b: 12}, {a: 5, b: 12}) == []


def test_a_port_range_lets_two_processes_share_a_host():
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        busy = taken.getsockname()[1]
        port = metrics.serve(f"{busy}-{busy + 20}")
        assert busy < port <= busy + 20
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            assert b"parcours_events_ingested_total" in page.read()
        with pytest.raises(OSError, match="PARCOURS_METRICS_PORT"):
            metrics.serve(str(busy))
    assert metrics.serve("0") == 0


def test_made_up_survey_metrics_share_one_other_series(config):
    scores = metrics.AnswerScores(worker_metrics.answer_subjects(config), config.touchpoint_types)

    def series() -> int:
        return sum(
            1
            for family in REGISTRY.collect()
            for s in family.samples
            if s.name.startswith("parcours_survey_")
        )

    scores.count([answer(f"made-up-{n}", 5) for n in range(3)])  # "other" exists from here
    before = series()
    scores.count([answer(f"made-up-{n}", 5) for n in range(3, 3000)])
    assert series() == before
    assert sample("parcours_survey_responses_total", metric="other", touchpoint="unknown",
                  answer="neutral") >= 3000  # fmt: skip


@given(st.lists(st.floats(-1e3, 1e6, allow_nan=False), max_size=50))
def test_a_batch_observed_at_once_lands_in_the_buckets_one_by_one_would(values):
    from prometheus_client import CollectorRegistry, Histogram

    from streams.metrics import observe_many

    registry = CollectorRegistry()
    one_by_one = Histogram("a", "a", buckets=(0.1, 1, 10, 1000), registry=registry)
    batched = Histogram("b", "b", buckets=(0.1, 1, 10, 1000), registry=registry)
    for value in values:
        one_by_one.observe(value)
    observe_many(batched, values)

    def samples(name: str) -> list:
        return [
            (s.name[1:], tuple(sorted(s.labels.items())), round(s.value, 3))
            for metric in registry.collect()
            if metric.name == name
            for s in metric.samples
            if not s.name.endswith("_created")
        ]

    assert samples("a") == samples("b")
