"""Follow-up tasks for a person: the closed loop after a leak. Pure.

A follow-up rule names the leaks (by rule or by severity) that need a person to act:
a detractor's answer, a third support call, a severe abandoned checkout. When such a
leak fires, the customer gets a task (id: rule and the leak's anchor touchpoint, so a
restart or a replay makes the same one) with the journey, its recent touchpoints, a
priority and a due time. A `close_on` touchpoint (e.g. `follow_up_closed` from the CRM)
closes the task its `properties.task_id` names, or, without one, every task of the
customer opened before it. A task open past its due time is overdue.

Rows: one when a task opens (status open, version 1), one when it closes (closed, 2).
"""

from __future__ import annotations

import hashlib

from streams.config.rules import FollowUpRule, FollowUps
from streams.core.state import Event, Span

MAX_OPEN_TASKS = 100  # per customer; beyond, the oldest are forgotten (still in ClickHouse)
RECENT_TOUCHPOINTS = 10


def task_id(rule: str, anchor_event_id: str) -> str:
    return hashlib.blake2b(
        f"follow-up/{rule}/{anchor_event_id}".encode(), digest_size=12
    ).hexdigest()


def step(
    config: FollowUps,
    open_tasks: dict[str, dict],
    leak_rows: list[dict],
    fresh: list[Event],
    instances: list,
    customer_key: str,
    now_ms: int,
) -> tuple[dict[str, dict], list[dict], list[Span]]:
    """Open tasks for new leaks, close them on closing touchpoints, in event-time order.

    `open_tasks`: task id -> its open row, the customer's open tasks. Returns the open
    tasks after, the rows to publish, and each known task's (id, created, closed or None)
    span, for the survey guardrail `unless_follow_up`.
    """
    timeline = [(leak["due_ms"], 0, n) for n, leak in enumerate(leak_rows)]
    timeline += [(e.ts_ms, 1, n) for n, e in enumerate(fresh) if e.type in config.close_on]
    if not timeline:  # the common case, on every step of every customer: nothing to do
        return open_tasks, [], [Span(t, row["created_ms"], None) for t, row in open_tasks.items()]
    tasks = dict(open_tasks)
    rows: list[dict] = []
    spans: list[Span] = []
    recent = {i.id: [e.type for e in i.events[-RECENT_TOUCHPOINTS:]] for i in instances}
    for at_ms, what, n in sorted(timeline):
        if what == 0:
            leak = leak_rows[n]
            for rule in config.rules.values():
                tid = task_id(rule.name, leak["anchor_event_id"])
                if rule.wants(leak) and tid not in tasks:
                    tasks[tid] = _row(tid, rule, leak, customer_key, at_ms, recent, now_ms)
                    rows.append(tasks[tid])
            continue
        event = fresh[n]
        named = (event.extras or {}).get("task_id")
        closing = [
            t for t, row in tasks.items() if named in (None, t) and row["created_ms"] <= at_ms
        ]
        for tid in closing:
            row = tasks.pop(tid)
            spans.append(Span(tid, row["created_ms"], at_ms))
            closed = {
                "status": "closed",
                "closed_ms": at_ms,
                "closed_by": event.event_id,
                "version": 2,
            }
            rows.append({**row, **closed, "decided_ms": now_ms})
    newest = sorted(tasks.items(), key=lambda id_and_task: id_and_task[1]["created_ms"])
    kept = dict(newest[-MAX_OPEN_TASKS:])
    spans += [Span(tid, row["created_ms"], None) for tid, row in kept.items()]
    return kept, rows, spans


def overdue(open_tasks: dict[str, dict], now_ms: int) -> list[dict]:
    """The open tasks past their due time."""
    return [row for row in open_tasks.values() if row["due_ms"] < now_ms]


def _row(
    tid: str,
    rule: FollowUpRule,
    leak: dict,
    customer_key: str,
    at_ms: int,
    recent: dict[str, list[str]],
    now_ms: int,
) -> dict:
    return {
        "task_id": tid,
        "rule": rule.name,
        "customer_key": customer_key,
        "reason": leak["rule"],
        "category": leak["category"],
        "severity": leak["severity"],
        "journey_id": leak["journey_id"],
        "journey": leak["journey"],
        "stage": leak["stage"],
        "anchor_event_id": leak["anchor_event_id"],
        "recent_touchpoints": recent.get(leak["journey_id"], []),
        "priority": rule.priority,
        "status": "open",
        "created_ms": at_ms,
        "due_ms": at_ms + rule.due_ms,
        "closed_ms": 0,
        "closed_by": "",
        "version": 1,
        "decided_ms": now_ms,
    }
