"""docker-compose.yml is for users; no Docker engine runs here, so check it by reading.

Every file it mounts or builds from exists, every env var it sets on a parcours
service is read by the code, every command it runs exists in the CLI, host ports do
not clash, Prometheus scrapes the ports the workers and collector serve, and Grafana
finds its datasource and dashboards where they are mounted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from streams.cli import main as cli
from streams.config.settings import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CODE = "\n".join(p.read_text() for p in (PROJECT_ROOT / "streams").rglob("*.py"))


PARCOURS_SERVICES = sorted(name for name, s in SERVICES.items() if "build" in s)


def test_the_stack_has_the_services_users_need():
    assert set(SERVICES) == {
        "kafka",
        "clickhouse",
        "worker",
        "collector",
        "simulator",
        "dispatcher",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert SERVICES["simulator"]["profiles"] == ["simulator"]  # only when asked for
    assert SERVICES["dispatcher"]["profiles"] == ["dispatcher"]  # needs a real webhook
    # The worker scales with --scale: nothing that would clash between replicas.
    assert "ports" not in SERVICES["worker"] and "container_name" not in SERVICES["worker"]


def test_long_running_services_have_health_checks_and_named_volumes():
    for name, service in SERVICES.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for volume in service.get("volumes", []):
            assert not volume.startswith("/"), f"{name} mounts a host path: {volume}"


# Where each stateful service keeps what a recreated container must find again.
DATA_PATHS = {
    "kafka": "/var/lib/kafka/data",  # topics, changelogs (state, dedupe), offsets
    "clickhouse": "/var/lib/clickhouse",
    "prometheus": "/prometheus",
    "alertmanager": "/alertmanager",  # silences, notification log
    "grafana": "/var/lib/grafana",
    "dispatcher": "/var/lib/parcours",  # the delivery ledger
}


@pytest.mark.parametrize("name", sorted(DATA_PATHS))
def test_every_stateful_service_keeps_its_data_in_a_named_volume(name):
    volumes = dict(v.split(":")[:2][::-1] for v in SERVICES[name]["volumes"])
    assert volumes.get(DATA_PATHS[name]) in COMPOSE["volumes"], f"{name}: no named volume"
    if name == "kafka":  # the broker writes where the volume is
        assert SERVICES[name]["environment"]["KAFKA_LOG_DIRS"] == DATA_PATHS[name]
        assert SERVICES[name]["environment"]["CLUSTER_ID"]  # the same after a recreate
    if name == "alertmanager":
        assert f"--storage.path={DATA_PATHS[name]}" in SERVICES[name]["command"]


def test_images_are_pinned_to_exact_versions_and_the_parcours_image_runs_as_a_user():
    exact = re.compile(r":v?\d+\.\d+\.\d+(\.\d+)?(-[a-z0-9-]+)?$")
    for name, service in SERVICES.items():
        if "build" not in service:
            assert exact.search(service["image"]), f"{name}: {service['image']} floats"
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    [base] = re.findall(r"^FROM (\S+)", dockerfile, flags=re.M)
    assert exact.search(base), base
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.M)
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    assert "PARCOURS_HEARTBEAT_FILE" in SERVICES["simulator"]["environment"]


def test_host_ports_do_not_clash():
    published = [int(port.split(":")[-2]) for s in SERVICES.values() for port in s.get("ports", [])]
    assert len(published) == len(set(published)), published


def mounted(service: str, target: str) -> Path:
    """The project file or folder `service` mounts at `target`."""
    for volume in SERVICES[service]["volumes"]:
        source, inside = volume.split(":")[:2]
        if inside == target:
            return PROJECT_ROOT / source
    raise AssertionError(f"{service} mounts nothing at {target}")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_and_built_files_exist(name):
    service = SERVICES[name]
    if "build" in service:
        context = PROJECT_ROOT / (
            service["build"]
            if isinstance(service["build"], str)
            else service["build"].get("context", ".")
        )
        assert (context / "Dockerfile").is_file()
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"
        else:
            assert source in COMPOSE.get("volumes", {}), f"{name} uses undeclared volume {source}"


@pytest.mark.parametrize("name", PARCOURS_SERVICES)
def test_every_parcours_env_var_is_read_by_the_code(name):
    for var in SERVICES[name]["environment"]:
        assert f'"{var}"' in CODE, f"{var} is set on {name} but never read"


@pytest.mark.parametrize("name", PARCOURS_SERVICES)
def test_parcours_commands_and_their_options_exist_in_the_cli(name):
    command, *args = SERVICES[name]["command"]
    assert command in cli.commands
    options = {o for p in cli.commands[command].params for o in getattr(p, "opts", [])}
    assert {a for a in args if a.startswith("--")} <= options


def test_dockerfile_copies_what_exists_and_sets_env_the_code_reads():
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for path in source.split():
            assert (PROJECT_ROOT / path).exists(), f"Dockerfile copies missing {path}"
    for var in re.findall(r"(PARCOURS_[A-Z_]+)=", dockerfile):
        assert f'"{var}"' in CODE


def test_urls_in_compose_point_at_compose_services():
    env = SERVICES["worker"]["environment"]
    assert env["KAFKA_BROKER"].split("//")[1].split(":")[0] in SERVICES
    assert env["CLICKHOUSE_URL"].split("@")[1].split(":")[0] in SERVICES


def test_prometheus_scrapes_the_workers_and_collector_and_loads_the_alerts():
    config = yaml.safe_load(mounted("prometheus", "/etc/prometheus/prometheus.yml").read_text())
    worker_port = int(SERVICES["worker"]["environment"]["PARCOURS_METRICS_PORT"])
    collector_port = int(SERVICES["collector"]["environment"]["PARCOURS_COLLECTOR_PORT"])
    targets = {
        (name, sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    dispatcher_port = int(SERVICES["dispatcher"]["environment"]["PARCOURS_METRICS_PORT"])
    assert targets == {
        ("worker", worker_port),
        ("collector", collector_port),
        ("dispatcher", dispatcher_port),
    }
    assert str(worker_port) in SERVICES["worker"]["expose"]
    assert f"{collector_port}:{collector_port}" in SERVICES["collector"]["ports"]
    for rule_file in config["rule_files"]:
        assert mounted("prometheus", rule_file).is_file()
    [alertmanagers] = config["alerting"]["alertmanagers"]
    [target] = alertmanagers["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in SERVICES and f"{port}:{port}" in SERVICES[host]["ports"]
    config_flag = next(a for a in SERVICES[host]["command"] if a.startswith("--config.file="))
    assert mounted(host, config_flag.split("=", 1)[1]).is_file()


def test_grafana_finds_its_datasources_plugin_and_dashboards():
    provisioning = mounted("grafana", "/etc/grafana/provisioning")
    sources = {
        source["type"]: source
        for path in sorted((provisioning / "datasources").glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
    }
    assert set(sources) == {"prometheus", "grafana-clickhouse-datasource"}
    host, port = sources["prometheus"]["url"].split("//")[1].split(":")
    assert host in SERVICES and f"{port}:{port}" in SERVICES[host]["ports"]
    clickhouse = sources["grafana-clickhouse-datasource"]
    worker_url = SERVICES["worker"]["environment"]["CLICKHOUSE_URL"]  # user:password@host:port/db
    assert worker_url.endswith(
        f"{clickhouse['jsonData']['username']}:{clickhouse['secureJsonData']['password']}"
        f"@{clickhouse['jsonData']['host']}:{clickhouse['jsonData']['port']}"
        f"/{clickhouse['jsonData']['defaultDatabase']}"
    )
    plugins = SERVICES["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    assert re.fullmatch(r"grafana-clickhouse-datasource \d+\.\d+\.\d+", plugins)  # pinned
    [provider] = yaml.safe_load((provisioning / "dashboards" / "parcours.yml").read_text())[
        "providers"
    ]
    dashboards = mounted("grafana", provider["options"]["path"])
    assert sorted(p.name for p in dashboards.glob("*.json")) == [
        "customer-journeys.json",
        "journey-map.json",
        "pipeline-health.json",
    ]
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).name).is_file()
    for path in dashboards.glob("*.json"):  # each picks a provisioned kind of datasource
        dashboard = json.loads(path.read_text())
        [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] in sources, path.name


def test_clickhouse_gets_the_ddl_the_workers_apply():
    ddl = mounted("clickhouse", "/parcours/ddl")
    assert ddl == PROJECT_ROOT / "schemas" / "clickhouse"
    init = mounted("clickhouse", "/docker-entrypoint-initdb.d/init-parcours.sh")
    assert init.stat().st_mode & 0o111, "the init script must be executable"
    assert "/parcours/ddl/*.sql" in init.read_text()


def test_kafka_partitions_match_the_workers():
    assert (
        SERVICES["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]
        == SERVICES["worker"]["environment"]["PARCOURS_PARTITIONS"]
    )
