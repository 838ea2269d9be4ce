"""The rows the step emits for journey instances (topic `journey-updates`, ClickHouse
`journeys`: streams.clickhouse.rows.journey_ch_row). Pure."""

from __future__ import annotations

from streams.core.journeys import MAX_PATH, Instance


def journey_row(
    instance: Instance, customer_key: str, version: int, now_ms: int, segment: str = ""
) -> dict:
    journey = instance.journey
    path = instance.events[:MAX_PATH]
    reached = sorted(instance.stage_reached)
    return {
        "journey_id": instance.id,
        "journey": journey.name,
        "customer_key": customer_key,
        "status": instance.status,
        "stage": journey.stages[instance.stage],
        "stage_index": instance.stage,
        "entry_stage": journey.stages[instance.entry_stage],
        "stages_reached": [journey.stages[i] for i in reached],
        "stages_reached_ms": [instance.stage_reached[i] for i in reached],
        "path": [e.type for e in path],
        "path_event_ids": [e.event_id for e in path],
        "path_stages": [journey.stages[journey.stage_of[e.type]] for e in path],
        "path_truncated": len(instance.events) > MAX_PATH,
        "touchpoints": len(instance.events),
        "reopened": instance.reopened,
        "entry_event_id": instance.entry.event_id,
        "opened_ms": instance.entry.ts_ms,
        "last_event_ms": instance.last_ms,
        "completed_ms": instance.completed_ms,
        "closed_ms": instance.closed_ms,
        "closures_ms": list(instance.closures_ms),
        "superseded_by": "",
        "version": version,
        "updated_ms": now_ms,
        "entry_channel": instance.entry.channel,
        "segment": segment,  # the customer's segment when the row was emitted
    }


def superseded_row(
    jid: str, journey: str, customer_key: str, version: int, successor: str, now_ms: int
) -> dict:
    return {
        "journey_id": jid,
        "journey": journey,
        "customer_key": customer_key,
        "status": "superseded",
        "stage": "",
        "stage_index": 0,
        "entry_stage": "",
        "stages_reached": [],
        "stages_reached_ms": [],
        "path": [],
        "path_event_ids": [],
        "path_stages": [],
        "path_truncated": False,
        "touchpoints": 0,
        "reopened": 0,
        "entry_event_id": "",
        "opened_ms": 0,
        "last_event_ms": 0,
        "completed_ms": None,
        "closed_ms": None,
        "closures_ms": [],
        "superseded_by": successor,
        "version": version,
        "updated_ms": now_ms,
    }
