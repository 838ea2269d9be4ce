"""Shared test helpers."""

from __future__ import annotations

import itertools
import re
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.dev.local_stack import DispatcherProcess, LocalBroker, free_port
from streams.dev.simulate import Pace, deliveries
from streams.dev.synth import generate
from streams.dev.webhook_receiver import WebhookReceiver
from streams.edge.produce import as_messages, produce
from tests.support.dispatcher import SECRET
from tests.support.observability import (
    NO_PROMETHEUS,
    NONE,
    PROMETHEUS,
    PROMTOOL,
    Collector,
    Prometheus,
    alert_rules,
    dashboard_queries,
    for_prometheus,
)


def write_destinations(folder: Path, url: str) -> Path:
    path = folder / "destinations.yaml"
    path.write_text(f"destinations:\n  tool: {{url: '{url}'}}\n")
    return path


def scrape(port: int) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
        return page.read()


@pytest.mark.e2e
@pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason=NO_PROMETHEUS)
def test_a_real_prometheus_answers_every_dashboard_and_alert_query(tmp_path):
    # Yesterday's customers straight into Kafka (journeys, leaks, surveys to show), then
    # live visitors through the collector: a request's events are grouped per customer,
    # so each request spans seconds of event time, as a website's do.
    for_kafka = generate(200, seed=5)
    live = deliveries(5, datetime.now(UTC) - timedelta(seconds=10), Pace(100.0), faults=NONE)
    for_collector = [d.event for d in itertools.islice(live, 150)]
    events = for_kafka + for_collector
    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path, PARCOURS_STATE_SCAN_SECONDS="1") as worker,
        Collector(broker.bootstrap, tmp_path, key="k3y") as collector,
        WebhookReceiver(SECRET) as receiver,
        DispatcherProcess(
            broker.bootstrap,
            write_destinations(tmp_path, receiver.url),
            tmp_path / "ledger.db",
            tmp_path / "dispatcher.log",
            metrics_port=(dispatcher_port := free_port()),
            PARCOURS_WEBHOOK_SECRET=SECRET,
        ),
        Prometheus(
            tmp_path,
            {
                "worker": worker.metrics_port,
                "collector": collector.port,
                "dispatcher": dispatcher_port,
            },
        ) as prom,
    ):
        produce(broker.bootstrap, "touchpoints", as_messages(for_kafka, 20, window_ms=30_000))
        produce(broker.bootstrap, "touchpoints", [(b"k", b"{not json")])  # a dead letter
        worker.wait_for_rows({"touchpoints": len(for_kafka)}, timeout=120)
        statuses = {collector.post(for_collector[i : i + 50]) for i in range(0, 150, 50)}
        worker.wait_for_rows({"touchpoints": len(events)}, timeout=120)
        worker.wait_until_quiet("journeys", quiet_seconds=2)
        deadline = time.monotonic() + 60
        while not receiver.delivered() and time.monotonic() < deadline:
            time.sleep(0.2)  # the dispatcher joins its group, then delivers
        collector.post(for_collector[:5])  # duplicates; a fresh request for the latency panel
        time.sleep(4)  # a few more scrapes and a state scan

        lint = {
            name: subprocess.run(
                [PROMTOOL, "check", "metrics"], input=scrape(port), capture_output=True
            )
            for name, port in (
                ("worker", worker.metrics_port),
                ("collector", collector.port),
                ("dispatcher", dispatcher_port),
            )
        }
        empty, failed = [], []
        for where, expr in dashboard_queries():
            answer = prom.query(for_prometheus(expr))
            if answer["status"] != "success":
                failed.append((where, answer.get("error")))
            elif not answer["data"]["result"]:
                empty.append(where)
        for rule in alert_rules():
            answer = prom.query(rule["expr"])  # the whole rule, usually empty: nothing fires
            if answer["status"] != "success":
                failed.append((rule["alert"], answer.get("error")))
            # Each series it reads is scraped, with the labels it filters on (the values
            # it waits for, a dead letter or a late event, need not occur here).
            for name, filters in re.findall(r"\b(parcours_[a-z_]+)(?:\{([^}]*)\})?", rule["expr"]):
                series = prom.query(name)["data"]["result"]
                labels = set(re.findall(r"(\w+)\s*[!=]~?", filters))
                if not series or not labels <= set().union(*(r["metric"] for r in series)):
                    empty.append(f"{rule['alert']}: {name}{{{filters}}}")
        rules_loaded = prom.rules_loaded()
        ingested = prom.query("sum by (result) (parcours_events_ingested_total)")["data"]

    assert statuses == {202}
    for name, result in lint.items():
        assert result.returncode == 0 and not result.stdout.strip(), (name, result.stdout)
    assert failed == []
    assert empty == []
    assert rules_loaded == len(alert_rules())
    # Events from both doors (and the 5 re-sent ones, as duplicates) were counted.
    by_result = {r["metric"]["result"]: float(r["value"][1]) for r in ingested["result"]}
    assert by_result == {"valid": len(events), "duplicate": 5, "invalid": 1}
