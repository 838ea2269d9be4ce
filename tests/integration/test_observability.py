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
import shutil
import subprocess

import pytest
from prometheus_client import REGISTRY

from streams.config.settings import PROJECT_ROOT
from tests.support.observability import (
    ALERTS,
    DASHBOARDS,
    NO_PROMETHEUS,
    PROMETHEUS_DASHBOARDS,
    PROMTOOL,
    alert_rules,
    dashboard_queries,
    journey_map_queries,
)

AMTOOL = shutil.which("amtool")
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


def test_dashboards_are_the_three_promised_and_well_formed():
    titles = {json.loads(p.read_text())["title"] for p in DASHBOARDS}
    assert titles == {
        "parcours · Pipeline health",
        "parcours · Customer journeys",
        "parcours · Journey map",
    }
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        assert dashboard["uid"] and all(panel["targets"] for panel in dashboard["panels"])


def template_variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboards_import_into_any_grafana_through_their_variables(path):
    """No fixed datasource uid: a datasource variable, used by every panel and target;
    the Prometheus dashboards filter by instance (and journey), and every query uses them."""
    dashboard = json.loads(path.read_text())
    variables = template_variables(dashboard)
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        for target in [panel, *panel["targets"]]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    if path in PROMETHEUS_DASHBOARDS:
        assert variables["instance"]["allValue"] == ".*"
        for where, expr in dashboard_queries():
            if where.startswith(path.stem):
                for selector in re.findall(r"\bparcours_[a-z_]+(\{[^}]*\})?", expr):
                    assert 'instance=~"$instance"' in selector, where
        if "journey" in variables:
            journey_exprs = [e for w, e in dashboard_queries() if "parcours_journeys_" in e]
            assert journey_exprs and all('journey=~"$journey"' in e for e in journey_exprs)
    else:  # every journey filter is the variable, never a journey name written in
        queries = journey_map_queries("2000-01-01 00:00:00", "2100-01-01 00:00:00", "${journey}")
        filters = re.findall(r"journey = (\S+)", "\n".join(sql for _, sql in queries))
        assert filters and set(filters) == {"'${journey}'"}


def kind_of(expr: str) -> str:
    """What a query measures, for the axis it needs: quantile seconds, an age, a rate, an
    increase over a window, or a level."""
    for marker, kind in (
        ("histogram_quantile", "quantile"),
        ("time() -", "age"),
        ("rate(", "rate"),
        ("increase(", "increase"),
    ):
        if marker in expr:
            return kind
    return "level"


def test_no_panel_puts_two_kinds_of_quantity_on_one_axis():
    panels: dict[str, set[str]] = {}
    for where, expr in dashboard_queries():
        panels.setdefault(where, set()).add(kind_of(expr))
    mixed = {where: kinds for where, kinds in panels.items() if len(kinds) > 1}
    assert mixed == {}


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
            "ParcoursTargetDown",
            "ParcoursClickHouseWritesStale",
            "ParcoursDispatchDeadLetters",
            "ParcoursDeliveriesFailing",
            "ParcoursFollowUpsOverdue",
            "ParcoursIdentityMergesSpike",
            "ParcoursLateEventsSpike",
            "ParcoursEventsNotKeyedByCustomer",
        }
    )


def test_every_alert_links_to_its_runbook_section():
    runbook = PROJECT_ROOT / "deploy" / "runbook.md"
    sections = re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", runbook.read_text(), re.M | re.S)
    anchors = {title.lower(): body for title, body in sections}
    for rule in alert_rules():
        page, anchor = rule["annotations"]["runbook_url"].split("#")
        assert (PROJECT_ROOT / page) == runbook
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]
        body = anchors[anchor]
        assert all(part in body for part in ("**Means**", "**Check", "**Do")), rule["alert"]
    assert set(anchors) == {rule["alert"].lower() for rule in alert_rules()}


@pytest.mark.skipif(AMTOOL is None, reason="needs the Debian package prometheus-alertmanager")
def test_alertmanager_config_passes_amtool():
    config = PROJECT_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    checked = subprocess.run([AMTOOL, "check-config", str(config)], capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    # Every alert routes to a receiver: the critical ones with their own timing.
    routed = subprocess.run(
        [AMTOOL, "config", "routes", "test", f"--config.file={config}", "severity=critical"],
        capture_output=True,
        text=True,
    )
    assert routed.returncode == 0 and routed.stdout.strip() == "on-call", routed.stdout
