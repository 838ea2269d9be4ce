"""Score views on the real embedded ClickHouse, against answers computed by hand."""

from __future__ import annotations

import time

from streams.clickhouse.client import migrate
from streams.clickhouse.rows import (
    HEALTH_COLUMNS,
    INVITATION_COLUMNS,
    TOUCHPOINT_COLUMNS,
    health_ch_row,
    invitation_ch_row,
)
from tests.support.clickhouse import clickhouse, touchpoint_ch_row


def answer(n: int, metric: str, score: float, about: str) -> list:
    properties = {"metric": metric, "score": str(score), "about": about}
    return touchpoint_ch_row(
        f"s{n}",
        customer_key="c",
        customer_id="c",
        type="survey_response",
        phase="after",
        channel="email",
        source="survey",
        segment="gold",
        properties=properties,
        src_offset=n,
    )


def test_nps_csat_and_ces_per_touchpoint_match_hand_computed_values(tmp_path):
    nps_delivery = [10, 9, 9, 8, 7, 6, 3, 0, 10, 10]  # 5 promoters, 3 detractors: NPS 20.0
    csat_call = [5, 4, 3, 2, 5]  # 3 of 5 satisfied: 60.0
    ces_call = [2, 3, 7]  # mean 4.0
    rows = [answer(i, "NPS", s, "delivery") for i, s in enumerate(nps_delivery)]
    rows += [answer(100 + i, "csat", s, "support_call") for i, s in enumerate(csat_call)]
    rows += [answer(200 + i, "ces", s, "support_call") for i, s in enumerate(ces_call)]
    unscored = answer(300, "nps", 0, "delivery")
    # A response without a score is not an answer.
    unscored[TOUCHPOINT_COLUMNS.index("properties")] = {"metric": "nps"}
    with clickhouse(tmp_path / "ch") as client:
        migrate(client)
        client.insert("touchpoints", [*rows, unscored], column_names=TOUCHPOINT_COLUMNS)
        got = client.query(
            "SELECT metric, about_touchpoint, responses, score, small_sample "
            "FROM scores_by_touchpoint ORDER BY metric"
        ).result_rows
        answers = client.query("SELECT count() FROM survey_responses").result_rows[0][0]
    assert answers == 18
    assert got == [
        ("ces", "support_call", 3, 4.0, True),
        ("csat", "support_call", 5, 60.0, True),
        ("nps", "delivery", 10, 20.0, True),
    ]


def invitation(n: int, rule: str, metric: str, touchpoint: str, channel: str) -> list:
    row = {
        "invitation_id": f"i{n}",
        "rule": rule,
        "trigger": "completion",
        "metric": metric,
        "customer_key": f"c{n}",
        "journey_id": f"j{n}",
        "journey": "purchase",
        "stage": "delivery",
        "touchpoint": touchpoint,
        "anchor_event_id": f"d{n}",
        "channel": channel,
        "segment": "gold",
        "priority": 1,
        "trigger_ms": 0,
        "send_at_ms": 0,
        "decided_ms": 0,
    }
    return invitation_ch_row(row)


def test_scores_by_cut_and_response_rates_follow_the_invitations(tmp_path):
    # 4 CSAT invitations by sms; 3 answered (5, 4, 1), one twice; one answer names none.
    invitations = [
        invitation(i, "csat_after_delivery", "csat", "delivery", "sms") for i in range(4)
    ]
    answers = [
        answer(1, "csat", 5, ""),
        answer(2, "csat", 4, ""),
        answer(3, "csat", 1, ""),
        answer(4, "csat", 2, ""),  # a second answer to i2
        answer(5, "csat", 5, "delivery"),  # answers no invitation; channel email
    ]
    for row, invitation_id in zip(answers, ["i0", "i1", "i2", "i2", ""], strict=True):
        row[11] = {**row[11], "invitation_id": invitation_id}
        if invitation_id:
            del row[11]["about"]
    with clickhouse(tmp_path / "ch") as client:
        migrate(client)
        client.insert("survey_invitations", invitations, column_names=INVITATION_COLUMNS)
        client.insert("touchpoints", answers, column_names=TOUCHPOINT_COLUMNS)
        scores = client.query(
            "SELECT cut, value, responses, score FROM scores WHERE metric = 'csat' "
            "AND cut IN ('touchpoint', 'stage', 'channel') ORDER BY cut, value"
        ).result_rows
        rates = client.query("SELECT * FROM response_rate_by_rule").result_rows
    assert scores == [
        ("channel", "email", 1, 100.0),
        ("channel", "sms", 4, 50.0),  # 5, 4 satisfied; 1, 2 not
        ("stage", "purchase/delivery", 4, 50.0),
        ("touchpoint", "delivery", 5, 60.0),
    ]
    assert rates == [("csat_after_delivery", 4, 3, 75.0)]


def test_health_now_applies_recency_when_read(tmp_path):
    ten_days_ago = int(time.time() * 1000) - 10 * 86_400_000 - 60_000
    row = {
        "customer_key": "c1",
        "score": 80.0,
        "segment": "gold",
        "leaks": 1,
        "detractors": 0,
        "promoters": 0,
        "contacts": 1,
        "last_touchpoint_ms": ten_days_ago,
        "idle_day_weight": 0.5,
        "window_days": 90.0,
        "version": 1,
        "updated_ms": ten_days_ago,
    }
    older = {**row, "score": 99.0, "version": 0}
    with clickhouse(tmp_path / "ch") as client:
        migrate(client)
        client.insert(
            "customer_health",
            [health_ch_row(older), health_ch_row(row)],
            column_names=HEALTH_COLUMNS,
        )
        got = client.query("SELECT customer_key, health FROM customer_health_now").result_rows
    assert got == [("c1", 75.0)]  # 80 - 10 idle days x 0.5
