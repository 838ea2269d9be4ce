"""`parcours demo`: the whole pipeline on the embedded stack, with a summary at the end.

Starts the local broker and a worker, sends synthetic touchpoints (half as
single-event messages, half in batch envelopes, plus some duplicates and
malformed messages so the dead-letter path shows), waits until every row has
landed in ClickHouse, stops everything and prints what ClickHouse holds.
"""

from __future__ import annotations

import random
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import orjson

from streams.clickhouse.client import connect
from streams.clickhouse.report import as_text
from streams.clickhouse.report_html import write_report
from streams.config.settings import TOUCHPOINTS
from streams.core.text import table
from streams.dev.local_stack import DispatcherProcess, LocalBroker
from streams.dev.synth import generate
from streams.dev.webhook_receiver import WebhookReceiver
from streams.edge.destinations import FOLLOW_UPS, INVITATIONS
from streams.edge.produce import as_messages, produce

MALFORMED = [
    b"{not json",
    b"",
    b"\xff\xfe\x00",
    b'["an", "array"]',
    b'{"events": "not a list"}',
]


def malformed_messages(events: list[dict], count: int, rng: random.Random) -> list[bytes]:
    """Bad input of every kind the ingest step names."""
    out = []
    for i in range(count):
        base = dict(rng.choice(events), event_id=f"bad-{i}")
        kind = i % 8
        if kind < len(MALFORMED):
            out.append(MALFORMED[kind])
        elif kind == 5:
            out.append(orjson.dumps(dict(base, type="teleport")))  # unknown type
        elif kind == 6:
            out.append(orjson.dumps({k: v for k, v in base.items() if k != "ts"}))  # schema
        else:
            out.append(orjson.dumps(dict(base, ts="2999-01-01T00:00:00Z")))  # future
    return out


def step(message: str) -> float:
    print(f"• {message}", flush=True)
    return time.perf_counter()


def run_demo(customers: int, seed: int, data_dir: Path, timeout: float) -> dict:
    rng = random.Random(seed)
    demo_dir = data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)  # each demo starts from empty state
    demo_dir.mkdir(parents=True)
    clickhouse_url = f"chdb://{demo_dir / 'clickhouse'}"

    events = generate(customers, seed=seed)
    half = len(events) // 2
    # A live stream, in time order: producers flush a customer's events every 30 s at most.
    messages = as_messages(events[:half]) + as_messages(
        events[half:], envelope_size=20, window_ms=30_000
    )
    duplicates = set(rng.sample(range(len(messages)), k=min(50, len(messages))))
    bad = malformed_messages(events, 40, rng)
    all_messages: list[tuple[bytes | None, bytes]] = []
    for index, message in enumerate(messages):
        all_messages.append(message)
        if index in duplicates:  # a producer's retry follows its original
            all_messages.append(message)
    for value in bad:
        all_messages.insert(rng.randrange(len(all_messages) + 1), (None, value))
    print(
        f"parcours demo: {len(events):,} touchpoints of {customers:,} customers in "
        f"{len(all_messages):,} messages ({len(duplicates)} re-sent, {len(bad)} malformed)"
    )

    t = step("starting the local broker (tansu, memory storage)")
    with LocalBroker(log_path=demo_dir / "broker.log") as broker:
        print(f"  ready on {broker.bootstrap} in {time.perf_counter() - t:.1f}s")
        t = step(f"starting the worker (ClickHouse {clickhouse_url})")
        with broker.worker(demo_dir) as worker:
            print(
                f"  metrics on http://127.0.0.1:{worker.metrics_port}/metrics "
                f"({time.perf_counter() - t:.1f}s)"
            )
            t = step(f"sending {len(all_messages):,} messages to '{TOUCHPOINTS}'")
            produce(broker.bootstrap, TOUCHPOINTS, all_messages)
            print(f"  acknowledged by the broker in {time.perf_counter() - t:.1f}s")
            t = step("waiting for every event to land")
            worker.wait_for_rows(
                {"touchpoints": len(events), "dead_letters": len(bad)}, timeout, progress=True
            )
            print(f"  done in {time.perf_counter() - t:.1f}s")
            t = step("waiting for journeys to settle (identity merges, watermarks)")
            journey_rows = worker.wait_until_quiet("journeys", timeout=timeout)
            for table in ("leaks", "survey_invitations", "survey_suppressions", "follow_ups"):
                worker.wait_until_quiet(table, timeout=timeout)
            print(f"  {journey_rows:,} journey updates written in {time.perf_counter() - t:.1f}s")
            expected = {
                INVITATIONS: worker.sink_rows("survey_invitations"),
                FOLLOW_UPS: worker.sink_rows("follow_ups"),  # opened, and closed
            }
            delivered = deliver(broker, demo_dir, expected, timeout)
            step("stopping the dispatcher, the worker and the broker")
    summary = summarize(clickhouse_url)
    summary["delivered"] = delivered[INVITATIONS]
    summary["follow_ups_delivered"] = delivered[FOLLOW_UPS]
    summary["bad_signatures"] = delivered["bad_signatures"]
    print(
        f"\nDelivered to the local webhook, each signed and once: "
        f"{delivered[INVITATIONS]:,} invitations (ClickHouse holds "
        f"{summary['invitation_count']:,}) and {delivered[FOLLOW_UPS]:,} follow-up tasks "
        "(opened or closed)"
    )
    show_journey_map(clickhouse_url, demo_dir / "report.html")
    return summary


