"""`parcours replay`: column mappings, rejected rows, and replaying real data twice."""

from __future__ import annotations

import csv
import subprocess
import sys

import orjson
import pytest

from streams.config.settings import PROJECT_ROOT
from streams.core.events import EventParser
from streams.dev.local_stack import LocalBroker
from streams.edge.replay import MappingError, Summary, load_mapping, read_events
from tests.conftest import clickhouse, make_event

HELPDESK_MAPPING = PROJECT_ROOT / "schemas" / "mappings" / "helpdesk.yaml"
SAMPLE = PROJECT_ROOT / "tests" / "data" / "helpdesk_sample.csv"


@pytest.fixture(scope="module")
def replay_parser(config):
    return EventParser(config.touchpoint_types, max_age_seconds=0)


def sample_rows() -> list[dict]:
    with SAMPLE.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_the_helpdesk_mapping_turns_rows_into_support_touchpoints(replay_parser):
    summary = Summary()
    events = read_events(SAMPLE, load_mapping(HELPDESK_MAPPING), replay_parser, summary)
    assert (summary.rows, summary.accepted, dict(summary.rejected)) == (362, 362, {})
    first = next(e for _, e in events if e["event_id"] == "helpdesk-Case 1-1")
    assert first["type"] == "ticket_opened"  # Assign seriousness
    assert first["customer_id"] == "ticket-Case 1"
    assert first["ts"] == "2012-10-09T14:50:17.000+02:00"  # local Italian summer time
    assert first["properties"]["agent"] == "Value 1"
    assert [ts for ts, _ in events] == sorted(ts for ts, _ in events)


def write_csv(tmp_path, rows, header=("id", "what", "when", "who")):
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


MAPPING = """\
event_id: "crm-{id}"
customer_id: "{who}"
ts: {column: when, timezone: UTC}
type: {column: what, values: {visit: site_visit, buy: purchase}}
channel: web
source: crm
"""


def test_rows_that_cannot_be_used_are_counted_with_reasons(tmp_path, replay_parser):
    mapping_path = tmp_path / "mapping.yaml"
    mapping_path.write_text(MAPPING)
    path = write_csv(
        tmp_path,
        [
            ("1", "visit", "2024-05-01T10:00:00", "c1"),
            ("2", "refund", "2024-05-01T10:01:00", "c1"),
            ("3", "buy", "yesterday", "c1"),
            ("4", "buy", "2024-05-01T10:02:00", ""),
        ],
    )
    summary = Summary()
    events = read_events(path, load_mapping(mapping_path), replay_parser, summary)
    assert [e["event_id"] for _, e in events] == ["crm-1"]
    assert dict(summary.rejected) == {
        "unmapped_value": 1,
        "bad_timestamp": 1,
        "schema_violation": 1,
    }
    assert any("add it under type.values" in line for line in summary.examples)
    assert summary.rows == 4


def test_a_mapping_that_reads_missing_columns_lists_the_columns_there_are(tmp_path, replay_parser):
    mapping_path = tmp_path / "mapping.yaml"
    mapping_path.write_text(MAPPING.replace("{who}", "{customer}"))
    path = write_csv(tmp_path, [("1", "visit", "2024-05-01T10:00:00", "c1")])
    with pytest.raises(MappingError, match=r"customer.*its columns are: id, what, when, who"):
        read_events(path, load_mapping(mapping_path), replay_parser, Summary())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("customer_id: x\n", "map the required field"),
        (MAPPING.replace("customer_id", "client"), "unknown field"),
        (MAPPING.replace('customer_id: "{who}"\n', ""), "customer_id or anonymous_id"),
        (MAPPING.replace("{column: when, timezone: UTC}", "{timezone: UTC}"), "needs `column:`"),
    ],
)
def test_bad_mappings_say_what_to_fix(tmp_path, text, message):
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    with pytest.raises(MappingError, match=message):
        load_mapping(path)


def test_jsonl_lines_are_events_as_they_are(tmp_path, replay_parser):
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(make_event(2)) + b"\n{oops\n" + orjson.dumps(make_event(1)))
    summary = Summary()
    events = read_events(path, None, replay_parser, summary)
    assert sorted(e["event_id"] for _, e in events) == ["e-1", "e-2"]
    assert dict(summary.rejected) == {"invalid_json": 1}


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
