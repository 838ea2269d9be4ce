"""Prometheus metrics of a parcours process. Labels are bounded sets: never a customer id.

Label values come from the configuration (touchpoint types, journeys, stages, rules), from
closed sets in the code (results, reasons, channels of the schema), or are capped
(`source`: the first MAX_SOURCES names seen, then "other").
"""

from __future__ import annotations

import bisect
import errno
import socket
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from streams.core.health import answer_class

MAX_SOURCES = 30
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

MESSAGES_CONSUMED = Counter(
    "parcours_messages_consumed_total", "Kafka messages consumed, by topic", ["topic"]
)
EVENTS = Counter(
    "parcours_events_ingested_total",
    "Touchpoint events seen by the ingest step, by type, channel, source and result "
    "(valid, duplicate, invalid with type unknown; late events count as valid here and "
    "again as late)",
    ["type", "channel", "source", "result"],
)
EVENT_LAG = Histogram(
    "parcours_event_lag_seconds",
    "Wall clock minus event time when ingest accepted an event: how far behind producers "
    "and the pipeline run",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400),
)
PROCESSING = Histogram(
    "parcours_processing_seconds",
    "Processing latency: from a touchpoint message's Kafka timestamp to the end of its "
    "ingest batch (step=ingest), from ingest to the journey step's outputs acknowledged "
    "(step=journeys)",
    ["step"],
    buckets=LATENCY_BUCKETS,
)
DEAD_LETTERS = Counter(
    "parcours_dead_letters_total", "Messages or events sent to the dead-letter topic", ["reason"]
)
LATE_EVENTS = Counter(
    "parcours_late_events_total", "Events behind their partition's watermark, kept out of journeys"
)
EPOCHS = Counter(
    "parcours_epochs_total",
    "Epochs made durable (one partition's batch of offsets; see streams.pipeline.epochs)",
)
CHANGELOG_REFUSED = Counter(
    "parcours_changelog_records_refused_total",
    "Table changelog records (customer states, epoch marks) the broker refused; the worker "
    "writes them again, and stops the batch after 5 tries (see streams.pipeline.durable)",
)
RECORDS_REFETCHED = Counter(
    "parcours_records_refetched_total",
    "Records the worker fetched from the broker itself: what a re-run epoch needs after a "
    "crash, and records its consumer skipped (see streams.pipeline.epochs)",
    ["topic"],
)
STATE_RECORDS = Counter(
    "parcours_state_records_total",
    "Records written to the state changelog: one per changed customer key per batch, "
    "plus each partition's intent and commit mark",
)
EVENTS_FORWARDED = Counter(
    "parcours_events_forwarded_total",
    "Events whose message was not keyed by their customer (customer_id, else anonymous_id): "
    "judged where they entered, then sent on to their customer's partition, a second hop "
    "(see ParcoursEventsNotKeyedByCustomer)",
    ["source"],
)
REPLAYED_EVENTS = Counter(
    "parcours_replayed_events_total",
    "Events behind the watermark that their customer's history already held (re-delivered "
    "after a crash): duplicates, not late",
)
IDENTITY_MERGES = Counter(
    "parcours_identity_merges_total", "Anonymous journey states merged into a customer's"
)
JOURNEY_UPDATES = Counter(
    "parcours_journey_updates_total",
    "Journey rows emitted, by journey and status",
    ["journey", "status"],
)
JOURNEYS = Counter(
    "parcours_journeys_total",
    "Journeys that opened, completed, expired or were re-opened, by journey; superseded "
    "counts provisional journeys replaced after a late event or an identity merge",
    ["journey", "outcome"],
)
OUTSIDE_JOURNEYS = Counter(
    "parcours_touchpoints_outside_journeys_total",
    "Touchpoints of a journey's types that joined no instance of it, by journey and reason "
    "(no_open_journey, reentry_not_allowed, entry_blocked, goal_not_reached); counted once "
    "the watermark has passed them; in_journey counts those an identity merge later put in "
    "an instance",
    ["journey", "reason"],
)
JOURNEYS_OPEN = Gauge(
    "parcours_journeys_open",
    "Open journeys on the partitions this process owns, by journey and furthest stage "
    "(counted at each state scan)",
    ["journey", "stage"],
)
STATE_KEYS = Gauge(
    "parcours_state_keys",
    "Keys held in each state table on the partitions this process owns",
    ["table"],
)
STATE_EVENTS = Gauge(
    "parcours_state_events",
    "Touchpoints retained in journey state on the partitions this process owns",
)
CONSUMER_LAG = Gauge(
    "parcours_consumer_lag_messages",
    "Messages between the last committed offset and the end of each topic partition this "
    "process consumes",
    ["topic", "partition"],
)
WATERMARK = Gauge(
    "parcours_watermark_seconds",
    "Event-time watermark of each partition of touchpoints-resolved this process owns "
    "(Unix time); one that stops moving means a stuck or idle partition",
    ["partition"],
)
JOURNEYS_WATERMARK = Gauge(
    "parcours_journey_watermark_seconds",
    "The watermark each partition's journeys move on (Unix time): the least of the entry "
    "watermarks of the partitions not idle; one far behind parcours_watermark_seconds "
    "waits for a partition that is behind or not heard from",
    ["partition"],
)
LEAKS = Counter(
    "parcours_leaks_total", "Leaks detected, by rule and pain-point category", ["rule", "category"]
)
SURVEY_INVITATIONS = Counter(
    "parcours_survey_invitations_total",
    "Survey invitations sent (published when due), by rule and channel",
    ["rule", "channel"],
)
SURVEY_SUPPRESSIONS = Counter(
    "parcours_survey_suppressions_total",
    "Survey invitations a guardrail stopped, by rule and reason",
    ["rule", "reason"],
)
SURVEY_RESPONSES = Counter(
    "parcours_survey_responses_total",
    "Survey answers, by metric, the touchpoint type they are about and answer class "
    "(positive: NPS promoter, CSAT 4-5, CES 1-2; negative: NPS 0-6, CSAT 1-2, CES 5-7)",
    ["metric", "touchpoint", "answer"],
)
SURVEY_SCORE_POINTS = Counter(
    "parcours_survey_score_points_total",
    "Sum of the scores of survey answers (divide by responses for a mean, e.g. CES)",
    ["metric", "touchpoint"],
)
SURVEY_SCORE = Gauge(
    "parcours_survey_score",
    "Running score of the answers this process has seen: NPS -100..100, CSAT % satisfied, "
    "CES mean (across workers, compute from parcours_survey_responses_total instead)",
    ["metric", "touchpoint"],
)
SINK_ROWS = Counter("parcours_sink_rows_total", "Rows accepted by ClickHouse", ["table"])
SINK_BATCHES = Counter("parcours_sink_batches_total", "Batches accepted by ClickHouse", ["table"])
SINK_FAILURES = Counter(
    "parcours_sink_failures_total",
    "Failed ClickHouse inserts (transient ones are retried, permanent ones split)",
    ["table"],
)
SINK_REJECTED = Counter(
    "parcours_sink_rejected_rows_total",
    "Rows ClickHouse refused for good (dead-lettered as sink_rejected)",
    ["table"],
)
SINK_LAST_WRITE = Gauge(
    "parcours_sink_last_write_timestamp_seconds",
    "Unix time ClickHouse last accepted a batch, by table (0: none yet)",
    ["table"],
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

COMPUTE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
COMPUTE_SECONDS = Histogram(
    "parcours_compute_seconds",
    "Time the worker computed one batch (at most PARCOURS_BATCH_MAX messages) before "
    "making it durable: its event loop waits meanwhile",
    buckets=COMPUTE_BUCKETS,
)


class SourceLabels:
    """Caps the `source` label: producers name sources freely, series must stay few."""

    def __init__(self, limit: int = MAX_SOURCES) -> None:
        self.limit, self.known = limit, set[str]()

    def __call__(self, source: str) -> str:
        if source in self.known:
            return source
        if len(self.known) < self.limit:
            self.known.add(source)
            return source
        return "other"


source_label = SourceLabels()


def observe_many(histogram: Histogram, values: Iterable[float]) -> None:
    """Observe a batch of values with one increment per bucket and one of the sum, not one
    lock round per value: what `Histogram.observe` does, batched (same buckets, same
    sum). Relies on prometheus-client's single-process layout (`_upper_bounds`,
    `_buckets`, `_sum`), as pinned in pyproject.toml; a test checks it against `observe`."""
    counts = [0] * len(histogram._upper_bounds)
    total = 0.0
    for value in values:
        total += value
        counts[bisect.bisect_left(histogram._upper_bounds, value)] += 1
    if not any(counts):
        return
    histogram._raise_if_not_observable()
    histogram._sum.inc(total)
    for bucket, n in zip(histogram._buckets, counts, strict=True):
        if n:
            bucket.inc(n)


def count_ingested(tally: dict[tuple[str, str, str, str], int], invalid: int) -> None:
    for (kind, channel, source, result), n in tally.items():
        EVENTS.labels(kind, channel, source_label(source), result).inc(n)
    if invalid:
        EVENTS.labels("unknown", "unknown", "unknown", "invalid").inc(invalid)


class AnswerScores:
    """Counts survey answers and keeps this process's running NPS / CSAT / CES.

    An answer is about its `about` property when that names a touchpoint type, else about
    what the one survey rule of its metric asks about (a touchpoint, a stage, a leak, or
    "relationship"), else "unknown".
    """

    def __init__(self, subjects: dict[str, str], touchpoint_types: Iterable[str]) -> None:
        self.subjects, self.types = subjects, frozenset(touchpoint_types)
        # The `metric` label's closed set: the standard ones and those survey rules name;
        # anything else a producer sends is "other" (3,000 made-up metrics, 1 series).
        self.metrics = frozenset({"nps", "csat", "ces", *subjects})
        self.tallies: dict[tuple[str, str], list[float]] = {}  # -> [n, positive, negative, sum]

    def count(self, events: Iterable[dict]) -> None:
        for event in events:
            props = event.get("properties") or {}
            metric, score = props.get("metric"), props.get("score")
            if event["type"] != "survey_response" or not isinstance(metric, str):
                continue
            if not isinstance(score, int | float) or isinstance(score, bool):
                continue
            metric = metric.lower() if metric.lower() in self.metrics else "other"
            about = props.get("about")
            subject = about if about in self.types else self.subjects.get(metric, "unknown")
            answer = {"promoter": "positive", "detractor": "negative"}.get(
                answer_class(metric, score) or "", "neutral"
            )
            SURVEY_RESPONSES.labels(metric, subject, answer).inc()
            SURVEY_SCORE_POINTS.labels(metric, subject).inc(score)
            tally = self.tallies.setdefault((metric, subject), [0, 0, 0, 0.0])
            tally[0] += 1
            tally[1] += answer == "positive"
            tally[2] += answer == "negative"
            tally[3] += score
            SURVEY_SCORE.labels(metric, subject).set(running_score(metric, *tally))


FOLLOW_UPS = Counter(
    "parcours_follow_ups_total",
    "Follow-up tasks for a person, by rule and status (open: created; closed)",
    ["rule", "status"],
)
INVITATIONS_HELD = Gauge(
    "parcours_survey_invitations_held",
    "Invitations waiting in the state for their send time, by rule and whether something "
    "holds them beyond it (waiting: delay or quiet hours; held: unless_open, "
    "unless_surveyed_within); the partitions this process owns (state scan)",
    ["rule", "why"],
)
FOLLOW_UPS_OPEN = Gauge(
    "parcours_follow_ups_open",
    "Open follow-up tasks on the partitions this process owns, by rule (state scan)",
    ["rule"],
)
FOLLOW_UPS_OVERDUE = Gauge(
    "parcours_follow_ups_overdue",
    "Open follow-up tasks past their due time, by rule (state scan)",
    ["rule"],
)
BROKER_RESETS = Counter(
    "parcours_broker_resets_total",
    "Partitions whose broker log started over under this worker (the broker lost its data)",
)

# parcours dispatcher (see streams.edge.dispatcher).
DISPATCHED = Counter(
    "parcours_dispatch_total",
    "Invitations handled by the dispatcher, by destination and result "
    "(delivered, already_delivered, dead_lettered)",
    ["destination", "result"],
)
DISPATCH_ATTEMPTS = Counter(
    "parcours_dispatch_attempts_total",
    "HTTP requests to destinations, by destination and outcome (ok, retry, refused)",
    ["destination", "outcome"],
)
DISPATCH_SECONDS = Histogram(
    "parcours_dispatch_seconds",
    "Seconds from taking an invitation to its delivery, retries included",
    ["destination"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def running_score(metric: str, n: float, positive: float, negative: float, total: float) -> float:
    if metric == "nps":
        return 100 * (positive - negative) / n
    if metric == "csat":
        return 100 * positive / n
    return total / n


def serve(port_spec: str | int) -> int:
    """Serve /metrics on the first free port of `port_spec` ("9108" or "9108-9117");
    return it (0 = no server). A range lets several workers share a host."""
    first, _, last = str(port_spec).partition("-")
    ports = range(int(first), int(last or first) + 1)
    if not ports or ports[0] == 0:
        return 0
    for port in ports:
        try:
            start_http_server(port)
            return port
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    raise OSError(
        errno.EADDRINUSE,
        f"metrics ports {port_spec} are all in use on {socket.gethostname()}; set "
        "PARCOURS_METRICS_PORT to a free port or a wider range like 9108-9117",
    )
