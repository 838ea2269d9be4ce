"""What the journey step emits, declared once: each output kind with its topic, its
ClickHouse table and columns, its row function and the counter it moves.

The worker writes each output's rows to its ClickHouse table, and publishes to a topic
only the kinds a consumer outside the worker takes (the dispatcher); the bench, the
metrics and the docs read the same list. A new kind of output is one line here (and its
rows in `streams.core`, its table in a migration).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter as PromCounter

from streams import metrics
from streams.clickhouse import rows
from streams.config.settings import (
    FOLLOW_UPS,
    SURVEY_INVITATIONS,
    TOUCHPOINTS,
    TOUCHPOINTS_DLQ,
    TOUCHPOINTS_RESOLVED,
)


@dataclass(frozen=True)
class Output:
    kind: str  # its name in the journey step's results (streams.core.customer.Outcome)
    topic: str | None  # each message is {kind: [rows]}; None: ClickHouse only
    table: str
    columns: list[str]
    to_row: Callable[[dict], list]  # a published row as a ClickHouse row
    counter: PromCounter | None = None  # counted once per row, labelled by...
    labels: tuple[str, ...] = ()  # ... these fields of the row

    def count(self, published: list[dict]) -> None:
        """Count rows: one increment per label set, not per row."""
        if self.counter is not None:
            tally = Counter(tuple(row[name] for name in self.labels) for row in published)
            for labels, n in tally.items():
                self.counter.labels(*labels).inc(n)


OUTPUTS = (
    Output(
        "journeys",
        None,
        "journeys",
        rows.JOURNEY_COLUMNS,
        rows.journey_ch_row,
        metrics.JOURNEY_UPDATES,
        ("journey", "status"),
    ),
    Output(
        "leaks",
        None,
        "leaks",
        rows.LEAK_COLUMNS,
        rows.leak_ch_row,
        metrics.LEAKS,
        ("rule", "category"),
    ),
    Output(
        "invitations",
        SURVEY_INVITATIONS,
        "survey_invitations",
        rows.INVITATION_COLUMNS,
        rows.invitation_ch_row,
        metrics.SURVEY_INVITATIONS,
        ("rule", "channel"),
    ),
    Output(
        "suppressions",
        None,
        "survey_suppressions",
        rows.SUPPRESSION_COLUMNS,
        rows.suppression_ch_row,
        metrics.SURVEY_SUPPRESSIONS,
        ("rule", "reason"),
    ),
    Output("health", None, "customer_health", rows.HEALTH_COLUMNS, rows.health_ch_row),
    Output(
        "follow_ups",
        FOLLOW_UPS,
        "follow_ups",
        rows.FOLLOW_UP_COLUMNS,
        rows.follow_up_ch_row,
        metrics.FOLLOW_UPS,
        ("rule", "status"),
    ),
    Output(
        "outside",
        None,
        "outside_journeys",
        rows.OUTSIDE_COLUMNS,
        rows.outside_ch_row,
        metrics.OUTSIDE_JOURNEYS,
        ("journey", "reason"),
    ),
)
OUTPUT_OF = {output.kind: output for output in OUTPUTS}

# Every table the worker writes, and every topic it reads or writes but the tables'
# changelogs (Faust makes those).
TABLES = ("touchpoints", "dead_letters", *(o.table for o in OUTPUTS))
WORKER_TOPICS = (
    TOUCHPOINTS,
    TOUCHPOINTS_RESOLVED,
    TOUCHPOINTS_DLQ,
    *(o.topic for o in OUTPUTS if o.topic),
)


def count_outputs(published: dict[str, dict[str, list[dict]]]) -> None:
    """Count what the journey step published (kind -> customer key -> rows)."""
    for kind, by_key in published.items():
        OUTPUT_OF[kind].count([row for rows in by_key.values() for row in rows])
