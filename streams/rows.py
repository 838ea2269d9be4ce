"""Kafka records to ClickHouse rows, one function per table. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.ingest import dead_letter_id

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
        {k: _text(v) for k, v in (event.get("properties") or {}).items()},
        event["src_partition"],
        event["src_offset"],
        _utc(event["ingested_ms"]),
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
