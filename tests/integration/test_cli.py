"""The command line: helpful errors before anything starts."""

from __future__ import annotations

from click.testing import CliRunner

from streams.cli import main


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
