"""Shared test helpers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.dev.local_stack import LocalBroker
from tests.support.clickhouse import clickhouse
from tests.support.helpdesk import HELPDESK_MAPPING, SAMPLE, sample_rows


@pytest.mark.e2e
def test_replaying_the_helpdesk_sample_twice_lands_each_row_once(tmp_path):
    # A ticket's journey opens on its triage (or insertion) and completes on its resolution;
    # the log starts mid-way for a few tickets, which then have no journey.
    opened_at: dict[str, str] = {}
    resolved: set[str] = set()
    for row in sample_rows():
        case, when = row["Case ID"], row["Complete Timestamp"]
        if row["Activity"] in ("Assign seriousness", "Insert ticket"):
            opened_at.setdefault(case, when)
        elif row["Activity"] == "Resolve ticket" and case in opened_at and opened_at[case] <= when:
            resolved.add(case)
    assert 0 < len(resolved) <= len(opened_at) < 80  # Case 74 starts with its resolution

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
                "SELECT journey_id, customer_key, status, stage, path FROM journeys FINAL "
                "WHERE status != 'superseded' ORDER BY journey_id"
            ).result_rows, client.query(
                "SELECT count(), uniqExact(event_id) FROM touchpoints FINAL"
            ).result_rows[0]

    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        start = broker.worker(tmp_path, PARCOURS_MAX_AGE_SECONDS="0")  # the log is from 2012
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
    assert {key.removeprefix("ticket-") for _, key, *_ in first} == set(opened_at)
    closed_or_done = {
        key.removeprefix("ticket-")
        for _, key, status, *_ in first
        if status in ("completed", "closed")
    }
    assert closed_or_done == resolved
