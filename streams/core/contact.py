"""The customer step's contact part: what the touchpoints the watermark has passed do
to survey decisions (streams.core.surveys), follow-up tasks (streams.core.follow_ups) and
health (streams.core.health), in event time. Pure; called by streams.core.customer.
"""

from __future__ import annotations

from streams.config import Config
from streams.core import follow_ups
from streams.core.health import update_health
from streams.core.journeys import Instance
from streams.core.state import CustomerState, Span
from streams.core.surveys import decide, find_triggers, has_due, new_contact, segment_of, unseen


def contact_step(
    config: Config,
    state: CustomerState,
    customer_key: str,
    instances: list[Instance],
    leak_rows: list[dict],
    watermark_ms: int,
    now_ms: int,
) -> tuple[dict, dict]:
    """Survey decisions, follow-ups and health for the touchpoints the watermark has
    passed: the state's fields that change, and the outcome's rows (by name)."""
    contact = state.contact or new_contact()
    fresh = unseen(contact, state.events, watermark_ms)
    triggers = find_triggers(config.surveys, fresh, instances, leak_rows, contact, watermark_ms)
    if not fresh and not leak_rows and not triggers and not has_due(contact, watermark_ms):
        return {}, {}
    profile = state.profile
    tasks, follow_up_rows, task_spans = follow_ups.step(
        config.follow_ups,
        contact.get("tasks", {}),
        leak_rows,
        fresh,
        instances,
        customer_key,
        now_ms,
    )
    journey_spans: dict[str, list[Span]] = {}  # for `unless_open`: until it completes or closes
    if any(rule.unless_open for rule in config.surveys.rules.values()):
        for instance in instances:
            ended = instance.closed_ms if instance.completed_ms is None else instance.completed_ms
            journey_spans.setdefault(instance.journey.name, []).append(
                Span(instance.id, instance.entry.ts_ms, ended)
            )
    decisions = decide(
        config,
        contact,
        profile,
        customer_key,
        fresh,
        triggers,
        watermark_ms,
        now_ms,
        journey_spans=journey_spans,
        task_spans=task_spans,
    )
    segment = segment_of(config.segments, profile, decisions.contact["orders"])
    health, health_row = update_health(
        config.health,
        state.health,
        customer_key,
        fresh,
        leak_rows,
        segment,
        watermark_ms,
        now_ms,
    )
    contact_after = (
        {**decisions.contact, "tasks": tasks} if tasks or "tasks" in contact else decisions.contact
    )
    return {"contact": contact_after, "health": health}, {
        "invitations": decisions.invitations,
        "suppressions": decisions.suppressions,
        "health": [health_row] if health_row else [],
        "follow_ups": follow_up_rows,
    }
