"""A fast replay of anonymous visitors who log in: every touchpoint stays in its journey.

Each visitor browses anonymously, logs in at checkout, buys, is delivered and answers a
CSAT survey, one visitor a day over 30 days; `parcours replay` sends it all in seconds,
so each partition's watermark runs days ahead of the identity merges (a link, then the
anonymous key's hand-over, each a round trip through Kafka). Every second answer is a
detractor's score sent as a string ("1"): it must count like the number.
"""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest

from streams.core.ingest import kafka_partition
from streams.dev.local_stack import LocalBroker
from tests.support.clickhouse import clickhouse
from tests.support.scripted import touch

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
VISITORS = 30
PATH = ("ad_click", "product_view", "checkout_started", "purchase", "delivery", "survey_response")


def visitor(i: int, t0: int) -> list[dict]:
    c, a = f"buyer-{i:03d}", f"visitor-{i:03d}"
    t = [t0 + i * DAY_MS + k * 600_000 for k in range(6)]
    events = [
        touch(0, "ad_click", t[0], anonymous_id=a),
        touch(1, "product_view", t[1], anonymous_id=a),
        touch(2, "checkout_started", t[2], customer_id=c, anonymous_id=a),  # the login
        touch(3, "purchase", t[3], customer_id=c),
        touch(4, "delivery", t[4], customer_id=c),
        touch(5, "survey_response", t[5], customer_id=c),
    ]
    events[0]["event_id"], events[1]["event_id"] = f"{a}-0", f"{a}-1"
    events[5]["properties"] = {"metric": "CSAT", "score": "1" if i % 2 == 0 else 5}
    return events


def test_a_fast_replay_of_logins_keeps_every_touchpoint_and_reads_string_scores(tmp_path):
    t0 = int(time.time() * 1000) - 40 * DAY_MS
    events = [e for i in range(VISITORS) for e in visitor(i, t0)]
    # A day after the last visitor, a signal on every partition: every leak is decided.
    clocks = {kafka_partition(f"clock-{n}", 4): f"clock-{n}" for n in range(50)}
    end = t0 + (VISITORS + 1) * DAY_MS
    events += [touch(0, "login", end, customer_id=key) for key in clocks.values()]
    source = tmp_path / "visitors.jsonl"
    source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))

    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path, PARCOURS_MAX_AGE_SECONDS="0") as worker,
    ):
        done = subprocess.run(
            [sys.executable, "-m", "streams", "replay", str(source), "--broker", broker.bootstrap],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        worker.wait_for_rows({"touchpoints": len(events)}, timeout=120)
        worker.wait_until_quiet("journeys")
        worker.wait_until_quiet("leaks")

    with clickhouse(tmp_path / "clickhouse") as client:
        journeys = client.query(
            "SELECT customer_key, status, path FROM journeys FINAL "
            "WHERE journey = 'purchase' AND status != 'superseded'"
        ).result_rows
        leaks = client.query(
            "SELECT customer_key, anchor_event_id FROM leaks FINAL "
            "WHERE rule = 'detractor_feedback'"
        ).result_rows
        scores = client.query(
            "SELECT customer_key, score FROM survey_responses ORDER BY customer_key"
        ).result_rows
        outside = client.query("SELECT count() FROM outside_journeys").result_rows[0][0]
        dead = client.query("SELECT count() FROM dead_letters").result_rows[0][0]

    buyers = [f"buyer-{i:03d}" for i in range(VISITORS)]
    # Completed, or closed once the expiry after the goal passed: the goal was reached.
    assert sorted((c, path) for c, _, path in journeys) == [(c, list(PATH)) for c in buyers]
    assert {status for _, status, _ in journeys} <= {"completed", "closed"}
    assert sorted(leaks) == [(c, f"{c}-5") for c in buyers[::2]]  # the string "1" too
    assert scores == [(c, 1.0 if i % 2 == 0 else 5.0) for i, c in enumerate(buyers)]
    assert outside == 0
    assert dead == 0
