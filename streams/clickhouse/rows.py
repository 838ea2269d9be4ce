"""Kafka records to ClickHouse rows, one function per table. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.core.ingest import dead_letter_id

TOUCHPOINT_COLUMNS = [
    "event_id",
    "customer_key",
    "customer_id",
    "anonymous_id",
    "type",
    "phase",
    "ts",
    "channel",
    "source",
    "session_id",
    "segment",
    "properties",
    "src_partition",
    "src_offset",
    "ingested_at",
    "context",
    "schema_version",
    "extensions",
    "original_ts",
    "sent_at",
    "received_at",
]

DEAD_LETTER_COLUMNS = [
    "dead_letter_id",
    "reason",
    "detail",
    "path",
    "payload",
    "origin_topic",
    "origin_partition",
    "origin_offset",
    "origin_index",
    "source",
    "received_at",
]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _texts(values: dict | None) -> dict[str, str]:
    return {k: _text(v) for k, v in (values or {}).items()}


def flat_context(context: dict | None) -> dict[str, str]:
    """`context` as one flat map: a group's keys are prefixed with its name and a dot
    ({"campaign": {"source": "x"}} -> {"campaign.source": "x"})."""
    flat: dict[str, str] = {}
    for key, value in (context or {}).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": _text(v) for inner, v in value.items()})
        else:
            flat[key] = _text(value)
    return flat


def _stamp(text: str | None) -> datetime | None:
    """An RFC 3339 stamp the schema let through, as a UTC datetime (None when absent)."""
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


# The column each table is partitioned by month on (PARTITION BY toYYYYMM(column)):
# the sink inserts one month at a time. A test reads the migrations to keep it true.
PARTITIONED_BY = {
    "touchpoints": "ts",
    "dead_letters": "received_at",
    "leaks": "due_at",
    "survey_invitations": "trigger_at",
    "survey_suppressions": "trigger_at",
    "follow_ups": "created_at",
    "outside_journeys": "ts",
}


def touchpoint_row(event: dict) -> list:
    """A resolved event (see ingest.resolved_event) as a `touchpoints` row."""
    return [
        event["event_id"],
        event["customer_key"],
        event.get("customer_id", ""),
        event.get("anonymous_id", ""),
        event["type"],
        event.get("phase", ""),
        _utc(event["ts_ms"]),
        event["channel"],
        event["source"],
        event.get("session_id", ""),
        event.get("segment", ""),
        _texts(event.get("properties")),
        event["src_partition"],
        event["src_offset"],
        _utc(event["ingested_ms"]),
        flat_context(event.get("context")),
        event.get("schema_version", ""),
        _texts(event.get("extensions")),
        _stamp(event.get("original_ts")),
        _stamp(event.get("sent_at")),
        _stamp(event.get("received_at")),
    ]


JOURNEY_COLUMNS = [
    "journey_id",
    "journey",
    "customer_key",
    "status",
    "stage",
    "stage_index",
    "stages_reached",
    "stages_reached_at",
    "path",
    "path_event_ids",
    "path_stages",
    "path_truncated",
    "touchpoints",
    "entry_event_id",
    "opened_at",
    "last_event_at",
    "completed_at",
    "closed_at",
    "superseded_by",
    "version",
    "updated_at",
    "entry_channel",
    "segment",
    "entry_stage",
    "reopened",
    "closures",
]


def journey_ch_row(row: dict) -> list:
    """A journey row of `journey-updates` (see streams.core.journey_rows) as a `journeys` row."""

    def maybe(ms: int | None) -> datetime | None:
        return None if ms is None else _utc(ms)

    return [
        row["journey_id"],
        row["journey"],
        row["customer_key"],
        row["status"],
        row["stage"],
        row["stage_index"],
        row["stages_reached"],
        [_utc(ms) for ms in row["stages_reached_ms"]],
        row["path"],
        row["path_event_ids"],
        row["path_stages"],
        row["path_truncated"],
        row["touchpoints"],
        row["entry_event_id"],
        _utc(row["opened_ms"]),
        _utc(row["last_event_ms"]),
        maybe(row["completed_ms"]),
        maybe(row["closed_ms"]),
        row["superseded_by"],
        row["version"],
        _utc(row["updated_ms"]),
        row.get("entry_channel", ""),
        row.get("segment", ""),
        row.get("entry_stage", ""),
        row.get("reopened", 0),
        [_utc(ms) for ms in row.get("closures_ms", ())],
    ]


OUTSIDE_COLUMNS = ["event_id", "journey", "reason", "customer_key", "type", "ts", "detected_at"]


def outside_ch_row(row: dict) -> list:
    """A touchpoint outside a journey (customer.Outcome.outside) as a ClickHouse row."""
    return [
        row["event_id"],
        row["journey"],
        row["reason"],
        row["customer_key"],
        row["type"],
        _utc(row["ts_ms"]),
        _utc(row["detected_ms"]),
    ]


LEAK_COLUMNS = [
    "leak_id",
    "rule",
    "kind",
    "category",
    "severity",
    "customer_key",
    "journey_id",
    "journey",
    "stage",
    "anchor_event_id",
    "anchor_type",
    "anchor_at",
    "due_at",
    "detected_at",
]


def leak_ch_row(row: dict) -> list:
    """A leak row of the `leaks` topic (see leaks.leak_row) as a `leaks` row."""
    return [
        row["leak_id"],
        row["rule"],
        row["kind"],
        row["category"],
        row["severity"],
        row["customer_key"],
        row["journey_id"],
        row["journey"],
        row["stage"],
        row["anchor_event_id"],
        row["anchor_type"],
        _utc(row["anchor_ms"]),
        _utc(row["due_ms"]),
        _utc(row["detected_ms"]),
    ]


def dead_letter_row(payload: bytes, headers: dict[str, bytes]) -> list:
    """A `touchpoints-dlq` message (original bytes + parcours.* headers) as a row."""

    def h(name: str) -> str:
        return headers.get(f"parcours.{name}", b"").decode("utf-8", "replace")

    topic, partition, offset, index = (
        h("origin.topic"),
        int(h("origin.partition") or 0),
        int(h("origin.offset") or 0),
        int(h("index") or -1),
    )
    return [
        dead_letter_id(topic, partition, offset, index),
        h("reason"),
        h("detail"),
        h("path"),
        payload,
        topic,
        partition,
        offset,
        index,
        h("source"),
        _utc(int(h("received_ms") or 0)),
    ]


INVITATION_COLUMNS = [
    "invitation_id",
    "rule",
    "trigger",
    "metric",
    "customer_key",
    "journey_id",
    "journey",
    "stage",
    "touchpoint",
    "anchor_event_id",
    "channel",
    "segment",
    "priority",
    "trigger_at",
    "send_at",
    "decided_at",
    "held_for",
]
SUPPRESSION_COLUMNS = [*INVITATION_COLUMNS, "reason", "detail"]


def invitation_ch_row(row: dict) -> list:
    """An invitation (see surveys.invitation_row) as a `survey_invitations` row."""
    return [
        *(row[c] for c in INVITATION_COLUMNS[:13]),
        _utc(row["trigger_ms"]),
        _utc(row["send_at_ms"]),
        _utc(row["decided_ms"]),
        row.get("held_for", ""),
    ]


def suppression_ch_row(row: dict) -> list:
    return [*invitation_ch_row(row), row["reason"], row["detail"]]


HEALTH_COLUMNS = [
    "customer_key",
    "score",
    "segment",
    "leaks",
    "detractors",
    "promoters",
    "contacts",
    "last_touchpoint_at",
    "idle_day_weight",
    "window_days",
    "version",
    "updated_at",
]


def health_ch_row(row: dict) -> list:
    """A health row (see health.update_health) as a `customer_health` row."""
    return [
        *(row[c] for c in HEALTH_COLUMNS[:7]),
        _utc(row["last_touchpoint_ms"]),
        row["idle_day_weight"],
        row["window_days"],
        row["version"],
        _utc(row["updated_ms"]),
    ]


FOLLOW_UP_COLUMNS = [
    "task_id",
    "rule",
    "customer_key",
    "reason",
    "category",
    "severity",
    "journey_id",
    "journey",
    "stage",
    "anchor_event_id",
    "recent_touchpoints",
    "priority",
    "status",
    "created_at",
    "due_at",
    "closed_at",
    "closed_by",
    "version",
    "decided_at",
]


def follow_up_ch_row(row: dict) -> list:
    """A follow-up task row (see streams.core.follow_ups) as a `follow_ups` row."""
    return [
        *(row[c] for c in FOLLOW_UP_COLUMNS[:13]),
        _utc(row["created_ms"]),
        _utc(row["due_ms"]),
        _utc(row["closed_ms"]),
        row["closed_by"],
        row["version"],
        _utc(row["decided_ms"]),
    ]