# A fixed Standard Webhooks secret (whsec_ + base64 key): the demo's receiver is local.
DEMO_SECRET = "whsec_cGFyY291cnMtZGVtby1zaWduaW5nLWtleS0zMmJ5dGVz"
DESTINATIONS = """\
# Written by parcours demo: two webhooks on the local receiver it started.
destinations:
  local_survey_tool:
    url: {url}/invitations
    secret_env: PARCOURS_WEBHOOK_SECRET
    rate_limit: 200
    template:
      recipient: "{{customer_key}}"
      survey: "{{metric}}"
      channel: "{{channel}}"
      send_at_ms: "{{send_at_ms}}"
      reference: "{{invitation_id}}"
      context: {{rule: "{{rule}}", journey: "{{journey}}", touchpoint: "{{touchpoint}}"}}
  local_helpdesk:
    url: {url}/tasks
    deliver: [follow_ups]
    secret_env: PARCOURS_WEBHOOK_SECRET
    rate_limit: 200
    template:
      external_id: "{{task_id}}"
      status: "{{status}}"
      customer: "{{customer_key}}"
      subject: "{{reason}} ({{journey}}, {{stage}})"
      priority: "{{priority}}"
      due_ms: "{{due_ms}}"
      recent_touchpoints: "{{recent_touchpoints}}"
"""


def deliver(
    broker: LocalBroker, demo_dir: Path, expected: dict[str, int], timeout: float
) -> dict[str, int]:
    """Run `parcours dispatcher` against a local webhook receiver until every expected
    item of each kind arrived, or it is quiet; return the items received by kind."""
    t = step("delivering invitations and follow-up tasks to local webhooks (parcours dispatcher)")
    with WebhookReceiver(DEMO_SECRET) as receiver:
        destinations = demo_dir / "destinations.yaml"
        destinations.write_text(DESTINATIONS.format(url=receiver.url))
        with DispatcherProcess(
            broker.bootstrap,
            destinations,
            demo_dir / "dispatcher" / "ledger.db",
            demo_dir / "dispatcher.log",
            PARCOURS_WEBHOOK_SECRET=DEMO_SECRET,
        ):
            # Every row the worker wrote, or quiet for 3 s once deliveries began.
            deadline = time.monotonic() + timeout
            last, since = 0, time.monotonic()
            while (
                any(receiver.delivered(kind) < n for kind, n in expected.items())
                and time.monotonic() < deadline
            ):
                if receiver.delivered() != last:
                    last, since = receiver.delivered(), time.monotonic()
                elif last and time.monotonic() - since > 3.0:
                    break
                time.sleep(0.2)
        print(
            f"  {receiver.delivered():,} delivered in {time.perf_counter() - t:.1f}s "
            f"({receiver.requests:,} requests, {receiver.rejected} with a bad signature); "
            f"destinations file: {destinations}"
        )
        return {kind: receiver.delivered(kind) for kind in expected} | {
            "bad_signatures": receiver.rejected
        }


