"""`parcours bench` runs end to end and reports every figure (the figures themselves are
measured, not asserted: see deploy/README.md, Performance)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.config.settings import PROJECT_ROOT


def test_bench_measures_every_run_and_prints_json(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--customers", "150",
            "--events", "600",
            "--workers", "1",
            "--rate", "200",
            "--latency-seconds", "10",
            "--data-dir", str(tmp_path),
            "--profile",
            "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for figure in (f for f in report["throughput"] if f["run"] == "pipeline"):
        [profile] = figure["profiles"]  # one worker: one profile, or why there is none
        if profile["path"]:
            assert profile["top"] and 0 < sum(share for _, share in profile["top"]) <= 1
            assert (tmp_path / "profiles").is_dir()
        else:  # py-spy needs to read another process's memory (ptrace)
            assert profile["error"]
    assert report["events"] == 600
    runs = {(f["run"], f["messages_kind"], f["workers"]) for f in report["throughput"]}
    assert runs == {
        ("core (in-process)", "1 event/message", 0),
        ("baseline (bare Faust)", "1 event/message", 1),
        ("pipeline", "1 event/message", 1),
        ("baseline (bare Faust)", "envelopes of ≤50", 1),
        ("pipeline", "envelopes of ≤50", 1),
    }
    for figure in report["throughput"]:
        assert figure["events"] == 600 and figure["events_per_second"] > 0
        if figure["run"] == "pipeline":
            assert figure["vs_baseline"] > 0 and figure["peak_rss_mb"][0] > 50
            # read once the journey step wrote its states, after the touchpoint rows
            assert figure["state_records_per_event"] > 0
    assert report["sink_rows_per_second"] > 0
    core = next(f for f in report["throughput"] if f["run"] == "core (in-process)")
    parts = report["core_us_per_event"]  # the core's time, split: its parts add up
    assert set(parts) == {"ingest", "journey step"} and min(parts.values()) > 0
    assert sum(parts.values()) <= 1e6 / core["events_per_second"]
    assert 100 < report["state_bytes_per_customer"] < 10_000
    [latency] = report["latency"]
    assert latency["landed"] >= 0.999 * latency["events"] > 0
    assert latency["late_events"] == 0
    assert 0 < latency["to_row"]["p50_ms"] <= latency["to_row"]["p99_ms"]


def test_bench_rejects_bad_lists():
    result = CliRunner().invoke(main, ["bench", "--workers", "1,x"])
    assert result.exit_code == 2 and "comma-separated numbers" in result.output
    result = CliRunner().invoke(main, ["bench", "--workers", "0"])
    assert result.exit_code == 2 and "above 0" in result.output


def test_the_latency_runs_use_the_shipped_config_without_delays_or_quiet_hours(tmp_path):
    from streams.config import load_config
    from streams.config.settings import SCHEMAS_DIR
    from streams.dev.bench_latency import bench_config

    shipped = load_config(SCHEMAS_DIR / "journeys.yaml")
    config = load_config(bench_config(SCHEMAS_DIR / "journeys.yaml", "1s", tmp_path / "j.yaml"))
    assert config.allowed_lateness_ms == 1000 and config.surveys.quiet_hours is None
    assert {r.delay_ms for r in config.surveys.rules.values()} == {0}
    assert config.surveys.rules.keys() == shipped.surveys.rules.keys()
    assert config.journeys.keys() == shipped.journeys.keys()


@pytest.fixture
def head_worktree_removed(tmp_path):
    """The worktree --compare HEAD makes under tmp_path/rel, removed from the repository's
    list afterwards, pass or fail."""
    yield
    folder = tmp_path / "rel/bench/worktrees/HEAD"
    if folder.exists():
        subprocess.run(["git", "-C", str(PROJECT_ROOT), "worktree", "remove", "--force",
                        str(folder)], check=True)  # fmt: skip


# Counting instructions needs valgrind (Debian's package; .ci/run installs it).
INSTRUCTIONS = ["--instructions", "150"] if shutil.which("valgrind") else []


def test_core_only_compare_times_both_trees_from_a_relative_data_dir(
    tmp_path, monkeypatch, head_worktree_removed
):
    # The children run inside their own trees: a relative --data-dir (the default,
    # `.parcours`) must still reach the messages file both read.
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        main,
        ["bench", "--core-only", "--compare", "HEAD", "--customers", "40",
         "--data-dir", "rel", "--rounds", "2", "--json", *INSTRUCTIONS],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    this, then = report["core_compared"]
    assert this["tree"] == "this commit" and then["tree"] == "HEAD"
    assert this["events_per_second"] > 0 and then["events_per_second"] > 0
    assert then["state_bytes_per_customer"] > 0
    for timing in (this, then):  # each figure is its best round of two
        assert len(timing["rounds_us_per_event"]) == 2
        assert timing["us_per_event"] == pytest.approx(min(timing["rounds_us_per_event"]), 0.01)
        assert 0 <= timing["idle_share"] <= 1
    if INSTRUCTIONS:  # the same core twice: the counts agree where seconds need not
        counts = [this["instructions_per_event"], then["instructions_per_event"]]
        assert min(counts) > 10_000
        assert counts[0] == pytest.approx(counts[1], rel=0.05)
    printed = CliRunner().invoke(
        main, ["bench", "--core-only", "--compare", "HEAD", "--customers", "20",
               "--data-dir", "rel", "--rounds", "1"],
    ).output  # fmt: skip
    assert "median of the rounds' ratios" in printed and "round 1/1, HEAD" in printed
    assert "sink:" not in printed  # not measured: no figure of 0 rows/s
