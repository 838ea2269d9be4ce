"""Prometheus metrics of a parcours process. Labels are bounded sets: never a customer id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES_CONSUMED = Counter(
    "parcours_messages_consumed_total", "Kafka messages consumed, by topic", ["topic"]
)
EVENTS = Counter(
    "parcours_events_ingested_total",
    "Touchpoint events seen by the ingest step, by result (valid, invalid, duplicate)",
    ["result"],
)
DEAD_LETTERS = Counter(
    "parcours_dead_letters_total", "Messages or events sent to the dead-letter topic", ["reason"]
)
LATE_EVENTS = Counter(
    "parcours_late_events_total", "Events behind their partition's watermark, kept out of journeys"
)
IDENTITY_MERGES = Counter(
    "parcours_identity_merges_total", "Anonymous journey states merged into a customer's"
)
JOURNEY_UPDATES = Counter(
    "parcours_journey_updates_total",
    "Journey rows emitted, by journey and status",
    ["journey", "status"],
)
WATERMARK = Gauge(
    "parcours_watermark_seconds",
    "Event-time watermark of each partition of touchpoints-resolved this process owns "
    "(Unix time); one that stops moving means a stuck or idle partition",
    ["partition"],
)
LEAKS = Counter(
    "parcours_leaks_total", "Leaks detected, by rule and pain-point category", ["rule", "category"]
)
SURVEY_INVITATIONS = Counter(
    "parcours_survey_invitations_total", "Survey invitations decided, by rule", ["rule", "channel"]
)
SURVEY_SUPPRESSIONS = Counter(
    "parcours_survey_suppressions_total",
    "Survey invitations a guardrail stopped, by rule and reason",
    ["rule", "reason"],
)
SINK_ROWS = Counter("parcours_sink_rows_total", "Rows accepted by ClickHouse", ["table"])
SINK_BATCHES = Counter("parcours_sink_batches_total", "Batches accepted by ClickHouse", ["table"])
SINK_FAILURES = Counter(
    "parcours_sink_failures_total", "Failed ClickHouse inserts (each is retried)", ["table"]
)
SINK_BACKLOG = Gauge(
    "parcours_sink_backlog_rows", "Rows waiting for ClickHouse to accept them", ["table"]
)
SINK_INSERT_SECONDS = Histogram(
    "parcours_sink_insert_seconds",
    "Time of one successful ClickHouse insert",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INGEST_BATCH_SECONDS = Histogram(
    "parcours_ingest_batch_seconds",
    "Time to process one ingest batch, forwarding included",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


def count_outputs(rows: dict[str, dict[str, list[dict]]]) -> None:
    """Count what the journey step published (kind -> key -> rows)."""
    for row in _all(rows, "journeys"):
        JOURNEY_UPDATES.labels(row["journey"], row["status"]).inc()
    for row in _all(rows, "leaks"):
        LEAKS.labels(row["rule"], row["category"]).inc()
    for row in _all(rows, "invitations"):
        SURVEY_INVITATIONS.labels(row["rule"], row["channel"]).inc()
    for row in _all(rows, "suppressions"):
        SURVEY_SUPPRESSIONS.labels(row["rule"], row["reason"]).inc()


def _all(rows: dict[str, dict[str, list[dict]]], kind: str) -> list[dict]:
    return [row for by_key in rows.get(kind, {}).values() for row in by_key]


def serve(port: int) -> None:
    """Serve /metrics on `port` (0 = no server)."""
    if port:
        start_http_server(port)
