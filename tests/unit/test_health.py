"""Customer health: answer classes, weights, the window, and when a row is emitted."""

from __future__ import annotations

import pytest

from streams.config.rules import Health
from streams.core.health import answer_class, update_health
from tests.support.journeys import ev

DAY = 86_400_000
HEALTH = Health(window_ms=30 * DAY, contacts=frozenset({"support_call"}))


@pytest.mark.parametrize(
    ("metric", "score", "expected"),
    [
        ("nps", 6, "detractor"),
        ("nps", 7, None),
        ("nps", 9, "promoter"),
        ("csat", 2, "detractor"),
        ("csat", 4, "promoter"),
        ("ces", 5, "detractor"),
        ("ces", 2, "promoter"),
        ("ces", 3, None),
        ("why_not_buy", 1, None),
        ("nps", "ten", None),
    ],
)
def test_answers_are_classified_the_usual_way(metric, score, expected):
    assert answer_class(metric, score) == expected


def leak(due_ms, severity):
    return {"due_ms": due_ms, "severity": severity}


def test_the_score_weighs_leaks_answers_and_contacts_within_the_window():
    fresh = [
        ev(1 * DAY, "a", "support_call", "phone"),
        ev(2 * DAY, "b", "support_call", "phone"),
        ev(3 * DAY, "c", "survey_response", "email", metric="nps", score=3),
    ]
    state, row = update_health(
        HEALTH, None, "c1", fresh, [leak(2 * DAY, "high")], "gold", 3 * DAY, now_ms=7
    )
    # 100 - 2 contacts x 5 - 1 detractor x 20 - 1 high leak x 15
    assert (row["score"], row["contacts"], row["detractors"], row["leaks"]) == (55.0, 2, 1, 1)
    assert (row["segment"], row["last_touchpoint_ms"], row["version"]) == ("gold", 3 * DAY, 1)

    # Nothing new on the same day: no new row. A month later the window has let go.
    assert update_health(HEALTH, state, "c1", [], [], "gold", 3 * DAY, 8)[1] is None
    later = [ev(40 * DAY, "d", "site_visit", "web")]
    _, row = update_health(HEALTH, state, "c1", later, [], "gold", 40 * DAY, 9)
    assert (row["score"], row["contacts"], row["version"]) == (100.0, 0, 2)


def test_the_score_stays_between_0_and_100():
    answers = [
        ev(i, f"p{i}", "survey_response", "email", metric="nps", score=10) for i in range(20)
    ]
    assert update_health(HEALTH, None, "c", answers, [], "", 100, 0)[1]["score"] == 100.0
    leaks = [leak(i, "high") for i in range(20)]
    assert update_health(HEALTH, None, "c", answers[:1], leaks, "", 100, 0)[1]["score"] == 0.0
