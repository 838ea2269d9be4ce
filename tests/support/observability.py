"""Dashboards, alert rules and the Prometheus and collector processes of the observability tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import orjson
import yaml

from streams.config.settings import PROJECT_ROOT
from streams.dev.local_stack import LocalBroker, _wait_for_port, free_port
from streams.dev.simulate import Faults

NONE = Faults(duplicate_rate=0.0, out_of_order_rate=0.0)


PROMTOOL = shutil.which("promtool")


PROMETHEUS = shutil.which("prometheus")


NO_PROMETHEUS = "needs the Debian package prometheus (.ci/run installs it)"


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard: panel, expression) for every target of every panel."""
    return [
        (f"{path.stem}: {panel['title']}", target["expr"])
        for path in PROMETHEUS_DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


def alert_rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def filled(query: str, values: dict[str, str]) -> str:
    """`query` with Grafana's variables replaced by `values`, as Grafana sends it."""
    for variable, value in values.items():
        query = query.replace(variable, value)
    return query


def for_prometheus(expr: str) -> str:
    return filled(expr, GRAFANA_VARIABLES)


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
            # A key per source: a write key may send only its own source's events.
            "PARCOURS_WRITE_KEYS": f"site:{key},crm:{key}-crm",
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
        """POST each source's events with its key; the worst status."""
        by_source: dict[str, list[dict]] = {}
        for event in events:
            by_source.setdefault(event.get("source", "site"), []).append(event)
        statuses = []
        for source, group in by_source.items():
            key = self.key if source == "site" else f"{self.key}-{source}"
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/v1/events",
                data=orjson.dumps(group),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as answer:
                statuses.append(answer.status)
        return max(statuses)


DASHBOARDS = sorted((PROJECT_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
# The Journey map reads ClickHouse; the others Prometheus.
JOURNEY_MAP = PROJECT_ROOT / "deploy" / "grafana" / "dashboards" / "journey-map.json"
PROMETHEUS_DASHBOARDS = [p for p in DASHBOARDS if p != JOURNEY_MAP]


ALERTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml"


# Grafana's variables, as a query over a few minutes of data needs them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "$__interval": "15s",
    "$instance": ".*",  # the template variables' "All"
    "$journey": ".*",
}


def journey_map_queries(since: str, until: str, journey: str) -> list[tuple[str, str]]:
    """(panel, SQL) of the Journey map dashboard, with Grafana's variables filled in as
    Grafana does (times as 'YYYY-MM-DD HH:mm:ss' in UTC)."""
    values = {
        "${__from:date:YYYY-MM-DD HH:mm:ss}": since,
        "${__to:date:YYYY-MM-DD HH:mm:ss}": until,
        "${journey}": journey,
    }
    return [
        (panel["title"], filled(target["rawSql"], values))
        for panel in json.loads(JOURNEY_MAP.read_text())["panels"]
        for target in panel["targets"]
    ]
