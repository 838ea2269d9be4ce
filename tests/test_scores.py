"""Score views on the real embedded ClickHouse, against answers computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.clickhouse import migrate
from streams.rows import TOUCHPOINT_COLUMNS
from tests.conftest import clickhouse


def answer(n: int, metric: str, score: float, about: str) -> list:
    now = datetime.now(UTC)
    properties = {"metric": metric, "score": str(score), "about": about}
    return [
        f"s{n}",
        "c",
        "c",
        "",
        "survey_response",
        "after",
        now,
        "email",
        "survey",
        "",
        "gold",
        properties,
        0,
        n,
        now,
    ]


def test_nps_csat_and_ces_per_touchpoint_match_hand_computed_values(tmp_path):
    nps_delivery = [10, 9, 9, 8, 7, 6, 3, 0, 10, 10]  # 5 promoters, 3 detractors: NPS 20.0
    csat_call = [5, 4, 3, 2, 5]  # 3 of 5 satisfied: 60.0
    ces_call = [2, 3, 7]  # mean 4.0
    rows = [answer(i, "NPS", s, "delivery") for i, s in enumerate(nps_delivery)]
    rows += [answer(100 + i, "csat", s, "support_call") for i, s in enumerate(csat_call)]
    rows += [answer(200 + i, "ces", s, "support_call") for i, s in enumerate(ces_call)]
    unscored = answer(300, "nps", 0, "delivery")
    unscored[11] = {"metric": "nps"}  # a response without a score is not an answer
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
