"""Follow-up tasks (the closed loop) and the journey-aware survey guardrails (no Kafka)."""

from __future__ import annotations

from dataclasses import replace

from streams import metrics
from streams.clickhouse.client import migrate
from streams.clickhouse.rows import FOLLOW_UP_COLUMNS, follow_up_ch_row
from streams.core import follow_ups
from streams.core.customer import add_events, advance, new_state
from streams.core.state import CustomerState
from streams.pipeline import worker_metrics
from tests.support.clickhouse import clickhouse
from tests.support.journeys import CONFIG, H, ev, through_json

BOUGHT = [ev(0, "a", "site_visit"), ev(H, "b", "purchase"), ev(2 * H, "c", "delivery")]


def detractor(ts, eid="s"):
    return ev(ts, eid, "survey_response", "email", metric="nps", score=2)


def run(batches, config=CONFIG, watermarks=None, restart=True):
    """Follow-up rows of each batch, through advance, the state through JSON each time."""
    state = replace(new_state(), identified=True)
    out_rows = []
    for n, batch in enumerate(batches):
        mark = watermarks[n] if watermarks else max(e.ts_ms for e in batch) + 1
        out = advance(config, add_events(state, batch), "c-1", mark, now_ms=7)
        state = through_json(out.state) if restart else out.state
        out_rows.append(out.follow_ups)
    return out_rows, state


def test_a_detractor_answer_opens_one_task_with_its_journey_and_due_time():
    [rows], state = run([[*BOUGHT, detractor(3 * H)]])
    [task] = rows
    assert task["task_id"] == follow_ups.task_id("call_back_detractor", "s")
    assert (task["rule"], task["reason"], task["priority"], task["status"]) == (
        "call_back_detractor",
        "detractor_feedback",
        "high",
        "open",
    )
    # It opens when the leak is decided: a score leak, just after the answer.
    assert (task["journey"], task["created_ms"], task["due_ms"]) == (
        "purchase",
        3 * H + 1,
        3 * H + 1 + 24 * H,
    )
    assert task["recent_touchpoints"] == ["site_visit", "purchase", "delivery", "survey_response"]
    assert list(state.contact["tasks"]) == [task["task_id"]]


def test_a_task_is_created_once_across_restarts_and_recomputes():
    rows, _ = run(
        [[*BOUGHT, detractor(3 * H)], [ev(4 * H, "x", "email_open")], []],
        watermarks=[3 * H + 1, 4 * H + 1, 5 * H],
    )
    assert [len(r) for r in rows] == [1, 0, 0]


def test_a_closing_touchpoint_closes_the_named_task_or_all_open_before_it():
    second = [ev(5 * H, "a2", "site_visit"), ev(6 * H, "b2", "purchase"), detractor(7 * H, "s2")]
    opened, state = run([[*BOUGHT, detractor(3 * H)], second])
    ids = [r["task_id"] for batch in opened for r in batch]
    assert len(ids) == 2
    named = ev(8 * H, "close-1", "follow_up_closed", "phone", task_id=ids[0])
    [rows], state = run_from(state, [named])
    assert [(r["task_id"], r["status"], r["closed_by"], r["version"]) for r in rows] == [
        (ids[0], "closed", "close-1", 2)
    ]
    assert rows[0]["reason"] == "detractor_feedback"  # the closed version keeps the task
    [rows], state = run_from(state, [ev(9 * H, "close-all", "follow_up_closed", "phone")])
    assert [(r["task_id"], r["status"]) for r in rows] == [(ids[1], "closed")]
    assert state.contact["tasks"] == {}


def run_from(state, batch):
    out = advance(CONFIG, add_events(state, batch), "c-1", batch[-1][0] + 1, now_ms=8)
    return [out.follow_ups], out.state


def test_a_close_before_the_task_opened_leaves_it_open():
    task = {"task_id": "t", "rule": "r", "created_ms": 10, "due_ms": 20}
    rules = CONFIG.follow_ups
    tasks, rows, spans = follow_ups.step(
        rules, {"t": task}, [], [ev(5, "early", "follow_up_closed")], [], "c", 0
    )
    assert (tasks, rows, spans) == ({"t": task}, [], [("t", 10, None)])


def test_open_and_overdue_tasks_are_counted_in_the_state_scan():
    def state(*dues):
        tasks = {f"t{n}": {"rule": "call_back_detractor", "due_ms": d} for n, d in enumerate(dues)}
        return CustomerState.from_json(
            {"partition": 0, "events": [], "emitted": {}, "contact": {"tasks": tasks}}
        )

    worker_metrics.scan_journey_state([state(100, 900), state(50), None], {0}, now_ms=500)
    open_ = metrics.FOLLOW_UPS_OPEN.labels("call_back_detractor")._value.get()
    late = metrics.FOLLOW_UPS_OVERDUE.labels("call_back_detractor")._value.get()
    assert (open_, late) == (3, 2)
    worker_metrics.scan_journey_state([], {0}, now_ms=500)
    assert metrics.FOLLOW_UPS_OVERDUE.labels("call_back_detractor")._value.get() == 0


def test_follow_up_views_count_open_closed_and_overdue(tmp_path):
    base = {
        "rule": "call_back_detractor",
        "customer_key": "c",
        "reason": "detractor_feedback",
        "category": "process",
        "severity": "high",
        "journey_id": "j",
        "journey": "purchase",
        "stage": "post_purchase",
        "anchor_event_id": "s",
        "recent_touchpoints": ["purchase"],
        "priority": "high",
        "closed_ms": 0,
        "closed_by": "",
        "decided_ms": 1,
    }
    day = 24 * H
    rows = [
        {
            **base,
            "task_id": "late",
            "status": "open",
            "created_ms": day,
            "due_ms": 2 * day,
            "version": 1,
        },
        {
            **base,
            "task_id": "done",
            "status": "open",
            "created_ms": day,
            "due_ms": 2 * day,
            "version": 1,
        },
        {
            **base,
            "task_id": "done",
            "status": "closed",
            "created_ms": day,
            "due_ms": 2 * day,
            "closed_ms": day + 3 * H,
            "closed_by": "x",
            "version": 2,
        },
        {
            **base,
            "task_id": "future",
            "status": "open",
            "created_ms": day,
            "due_ms": 10**13,
            "version": 1,
        },
    ]
    with clickhouse(tmp_path) as client:
        migrate(client)
        client.insert(
            "follow_ups", [follow_up_ch_row(r) for r in rows], column_names=FOLLOW_UP_COLUMNS
        )
        overdue = client.query("SELECT task_id FROM follow_ups_overdue").result_rows
        summary_row = client.query(
            "SELECT rule, tasks, closed, open, overdue, median_hours_to_close "
            "FROM follow_up_summary"
        ).result_rows
    assert overdue == [("late",)]
    assert summary_row == [("call_back_detractor", 3, 1, 2, 1, 3.0)]
