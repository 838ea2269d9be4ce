"""docker-compose.yml is for users; no Docker engine runs here, so check it by reading.

Every file it mounts or builds from exists, every parcours env var it sets is
read by the code, every command it runs exists in the CLI, and Prometheus
scrapes the port the workers serve /metrics on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from streams.cli import main as cli
from streams.settings import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CODE = "\n".join(p.read_text() for p in (PROJECT_ROOT / "streams").glob("*.py"))


def test_the_stack_has_the_services_users_need():
    assert {"kafka", "clickhouse", "worker", "prometheus"} <= set(SERVICES)
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


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


def test_every_worker_env_var_is_read_by_the_code():
    for var in SERVICES["worker"]["environment"]:
        assert f'"{var}"' in CODE, f"{var} is set in compose but never read"


def test_the_worker_command_exists_in_the_cli():
    command = SERVICES["worker"]["command"][0]
    assert command in cli.commands


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


def test_prometheus_scrapes_the_workers_metrics_port():
    mount = next(v for v in SERVICES["prometheus"]["volumes"] if "prometheus.yml" in v)
    config = yaml.safe_load((PROJECT_ROOT / Path(mount.split(":")[0])).read_text())
    worker_port = int(SERVICES["worker"]["environment"]["PARCOURS_METRICS_PORT"])
    targets = [
        (name, sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    ]
    assert ("worker", worker_port) in targets
    assert str(worker_port) in SERVICES["worker"]["expose"]


def test_kafka_partitions_match_the_workers():
    assert (
        SERVICES["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]
        == SERVICES["worker"]["environment"]["PARCOURS_PARTITIONS"]
    )