def show_journey_map(clickhouse_url: str, html_path: Path) -> None:
    """Print the purchase journey's map and write the HTML report (`parcours report`)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    found = write_report(
        clickhouse_url, "purchase", now - timedelta(days=30), now + timedelta(days=1), html_path
    )
    print("\n" + as_text(found))
    print(f"\nHTML report of the journey map: {html_path.resolve()}")
    print(
        "  (again, for any journey and time range: parcours report --clickhouse "
        f"{clickhouse_url} --journey support_resolution)"
    )


def summarize(clickhouse_url: str) -> dict:
    client = connect(clickhouse_url)
    try:

        def rows(sql: str) -> list[tuple]:
            return cast(list[tuple], client.query(sql).result_rows)  # a list of tuples

        summary = {
            "tables": dict(
                rows(
                    "SELECT table, sum(rows) FROM system.parts WHERE active AND database = "
                    "currentDatabase() AND table NOT LIKE '.%' GROUP BY table ORDER BY table"
                )
            ),
            "by_type": rows(
                "SELECT type, channel, count() FROM touchpoints FINAL "
                "GROUP BY type, channel ORDER BY count() DESC"
            ),
            "dead_letters": rows(
                "SELECT reason, count() FROM dead_letters FINAL "
                "GROUP BY reason ORDER BY count() DESC"
            ),
            "customers": rows("SELECT uniqExact(customer_key) FROM touchpoints")[0][0],
            "journeys": rows(
                "SELECT journey, stage, countIf(status = 'open'), "
                "countIf(status IN ('completed', 'closed')), countIf(status = 'expired') "
                "FROM journeys FINAL WHERE status != 'superseded' "
                "GROUP BY journey, stage_index, stage ORDER BY journey, stage_index"
            ),
            "leaks": rows(
                "SELECT rule, category, severity, count() FROM leaks FINAL "
                "GROUP BY rule, category, severity ORDER BY count() DESC"
            ),
            "scores": rows(
                "SELECT metric, value, responses, score, small_sample FROM scores "
                "WHERE cut = 'touchpoint' ORDER BY metric, value"
            ),
            "invitations": rows(
                "SELECT rule, metric, channel, count() FROM survey_invitations FINAL "
                "GROUP BY rule, metric, channel ORDER BY rule, channel"
            ),
            "suppressions": rows(
                "SELECT rule, reason, count() FROM survey_suppressions FINAL "
                "GROUP BY rule, reason ORDER BY rule, reason"
            ),
            "response_rates": rows(
                "SELECT rule, invitations, answered, response_rate FROM response_rate_by_rule "
                "ORDER BY rule"
            ),
            "health": rows(
                "SELECT segment, count(), round(avg(health), 1), countIf(health < 50) "
                "FROM customer_health_now GROUP BY segment ORDER BY segment"
            ),
            "follow_ups": rows(
                "SELECT rule, reason, priority, countIf(status = 'open'), "
                "countIf(status = 'closed') FROM follow_ups FINAL "
                "GROUP BY rule, reason, priority ORDER BY rule"
            ),
            "invitation_count": rows("SELECT count() FROM survey_invitations FINAL")[0][0],
            "journey_customers": rows(
                "SELECT uniqExact(customer_key) FROM journeys FINAL WHERE status != 'superseded'"
            )[0][0],
        }
    finally:
        client.close()
    print_summary(summary)
    return summary


def print_summary(summary: dict) -> None:
    def show(title: str, headers: list[str], rows: list[tuple]) -> None:
        print("\n" + table(title, headers, rows))

    show("Touchpoints by type and channel", ["channel", "touchpoints"], summary["by_type"])
    print(f"  distinct customer keys: {summary['customers']:,}")
    show(
        "Journeys by furthest stage reached",
        ["stage", "open", "completed", "expired"],
        summary["journeys"],
    )
    print(
        f"  customers with journeys: {summary['journey_customers']:,} "
        "(anonymous visitors merged into the customer they logged in as)"
    )
    show("Leaks by rule", ["category", "severity", "leaks"], summary["leaks"])
    show("Survey invitations sent", ["metric", "channel", "invitations"], summary["invitations"])
    show("Survey invitations suppressed", ["reason", "count"], summary["suppressions"])
    show(
        "Follow-up tasks for a person",
        ["leak", "priority", "open", "closed"],
        summary["follow_ups"],
    )
    rates = [
        (rule, sent, answered, f"{rate}%")
        for rule, sent, answered, rate in summary["response_rates"]
    ]
    show("Response rate by rule", ["sent", "answered", "rate"], rates)
    scores = [
        (metric.upper(), about or "-", responses, score, "(small sample)" if small else "")
        for metric, about, responses, score, small in summary["scores"]
    ]
    show("Scores by touchpoint", ["touchpoint", "responses", "score", ""], scores)
    show("Customer health by segment", ["customers", "mean", "below 50"], summary["health"])
    show("Dead letters by reason", ["letters"], summary["dead_letters"])
    show("Rows per ClickHouse table", ["rows"], list(summary["tables"].items()))
