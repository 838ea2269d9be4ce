"""Dashboards, alert rules and metrics, checked against the code and a real Prometheus.

The static tests parse the Grafana dashboards and check that every metric they or the
alert rules name is one the code defines; promtool lints and unit-tests the rules. The
end-to-end test starts Prometheus (the Debian package) scraping a worker and a collector
on the local stack, pushes events, and runs every dashboard and alert expression.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client import REGISTRY

from streams.config.settings import PROJECT_ROOT
from streams.dev.local_stack import DispatcherProcess, LocalBroker, _wait_for_port, free_port
from streams.dev.simulate import Faults, Pace, deliveries
from streams.dev.synth import generate
from streams.dev.webhook_receiver import WebhookReceiver
from streams.edge.produce import as_messages, produce

NONE = Faults(duplicate_rate=0.0, out_of_order_rate=0.0)

DASHBOARDS = sorted((PROJECT_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.test.yml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = "needs the Debian package prometheus (.ci/run installs it)"
# Grafana's variables, as a query over a few minutes of data needs them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard: panel, expression) for every target of every panel."""
    return [
        (f"{path.stem}: {panel['title']}", target["expr"])
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def for_prometheus(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def defined_series() -> set[str]:
    for module in ("streams.metrics", "streams.edge.collector"):  # they register their metrics
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("parcours_"):
            names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def test_dashboards_are_the_two_promised_and_well_formed():
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {"parcours · Pipeline health", "parcours · Customer journeys"}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        assert dashboard["uid"] and all(panel["targets"] for panel in dashboard["panels"])


def test_every_metric_the_dashboards_and_alerts_name_is_defined_by_the_code():
    defined = defined_series()
    expressions = [e for _, e in dashboard_queries()] + [r["expr"] for r in alert_rules()]
    named = {n for e in expressions for n in re.findall(r"\bparcours_[a-z_]+", e)}
    assert named and named <= defined, sorted(named - defined)
    # The dashboards show every family of the worker and collector, but for
    # bookkeeping ones.
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in named}
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in defined}
    unshown = families - shown
    assert unshown <= {
        "parcours_messages_consumed",
        "parcours_late_events",  # as result="late" of parcours_events_ingested_total
        "parcours_identity_merges",
        "parcours_journey_updates",
        "parcours_ingest_batch_seconds",
        "parcours_sink_batches",
        "parcours_survey_score",  # per process; the dashboards compute scores across workers
    }, sorted(unshown)


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMETHEUS)
def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", ALERT_TESTS.name], capture_output=True, cwd=ALERTS.parent
    )
    assert tested.returncode == 0, tested.stdout.decode() + tested.stderr.decode()
    alerts = {rule["alert"] for rule in alert_rules()}
    tested_alerts = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert (
        alerts
        == tested_alerts
        == {
            "ParcoursConsumerLagGrowing",
            "ParcoursDeadLetterRateHigh",
            "ParcoursSinkFailing",
            "ParcoursNoEvents",
            "ParcoursLeakRateSpike",
        }
    )


class Prometheus:
    """The real Prometheus server, scraping `targets` every second."""

    def __init__(self, folder: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.command = [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        self.log = folder / "prometheus.log"

    def __enter__(self) -> Prometheus:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, 30, self.process, "prometheus")
        return self

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)

    def query(self, expr: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:  # a bad expression: 400 with the reason
            return json.loads(error.read())

    def rules_loaded(self) -> int:
        url = f"http://127.0.0.1:{self.port}/api/v1/rules"
        with urllib.request.urlopen(url, timeout=10) as answer:
            groups = json.loads(answer.read())["data"]["groups"]
        return sum(len(g["rules"]) for g in groups)


class Collector:
    """`parcours collector` in a child process."""

    def __init__(self, broker: str, folder: Path, key: str) -> None:
        self.port, self.key, self.log = free_port(), key, folder / "collector.log"
        self.env = {
            **os.environ,
            "KAFKA_BROKER": broker,
            "PARCOURS_WRITE_KEYS": f"site:{key}",
            **LocalBroker.WORKER_ENV,
        }

    def __enter__(self) -> Collector:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams", "collector", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_port(self.port, 60, self.process, "parcours collector")
        return self

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)

    def post(self, events: list[dict]) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/events",
            data=orjson.dumps(events),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status


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
        WebhookReceiver(b"s3cret") as receiver,
        DispatcherProcess(
            broker.bootstrap,
            write_destinations(tmp_path, receiver.url),
            tmp_path / "ledger.db",
            tmp_path / "dispatcher.log",
            metrics_port=(dispatcher_port := free_port()),
            PARCOURS_WEBHOOK_SECRET="s3cret",
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
            for selector in re.findall(r"\bparcours_[a-z_]+(?:\{[^}]*\})?", rule["expr"]):
                if not prom.query(selector)["data"]["result"]:
                    empty.append(f"{rule['alert']}: {selector}")
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
