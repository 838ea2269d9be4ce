"""Dashboards, alert rules and metrics, checked against the code and a real Prometheus.

The static tests parse the Grafana dashboards and check that every metric they or the
alert rules name is one the code defines; promtool lints and unit-tests the rules. The
end-to-end test starts Prometheus (the Debian package) scraping a worker and a collector
on the local stack, pushes events, and runs every dashboard and alert expression.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess

import pytest
from prometheus_client import REGISTRY

from streams.config.settings import PROJECT_ROOT
from tests.support.observability import (
    ALERTS,
    DASHBOARDS,
    NO_PROMETHEUS,
    PROMTOOL,
    alert_rules,
    dashboard_queries,
)

ALERT_TESTS = PROJECT_ROOT / "deploy" / "prometheus" / "alerts.test.yml"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


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
        "parcours_replayed_events",  # duplicates after a crash: bookkeeping, not health
        "parcours_identity_merges",
        "parcours_journey_updates",
        "parcours_ingest_batch_seconds",
        "parcours_sink_batches",
        "parcours_survey_score",  # per process; the dashboards compute scores across workers
        "parcours_epochs",  # the shell's own bookkeeping, read by `parcours bench`
        "parcours_state_records",  # ditto: changelog records per event
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
