"""Journeys end to end: scripted customers through the real broker, worker and ClickHouse.

Each archetype states the journey it must produce. Some customers start anonymous and
log in at checkout, some use two devices, some send their events out of order (within
the allowed lateness); the `journeys` table must hold exactly the scripted journeys.
"""

from __future__ import annotations

import time

import orjson
import pytest

from streams.core.guardrails import sampled_in
from streams.dev.local_stack import LocalBroker
from streams.edge.produce import produce
from tests.support.clickhouse import clickhouse
from tests.support.scripted import (
    JOURNEYS,
    ces_score,
    csat_id,
    csat_score,
    cust,
    decisions,
    nps_score,
    scripted_run,
    touch,
)

pytestmark = pytest.mark.e2e


def test_scripted_customers_produce_exactly_the_scripted_journeys(tmp_path):
    now_ms = int(time.time() * 1000)
    events, expected, expected_leaks, expected_surveys = scripted_run(now_ms)
    # Half an hour behind the watermark when it arrives last: late (lateness is 60 s).
    events.append(touch(0, "site_visit", now_ms - 30 * 60_000, customer_id="cust-late"))
    messages = [
        ((e.get("customer_id") or e["anonymous_id"]).encode(), orjson.dumps(e)) for e in events
    ]

    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path, PARCOURS_STATE_SCAN_SECONDS="1") as worker,
    ):
        produce(broker.bootstrap, "touchpoints", messages)
        worker.wait_for_rows({"touchpoints": len(events)}, timeout=120)
        worker.wait_until_quiet("journeys")
        worker.wait_until_quiet("leaks")
        worker.wait_until_quiet("survey_suppressions")
        watermarks = {
            dict(labels)["partition"]: value
            for (name, labels), value in worker.metrics().items()
            if name == "parcours_watermark_seconds"
        }
        time.sleep(2.5)  # a state scan after the last change
        counted = {
            (journey, outcome): worker.metric_sum(
                "parcours_journeys_total", journey=journey, outcome=outcome
            )
            for journey in JOURNEYS
            for outcome in ("opened", "completed", "expired", "superseded")
        }
        open_now = {j: worker.metric_sum("parcours_journeys_open", journey=j) for j in JOURNEYS}
        answers_counted = worker.metric_sum("parcours_survey_responses_total")
        leaks_counted = worker.metric_sum("parcours_leaks_total")

    with clickhouse(tmp_path / "clickhouse") as client:
        journeys, leaks, surveys = decisions(client)
        dangling = client.query(
            "SELECT count() FROM journeys FINAL WHERE status = 'superseded' AND superseded_by "
            "NOT IN (SELECT journey_id FROM journeys FINAL)"
        ).result_rows[0][0]
        late = client.query(
            "SELECT path, origin_topic, origin_partition, origin_offset FROM dead_letters "
            "WHERE reason = 'late'"
        ).result_rows
        late_record = client.query(
            "SELECT src_partition, src_offset FROM touchpoints WHERE customer_key = 'cust-late'"
        ).result_rows
        stored = client.query(
            "SELECT count() FROM touchpoints WHERE customer_key = 'cust-late'"
        ).result_rows[0][0]
        scores = client.query(
            "SELECT metric, value, responses, score FROM scores WHERE cut = 'touchpoint' "
            "ORDER BY metric"
        ).result_rows
        rates = client.query("SELECT rule, invitations, answered FROM response_rate_by_rule")
        health = client.query(
            "SELECT customer_key, score FROM customer_health FINAL WHERE customer_key IN "
            "('cust-0006', 'cust-0014', 'cust-0008')"
        ).result_rows
        by_journey = client.query(
            "SELECT journey, count(), countIf(status IN ('completed', 'closed')), "
            "countIf(status = 'expired'), countIf(status = 'open') FROM journeys FINAL "
            "WHERE status != 'superseded' GROUP BY journey"
        ).result_rows
        answers = client.query(
            "SELECT count() FROM touchpoints WHERE type = 'survey_response'"
        ).result_rows[0][0]
        linked = client.query(
            "SELECT count() FROM touchpoint_journeys WHERE event_id LIKE 'anon-%'"
        ).result_rows[0][0]
    assert journeys == expected
    assert len(expected) == 300
    assert dangling == 0
    # Only the deliberately late one, naming the record it came in.
    assert late == [("$.ts", "touchpoints", *late_record[0])]
    assert stored == 1  # kept as a touchpoint, out of journeys
    # Every partition's watermark reached the clock touchpoints (2 minutes ago, less the
    # 60 s lateness) and ticks carry idle partitions on with the wall clock.
    assert set(watermarks) == {"0", "1", "2", "3"}
    assert all(value >= (now_ms - 180_000) / 1000 for value in watermarks.values())
    assert leaks == expected_leaks
    # 38 abandoned checkouts, 37 repeat callers, 9 detractors: each once
    assert len(expected_leaks) == 84
    assert sorted(expected_surveys - surveys)[:10] == []
    assert sorted(surveys - expected_surveys)[:10] == []

    # Scores as the views compute them, against the scripted answers.
    csat = [csat_score(i) for i in range(300) if i % 16 == 9 and sampled_in(csat_id(cust(i)), 0.8)]
    ces = [ces_score(i) for i in range(300) if i % 8 == 4]
    nps = [nps_score(i) for i in range(300) if i % 8 == 7]
    nps_value = 100 * (sum(s >= 9 for s in nps) - sum(s <= 6 for s in nps)) / len(nps)
    assert scores == [
        ("ces", "support_call", len(ces), round(sum(ces) / len(ces), 2)),
        ("csat", "delivery", len(csat), round(100 * sum(s >= 4 for s in csat) / len(csat), 1)),
        ("nps", "first_use", len(nps), round(nps_value, 1)),
    ]
    sent_csat = sum(1 for s in expected_surveys if s[0] == "csat_after_delivery" and s[3] == "sent")
    assert ("csat_after_delivery", sent_csat, len(csat)) in rates.result_rows
    # Health: 3 contacts (5 each) and a high leak (15): 70; opted out changes nothing;
    # one contact, resolved, and a CES of 2 (a promoter, -10): 100 - 5 + 10, capped at 100.
    assert sorted(health) == [("cust-0006", 70.0), ("cust-0008", 100.0), ("cust-0014", 70.0)]
    # every anonymous touchpoint of the customers who log in at checkout is placed
    assert linked == 2 * sum(1 for i in range(300) if i % 8 == 1)
    # The worker's metrics tell the same story as ClickHouse.
    for journey, total, completed, expired, still_open in by_journey:
        got = {o: counted[journey, o] for o in ("opened", "completed", "expired", "superseded")}
        assert got["opened"] - got["superseded"] == total, (journey, got)
        assert (got["completed"], got["expired"]) == (completed, expired), (journey, got)
        assert open_now[journey] == still_open, journey
    assert answers_counted == answers > 0
    assert leaks_counted == len(expected_leaks)
