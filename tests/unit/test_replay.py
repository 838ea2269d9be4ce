"""`parcours replay`: column mappings, rejected rows, and replaying real data twice."""

from __future__ import annotations

import csv

import orjson
import pytest

from streams.core.events import EventParser
from streams.edge.replay import InputError, MappingError, Summary, load_mapping, read_events
from tests.support.events import make_event
from tests.support.helpdesk import HELPDESK_MAPPING, SAMPLE


@pytest.fixture(scope="module")
def replay_parser(config):
    return EventParser(config.touchpoint_types, max_age_seconds=0)


def test_the_helpdesk_mapping_turns_rows_into_support_touchpoints(replay_parser):
    summary = Summary()
    events = read_events(SAMPLE, load_mapping(HELPDESK_MAPPING), replay_parser, summary)
    assert (summary.rows, summary.accepted, dict(summary.rejected)) == (362, 362, {})
    first = next(e for _, e in events if e["event_id"] == "helpdesk-Case 1-000001")
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


def test_rows_of_the_wrong_shape_or_bytes_are_rejected_by_row_and_the_rest_go_on(
    tmp_path, replay_parser
):
    mapping_path = tmp_path / "mapping.yaml"
    mapping_path.write_text(MAPPING)
    good = b"1,visit,2024-05-01T10:00:00,c1\r\n"
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"id,what,when,who\r\n"
        + good
        + b"2,visit\r\n"  # short
        + b"3,visit,2024-05-01T10:00:00,c1,extra\r\n"  # long
        + b"4,visit,2024-05-01T10:00:00,c\xe9\xff\r\n"  # Latin-1, not UTF-8
        + b'5,visit,2024-05-01T10:00:00,"'
        + b"x" * 200_000
        + b'"\r\n'  # a 200 KB field
        + b"6,visit,2024-05-01T10:00:00,c\x1b[31m\r\n"  # an escape sequence
        + good.replace(b"1,", b"7,", 1)
    )
    summary = Summary()
    events = read_events(path, load_mapping(mapping_path), replay_parser, summary)
    assert [e["event_id"] for _, e in events] == ["crm-1", "crm-6", "crm-7"]
    assert summary.rows == 7
    assert dict(summary.rejected) == {
        "short_row": 1,
        "long_row": 1,
        "invalid_utf8": 1,
        "schema_violation": 1,  # customer_id of 200,000 characters
    }
    assert summary.examples[:3] == [
        "row 2: short_row: 2 fields; the header has 4",
        "row 3: long_row: 5 fields; the header has 4",
        "row 4: invalid_utf8: column 'who' has bytes that are not UTF-8; save the file as UTF-8",
    ]
    assert summary.examples[3].startswith("row 5: schema_violation: $.customer_id")
    assert len(summary.examples[3]) < 400


def test_an_unterminated_quote_stops_with_the_row_and_the_line(tmp_path, replay_parser):
    mapping_path = tmp_path / "mapping.yaml"
    mapping_path.write_text(MAPPING)
    path = tmp_path / "export.csv"
    path.write_text(
        'id,what,when,who\n1,visit,2024-05-01T10:00:00,c1\n2,visit,"2024-05-01\n3,x,y,z\n'
    )
    with pytest.raises(InputError) as caught:
        read_events(path, load_mapping(mapping_path), replay_parser, Summary())
    message = str(caught.value)
    assert message.startswith(f"{path}: row 2 (from line 3): unexpected end of data")
    assert "a quote is probably not closed" in message


def test_control_characters_in_rejections_are_shown_escaped():
    summary = Summary()
    summary.reject(1, "schema_violation", "type 'a\x1b[2J\x07' is unknown")
    assert summary.examples == ["row 1: schema_violation: type 'a\\x1b[2J\\x07' is unknown"]
