"""Customer health: answer classes, weights, the window, and when a row is emitted."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config.rules import Health
from streams.core.health import KINDS, answer_class, update_health
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


# A step: (hours since the last step, touchpoints (type, score or None), leak severities,
# segment). Its watermark is its last touchpoint, or the previous watermark plus the hours.
steps = st.lists(
    st.tuples(
        st.integers(0, 24 * 20),
        st.lists(
            st.tuples(
                st.sampled_from(["site_visit", "support_call", "survey_response"]),
                st.sampled_from([None, 0, 5, 9, 10]),
            ),
            max_size=3,
        ),
        st.lists(st.sampled_from(["high", "medium", "low"]), max_size=2),
        st.sampled_from(["gold", "silver"]),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_row_comes_exactly_when_the_counts_the_segment_or_the_day_change(history):
    """Step by step, against counts recomputed from everything seen within the window: a
    row comes when they (by kind: leak severities apart), the segment or the day of the
    last touchpoint differ from the last row's, and says them. States go through JSON,
    as in the changelog."""
    state, last_row, seen, watermark, last_ms, n = None, None, [], 0, None, 0
    for hours, touchpoints, severities, segment in history:
        watermark += hours * 3_600_000
        fresh = []
        for kind, score in touchpoints:
            n += 1
            answer = {"metric": "nps", "score": score} if score is not None else {}
            fresh.append(ev(watermark, f"e{n}", kind, **answer))
            if kind == "support_call":
                seen.append((watermark, "contact"))
            if score is not None and answer_class("nps", score) is not None:
                seen.append((watermark, answer_class("nps", score)))
        seen += [(watermark, f"leak_{s}") for s in severities]
        last_ms = watermark if fresh else last_ms
        leaks = [leak(watermark, s) for s in severities]
        state, row = update_health(HEALTH, state, "c", fresh, leaks, segment, watermark, 0)
        state = orjson.loads(orjson.dumps(state))

        within = [kind for ts, kind in seen if ts > watermark - HEALTH.window_ms]
        by_kind = tuple(within.count(kind) for kind in KINDS)
        day = None if last_ms is None else last_ms // DAY
        if last_ms is None or (by_kind, segment, day) == last_row:
            assert row is None
            continue
        assert row is not None
        penalty = sum(HEALTH.weights[kind] for kind in within)
        assert row["score"] == round(min(100.0, max(0.0, 100.0 - penalty)), 1)
        assert (row["leaks"], row["detractors"], row["promoters"], row["contacts"]) == (
            sum(by_kind[:3]),
            *by_kind[3:],
        )
        assert (row["segment"], row["last_touchpoint_ms"]) == (segment, last_ms)
        last_row = (by_kind, segment, day)
