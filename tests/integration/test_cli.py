"""The command line: helpful errors before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.config.settings import PROJECT_ROOT
from streams.dev.local_stack import free_port
from tests.support.helpdesk import HELPDESK_CONFIG


def run(*args, env=None):
    return CliRunner().invoke(
        main, list(args), env={"KAFKA_BROKER": "", "CLICKHOUSE_URL": "", **(env or {})}
    )


def test_worker_without_a_broker_says_how_to_start_the_local_stack():
    result = run("worker")
    assert result.exit_code == 2
    assert "No broker given" in result.output
    assert "parcours demo" in result.output


def test_worker_without_clickhouse_names_what_is_missing():
    result = run("worker", "--broker", "kafka://localhost:9092")
    assert result.exit_code == 2
    assert "No ClickHouse URL given" in result.output


def test_worker_rejects_an_unknown_clickhouse_url_before_starting():
    result = run("worker", "--broker", "localhost:9092", "--clickhouse", "mysql://x")
    assert result.exit_code == 1
    assert "chdb://path/to/dir" in result.output


def test_worker_reports_a_broken_config_with_its_line(tmp_path):
    bad = tmp_path / "journeys.yaml"
    bad.write_text("touchpoint_types:\n  a: {phase: sometime}\n")
    result = run(
        "worker", "--broker", "localhost:9092", "--clickhouse", "chdb://x", "--config", str(bad)
    )
    assert result.exit_code == 1
    assert f"{bad}:1:" in result.output
    assert "'journeys' is a required property" in result.output


def test_check_config_accepts_the_default():
    result = run("check-config")
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_check_config_says_what_a_journey_does_after_its_close(tmp_path):
    result = run("check-config", str(HELPDESK_CONFIG))
    assert result.exit_code == 0, result.output
    assert "re-entry: never, after goal: attach, after close: reopen" in result.output
    bad = tmp_path / "helpdesk.yaml"
    text = HELPDESK_CONFIG.read_text()
    bad.write_text(text.replace("after_close: reopen", "after_close: resume"))
    result = run("check-config", str(bad))
    assert result.exit_code == 1 and "after_close" in result.output
    assert "'outside', 'reopen', 'new'" in result.output
    bad.write_text(text.replace("    close_on: [ticket_closed]\n", ""))
    result = run("check-config", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:" in result.output and "after_close: reopen needs close_on" in result.output


def test_help_lists_every_command():
    result = run("--help")
    for command in ("worker", "demo", "check-config", "local-broker", "simulate", "collector"):
        assert command in result.output


def test_simulate_checks_its_options_before_sending(tmp_path):
    assert "--fast needs --events" in run("simulate", "--fast", "--jsonl", "-").output
    assert "No broker given" in run("simulate", "--events", "5").output
    bad_rate = run("simulate", "--duplicate-rate", "1.5", "--jsonl", "-")
    assert bad_rate.exit_code == 2 and "--duplicate-rate" in bad_rate.output
    out = tmp_path / "sim.jsonl"
    result = run("simulate", "--events", "300", "--fast", "--jsonl", str(out), "--seed", "3")
    assert result.exit_code == 0 and "sent 300 events" in result.output
    assert len(out.read_bytes().splitlines()) == 300


def test_local_broker_stops_tansu_on_sigterm(tmp_path):
    import signal
    import socket
    import subprocess
    import sys

    from streams.dev.local_stack import free_port, wait_for

    port = free_port()
    log = tmp_path / "local-broker.log"
    with log.open("wb") as out:
        command = subprocess.Popen(
            [sys.executable, "-m", "streams", "local-broker", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"broker ready" in log.read_bytes(), 30, "the broker to start")
        command.send_signal(signal.SIGTERM)
        assert command.wait(20) == 0
    finally:
        command.kill()

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(lambda: not listening(), 5, f"port {port} to be free")  # raises if tansu stays


def test_report_on_a_store_without_tables_says_how_to_fill_it(tmp_path):
    missing = tmp_path / "typo"
    result = run("report", "--clickhouse", f"chdb://{missing}")
    assert result.exit_code == 1
    assert f"no embedded ClickHouse store at {missing}; a worker makes one" in result.output
    assert not missing.exists()  # a reader does not create what it was asked to read
    (tmp_path / "empty").mkdir()
    result = run("report", "--clickhouse", f"chdb://{tmp_path / 'empty'}")
    assert result.exit_code == 1
    assert "no parcours tables here; a worker creates them" in result.output
    assert "Traceback" not in result.output


def test_a_data_dir_that_cannot_be_made_is_one_line_and_a_new_one_is_made(tmp_path):
    (tmp_path / "a-file").write_text("")
    result = run(
        "worker",
        "--broker",
        "localhost:9",
        "--clickhouse",
        f"chdb://{tmp_path / 'ch'}",
        env={"PARCOURS_DATA_DIR": str(tmp_path / "a-file" / "data")},
    )
    assert result.exit_code == 1
    assert "PARCOURS_DATA_DIR=" in result.output and "set it to a folder" in result.output
    from streams.cli.options import ready_folder

    assert ready_folder(tmp_path / "new" / "deeper", "PARCOURS_DATA_DIR").is_dir()


@pytest.mark.parametrize(
    "command",
    [
        ["replay", "tests/data/helpdesk_sample.csv", "--mapping", "schemas/mappings/helpdesk.yaml"],
        ["simulate", "--events", "5", "--fast"],
        ["worker", "--clickhouse", "chdb://{tmp}/ch", "--data-dir", "{tmp}/new/data"],
    ],
    ids=["replay", "simulate", "worker"],
)
def test_an_unreachable_broker_is_one_line_naming_it(command, tmp_path):
    """What a user sees, stdout and stderr: one line, no traceback, no unclosed client."""
    port = free_port()  # nothing listens there
    arguments = [a.format(tmp=tmp_path) for a in command]
    done = subprocess.run(
        [sys.executable, "-m", "streams", *arguments, "--broker", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PARCOURS_BROKER_WAIT_SECONDS": "0"},
    )
    assert done.returncode == 1
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line]
    assert errors == [
        f"Error: cannot reach the Kafka broker at 127.0.0.1:{port}; check --broker or "
        "KAFKA_BROKER, or start one with `parcours local-broker`"
    ]
    assert "Traceback" not in done.stderr and "Unclosed" not in done.stderr
    if command[0] == "worker":
        assert (tmp_path / "new" / "data").is_dir()  # --data-dir made what was missing


def test_query_prints_a_table_and_names_a_bad_query(tmp_path):
    from tests.support.clickhouse import clickhouse

    with clickhouse(tmp_path / "ch") as client:
        client.command("CREATE TABLE t (name String, n UInt32) ENGINE = MergeTree ORDER BY name")
        client.insert("t", [["a_long_name", 1200], ["b", 3]], column_names=["name", "n"])
    url = f"chdb://{tmp_path / 'ch'}"
    result = run("query", "--clickhouse", url, "SELECT name, n FROM t ORDER BY name")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "name               n",
        "  a_long_name  1,200",
        "  b                3",
        "(2 rows)",
    ]
    bad = run("query", "--clickhouse", url, "SELECT nope FROM t")
    assert bad.exit_code == 1 and "nope" in bad.output and "Traceback" not in bad.output
