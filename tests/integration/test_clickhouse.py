"""Migrations and the sink, on the real embedded ClickHouse engine."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError

from streams import metrics
from streams.clickhouse.client import (
    MIGRATIONS_DIR,
    ClickHouseUrlError,
    client_args,
    masked,
    migrate,
    split_statements,
)
from streams.clickhouse.rows import PARTITIONED_BY, TOUCHPOINT_COLUMNS
from streams.clickhouse.sink import ClickHouseSink, batch_token, is_permanent
from tests.support.clickhouse import clickhouse, touchpoint_ch_row


def test_migrations_apply_once_and_are_idempotent(tmp_path):
    with clickhouse(tmp_path / "ch") as client:
        first = migrate(client)
        second = migrate(client)
        tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    assert first == sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    assert first[:2] == ["0001_touchpoints.sql", "0002_dead_letters.sql"]
    assert second == []
    assert {
        "touchpoints",
        "dead_letters",
        "journeys",
        "touchpoint_journeys",
        "schema_migrations",
    } <= tables


def test_split_statements_ignores_comments_and_trailing_semicolons():
    sql = "-- a comment;\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n-- b\nSELECT 1;\n"
    assert split_statements(sql) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://bob:s%40cret@ch.internal:8124/cx",
            {
                "host": "ch.internal",
                "port": 8124,
                "username": "bob",
                "password": "s@cret",
                "database": "cx",
                "secure": False,
            },
        ),
        ("https://ch.example", {"port": 8443, "database": "default", "secure": True}),
    ],
)
def test_server_urls_become_client_arguments(url, expected):
    args = client_args(url)
    assert {k: args[k] for k in expected} == expected


def test_bad_urls_say_which_forms_work():
    with pytest.raises(ClickHouseUrlError, match="chdb://"):
        client_args("postgres://localhost/db")


def touchpoint(event_id: str) -> list:
    return touchpoint_ch_row(event_id)


def test_a_retried_batch_with_the_same_token_lands_once(tmp_path):
    rows = [touchpoint("e1"), touchpoint("e2")]
    token = batch_token("touchpoints", [("touchpoints-resolved", 0, 10), ("t", 0, 11)])
    with clickhouse(tmp_path / "ch") as client:
        migrate(client)
        for _ in range(3):
            client.insert(
                "touchpoints",
                rows,
                column_names=TOUCHPOINT_COLUMNS,
                settings={"insert_deduplication_token": token},
            )
        count = client.query("SELECT count() FROM touchpoints").result_rows[0][0]
    assert count == 2


def test_batch_tokens_depend_on_offset_ranges_not_order():
    a = batch_token("t", [("x", 0, 5), ("x", 1, 7), ("x", 0, 3)])
    b = batch_token("t", [("x", 1, 7), ("x", 0, 3), ("x", 0, 5)])
    assert a == b
    assert a != batch_token("t", [("x", 0, 3), ("x", 0, 6), ("x", 1, 7)])
    assert a != batch_token("u", [("x", 0, 5), ("x", 1, 7), ("x", 0, 3)])


class FlakyClient:
    """A real client whose first `failures` inserts raise, as during an outage."""

    def __init__(self, client, failures: int) -> None:
        self.client, self.failures = client, failures

    def insert(self, *args, **kwargs):
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        return self.client.insert(*args, **kwargs)

    def close(self) -> None:
        pass


def test_the_sink_retries_until_clickhouse_accepts_and_counts_failures(tmp_path):
    failures_before = metrics.SINK_FAILURES.labels("touchpoints")._value.get()
    with clickhouse(tmp_path / "ch") as client:
        migrate(client)
        flaky = FlakyClient(client, failures=3)
        sink = ClickHouseSink(lambda: flaky, max_backoff_seconds=0.05)
        rows = [touchpoint(f"e{i}") for i in range(5)]
        asyncio.run(sink.write("touchpoints", TOUCHPOINT_COLUMNS, rows, "tok"))
        sink.close()
        count = client.query("SELECT count() FROM touchpoints").result_rows[0][0]
    assert count == 5
    assert metrics.SINK_FAILURES.labels("touchpoints")._value.get() - failures_before == 3
    assert metrics.SINK_BACKLOG.labels("touchpoints")._value.get() == 0


def test_a_row_clickhouse_refuses_for_good_is_isolated_and_the_rest_land(tmp_path):
    refused: list[tuple] = []

    async def on_rejected(table, columns, row, error):
        refused.append((table, row[0], error))

    rows = [touchpoint(f"e{i}") for i in range(9)]
    bad = touchpoint("e-bad")
    bad[TOUCHPOINT_COLUMNS.index("src_partition")] = "not a number"  # UInt16
    rows.insert(4, bad)
    with clickhouse(tmp_path / "ch") as client:
        migrate(client)
        sink = ClickHouseSink(lambda: FlakyClient(client, failures=0), max_backoff_seconds=0.05)
        asyncio.run(sink.write("touchpoints", TOUCHPOINT_COLUMNS, rows, "tok", on_rejected))
        sink.close()
        stored = sorted(r[0] for r in client.query("SELECT event_id FROM touchpoints").result_rows)
    assert stored == [f"e{i}" for i in range(9)]
    assert [(t, e) for t, e, _ in refused] == [("touchpoints", "e-bad")]
    assert "'not a number'" in refused[0][2]  # the error's own words (here the client's)


def test_a_batch_spanning_150_months_is_written_one_month_at_a_time(tmp_path):
    rows = []
    for i in range(150):
        row = touchpoint(f"e{i}")
        row[TOUCHPOINT_COLUMNS.index("ts")] = datetime(2010 + i // 12, 1 + i % 12, 3, tzinfo=UTC)
        rows.append(row)
    with clickhouse(tmp_path / "ch") as client:
        migrate(client)
        with pytest.raises(Exception, match="Too many partitions"):  # what the sink avoids
            client.insert("touchpoints", rows, column_names=TOUCHPOINT_COLUMNS)
        sink = ClickHouseSink(lambda: FlakyClient(client, failures=0), max_backoff_seconds=0.05)
        asyncio.run(sink.write("touchpoints", TOUCHPOINT_COLUMNS, rows, "tok"))
        sink.close()
        count = client.query("SELECT count() FROM touchpoints").result_rows[0][0]
    assert count == 150


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (ConnectionError("refused"), False),
        (DatabaseError("Code: 252. DB::Exception: Too many parts"), False),
        (DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"), False),
        (DatabaseError("HTTP driver received HTTP status 503"), False),
        (DatabaseError("Code: 60. DB::Exception: Unknown table"), True),
        (DatabaseError("Code: 27. DB::Exception: Cannot parse input"), True),
        (DataError("Unable to create native array for column"), True),
    ],
)
def test_permanent_errors_are_told_from_transient_ones(error, permanent):
    assert is_permanent(error) is permanent


def test_the_sinks_partition_columns_are_the_migrations_partition_keys():
    declared = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        for statement in split_statements(path.read_text()):
            table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
            key = re.search(r"PARTITION BY toYYYYMM\((\w+)\)", statement)
            if table and key:
                declared[table.group(1)] = key.group(1)
    assert declared == PARTITIONED_BY


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://parcours:s3cret@ch:8123/db", "http://parcours:***@ch:8123/db"),
        ("https://:p%40ss@ch:8443", "https://:***@ch:8443"),
        ("http://parcours@ch:8123", "http://parcours@ch:8123"),
        ("chdb://.parcours/clickhouse", "chdb://.parcours/clickhouse"),
    ],
)
def test_a_clickhouse_password_is_never_shown(url, shown):
    assert masked(url) == shown
    with pytest.raises(ClickHouseUrlError) as raised:
        client_args(url.replace("http", "htp", 1) if url.startswith("http") else "ftp://u:s3cret@x")
    assert "s3cret" not in str(raised.value) and "p%40ss" not in str(raised.value)
