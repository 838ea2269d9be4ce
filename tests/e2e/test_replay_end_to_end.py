"""`parcours replay` of the Helpdesk sample through the local broker and a worker, then
`parcours report` on what landed."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from streams.dev.local_stack import LocalBroker
from tests.support.clickhouse import clickhouse
from tests.support.helpdesk import HELPDESK_CONFIG, HELPDESK_MAPPING, SAMPLE, sample_rows


@pytest.mark.e2e
def test_replaying_the_helpdesk_sample_twice_lands_each_row_once(tmp_path):
    # With the Helpdesk example config, every ticket's journey opens on its first event,
    # whatever it is (Case 74 starts with its resolution), and completes on a resolution.
    tickets = {row["Case ID"] for row in sample_rows()}
    resolved = {row["Case ID"] for row in sample_rows() if row["Activity"] == "Resolve ticket"}
    assert 0 < len(resolved) <= len(tickets) == 80

    def replay(broker):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "streams",
                "replay",
                str(SAMPLE),
                "--mapping",
                str(HELPDESK_MAPPING),
                "--broker",
                broker.bootstrap,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "362 rows: 362 accepted, 0 rejected" in done.stdout

    def journeys():
        with clickhouse(tmp_path / "clickhouse") as client:
            return client.query(
                "SELECT journey_id, customer_key, completed_at IS NOT NULL, stage, path "
                "FROM journeys FINAL "
                "WHERE status != 'superseded' ORDER BY journey_id"
            ).result_rows, client.query(
                "SELECT count(), uniqExact(event_id) FROM touchpoints FINAL"
            ).result_rows[0]

    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        start = broker.worker(  # the log is from 2012
            tmp_path, PARCOURS_MAX_AGE_SECONDS="0", PARCOURS_CONFIG=str(HELPDESK_CONFIG)
        )
        with start as worker:
            replay(broker)
            worker.wait_for_rows({"touchpoints": 362}, timeout=120)
            worker.wait_until_quiet("journeys")
        first, first_counts = journeys()
        with start as worker:
            replay(broker)
            worker.wait_until_quiet("touchpoints")
            worker.wait_until_quiet("journeys")
        second, second_counts = journeys()

    assert first_counts == second_counts == (362, 362)
    assert second == first
    assert sorted(key.removeprefix("ticket-") for _, key, *_ in first) == sorted(tickets)
    completed = {key.removeprefix("ticket-") for _, key, done, *_ in first if done}
    assert completed == resolved

    # The log is from 2012: `parcours report` finds nothing in the last 30 days, says so,
    # and shows the days over which the tickets opened (from the CSV: first events, UTC).
    opened: dict[str, datetime] = {}
    for row in sample_rows():
        local = datetime.strptime(row["Complete Timestamp"], "%Y/%m/%d %H:%M:%S.%f")
        at = local.replace(tzinfo=ZoneInfo("Europe/Rome")).astimezone(UTC)
        opened[row["Case ID"]] = min(at, opened.get(row["Case ID"], at))
    days = f"{min(opened.values()):%Y-%m-%d} to {max(opened.values()):%Y-%m-%d}"
    page = tmp_path / "report.html"
    report = subprocess.run(
        [
            *(sys.executable, "-m", "streams", "report", "--format", "html"),
            *("--clickhouse", f"chdb://{tmp_path / 'clickhouse'}", "--html", str(page)),
            *("--config", str(HELPDESK_CONFIG), "--journey", "support"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    assert f"no support journeys opened in the last 30 days; showing {days}" in report.stderr
    assert report.stdout == f"HTML report: {page}\n"  # --format html: the page alone
    assert f">{len(tickets)} journeys · " in page.read_text()  # every ticket in the funnel
