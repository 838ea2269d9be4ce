"""A hand-made journey map written straight into ClickHouse tables for the view tests."""

from __future__ import annotations

import time

from streams.clickhouse.client import migrate, write_stage_order
from streams.clickhouse.rows import (
    HEALTH_COLUMNS,
    JOURNEY_COLUMNS,
    LEAK_COLUMNS,
    health_ch_row,
    journey_ch_row,
    leak_ch_row,
)

STAGES = ["visit", "cart", "pay", "deliver"]


START_MS = int(time.time() * 1000) - 3 * 86_400_000  # three days ago


EVER = {"since": "2000-01-01 00:00:00", "until": "2100-01-01 00:00:00"}


MINUTE = 60_000


def journey(jid, customer, segment, channel, reached, path, status, version=2, successor=""):
    stages = [stage for stage, _ in reached]
    completed = START_MS + reached[-1][1] * MINUTE if status == "completed" else None
    return journey_ch_row(
        {
            "journey_id": jid,
            "journey": "buy",
            "customer_key": customer,
            "status": status,
            "stage": stages[-1],
            "stage_index": STAGES.index(stages[-1]),
            "stages_reached": stages,
            "stages_reached_ms": [START_MS + minute * MINUTE for _, minute in reached],
            "path": path,
            "path_event_ids": [f"{jid}-{i}" for i in range(len(path))],
            "path_stages": [stages[0]] * len(path),
            "path_truncated": False,
            "touchpoints": len(path),
            "entry_event_id": f"{jid}-0",
            "opened_ms": START_MS,
            "last_event_ms": START_MS + reached[-1][1] * MINUTE,
            "completed_ms": completed,
            "closed_ms": None,
            "superseded_by": successor,
            "version": version,
            "updated_ms": START_MS,
            "entry_channel": channel,
            "segment": segment,
        }
    )


def leak(lid, rule, category, customer, jid, stage, anchor) -> list:
    return leak_ch_row(
        {
            "leak_id": lid,
            "rule": rule,
            "kind": "absence",
            "category": category,
            "severity": "high",
            "customer_key": customer,
            "journey_id": jid,
            "journey": "buy",
            "stage": stage,
            "anchor_event_id": anchor,
            "anchor_type": "add_to_cart",
            "anchor_ms": START_MS,
            "due_ms": int(time.time() * 1000) - 3_600_000,
            "detected_ms": int(time.time() * 1000),
        }
    )


def health(customer, score) -> list:
    now = int(time.time() * 1000)
    return health_ch_row(
        {
            "customer_key": customer,
            "score": score,
            "segment": "gold",
            "leaks": 0,
            "detractors": 0,
            "promoters": 0,
            "contacts": 0,
            "last_touchpoint_ms": now,
            "idle_day_weight": 0.0,
            "window_days": 90.0,
            "version": 1,
            "updated_ms": now,
        }
    )


def fill(ch) -> None:
    """Create the schema and write the journeys, leaks and health rows above."""
    journeys = [
        journey("j1", "c1", "gold", "web", [("visit", 0)], ["site_visit"], "open", version=1),
        journey(
            "j1",
            "c1",
            "gold",
            "web",
            [("visit", 0), ("cart", 10), ("pay", 30), ("deliver", 90)],
            ["site_visit", "site_visit", "add_to_cart", "purchase", "delivery"],
            "completed",
        ),
        journey(
            "j2",
            "c2",
            "gold",
            "ads",
            [("visit", 0), ("cart", 20)],
            ["ad_click", "add_to_cart"],
            "expired",
        ),
        journey(
            "j3",
            "c3",
            "silver",
            "web",
            [("visit", 0), ("cart", 5), ("pay", 35)],
            ["site_visit", "add_to_cart", "purchase"],
            "completed",
        ),
        journey("j4", "c4", "silver", "web", [("visit", 0)], ["site_visit"], "open"),
        journey(
            "j5",
            "c5",
            "silver",
            "web",
            [("visit", 0), ("pay", 40)],
            ["site_visit", "purchase"],
            "completed",
        ),
        journey("j6", "c6", "gold", "web", [("visit", 0)], ["site_visit"], "superseded"),
        # provisional journey of c3, replaced by j3 after an identity merge
        journey(
            "j7",
            "c3",
            "silver",
            "web",
            [("visit", 0)],
            ["site_visit"],
            "superseded",
            successor="j3",
        ),
    ]
    leaks = [
        leak("l1", "cart_abandoned", "conversion", "c2", "j2", "cart", "j2-1"),
        leak("l2", "bounce", "engagement", "c4", "j4", "visit", "j4-0"),
        # found on the provisional j7: counts for j3, its successor
        leak("l3", "slow_pay", "conversion", "c3", "j7", "pay", "j3-1"),
    ]
    migrate(ch)
    write_stage_order(ch, {"buy": STAGES})
    ch.insert("journeys", journeys, column_names=JOURNEY_COLUMNS)
    ch.insert("leaks", leaks, column_names=LEAK_COLUMNS)
    rows = [health("c1", 95.0), health("c2", 40.0), health("c4", 90.0)]
    ch.insert("customer_health", rows, column_names=HEALTH_COLUMNS)
