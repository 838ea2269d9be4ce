"""Things break; nothing is lost or doubled. Real broker, real worker, embedded ClickHouse."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import orjson
import pytest

from streams.dev.local_stack import LocalBroker
from streams.edge.produce import as_messages, produce
from tests.support.clickhouse import clickhouse
from tests.support.events import make_event

pytestmark = pytest.mark.e2e


def wait_until(condition, timeout: float, what: str, worker) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f}s:\n{worker.log_tail()}")
        time.sleep(0.25)


def test_clickhouse_down_for_a_while_delays_rows_but_loses_and_doubles_nothing(tmp_path):
    fault = tmp_path / "clickhouse-is-down"
    fault.touch()  # every insert fails until the file is gone
    events = [make_event(i, customer_id=f"c-{i % 37}") for i in range(600)]
    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(
            tmp_path,
            PARCOURS_SINK_FAULT_FILE=str(fault),
            PARCOURS_SINK_MAX_BACKOFF_SECONDS="2",
            PARCOURS_SINK_BATCH_MAX="100",
        ) as worker,
    ):
        produce(broker.bootstrap, "touchpoints", as_messages(events))

        def failing_and_holding() -> bool:
            failures = worker.metric_sum("parcours_sink_failures_total", table="touchpoints")
            held = worker.metric_sum("parcours_sink_backlog_rows", table="touchpoints")
            return failures >= 3 and held > 0

        wait_until(failing_and_holding, 60, "no failing inserts with rows held", worker)
        # Ingest goes on meanwhile; the sink holds one batch and consumes no further.
        wait_until(
            lambda: worker.metric_sum("parcours_events_ingested_total", result="valid") == 600,
            60,
            "ingest did not go on",
            worker,
        )
        # The sink holds its batch (up to PARCOURS_SINK_BATCH_MAX messages of ingest's
        # envelopes) in memory, uncommitted, and writes nothing.
        held = worker.metric_sum("parcours_sink_backlog_rows", table="touchpoints")
        assert 0 < held <= 600
        assert worker.sink_rows("touchpoints") == 0
        assert worker.process.poll() is None  # the worker stays up

        fault.unlink()  # ClickHouse is back
        worker.wait_for_rows({"touchpoints": 600}, timeout=90)
        wait_until(
            lambda: worker.metric_sum("parcours_sink_backlog_rows") == 0,
            30,
            "the backlog did not drain",
            worker,
        )
        failures = worker.metric_sum("parcours_sink_failures_total", table="touchpoints")
    with clickhouse(tmp_path / "clickhouse") as client:
        total, unique = client.query(
            "SELECT count(), uniqExact(event_id) FROM touchpoints"  # raw: no FINAL
        ).result_rows[0]
    assert (total, unique) == (600, 600)
    assert failures >= 3


def test_a_worker_killed_five_times_ends_with_the_journeys_of_an_uninterrupted_run(tmp_path):
    """SIGKILL at random points while events flow, restart, five times; then the
    scripted customers must come out exactly as scripted (see test_journeys_end_to_end)."""
    from tests.support.scripted import decisions, scripted_run

    rng = random.Random(5)
    events, expected, expected_leaks, expected_surveys = scripted_run(int(time.time() * 1000))
    messages = [
        ((e.get("customer_id") or e["anonymous_id"]).encode(), orjson.dumps(e)) for e in events
    ]
    chunks = [messages[len(messages) * k // 6 : len(messages) * (k + 1) // 6] for k in range(6)]

    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path, PARCOURS_STATE_SCAN_SECONDS="1") as worker,
    ):
        for chunk in chunks[:5]:
            produce(broker.bootstrap, "touchpoints", chunk)
            time.sleep(rng.uniform(1.0, 5.0))  # somewhere in the middle of its work
            worker.kill()
            worker.start()
        produce(broker.bootstrap, "touchpoints", chunks[5])

        wait_until(
            lambda: caught_up(worker) and worker.sink_rows("journeys") > 0,
            180,
            "the restarted worker did not catch up",
            worker,
        )
        for table in ("journeys", "leaks", "survey_suppressions"):
            worker.wait_until_quiet(table)

    with clickhouse(tmp_path / "clickhouse") as client:
        # Raw rows, no FINAL: a re-run epoch's inserts carry its first run's tokens.
        total, unique = client.query(
            "SELECT count(), uniqExact(event_id) FROM touchpoints"
        ).result_rows[0]
        doubled = {
            table: client.query(f"SELECT count() - uniqExact({row_id}) FROM {table}").result_rows[
                0
            ][0]
            for table, row_id in (
                ("journeys", "journey_id, version"),
                ("leaks", "leak_id"),
                ("survey_invitations", "invitation_id"),
                ("survey_suppressions", "invitation_id"),
                ("customer_health", "customer_key, version"),
            )
        }
        journeys, leaks, surveys = decisions(client)
        # The same invitation id never carries two different decisions.
        conflicting = client.query(
            "SELECT invitation_id FROM survey_invitations GROUP BY invitation_id "
            "HAVING uniqExact(rule, customer_key, anchor_event_id, channel) > 1"
        ).result_rows
        # Nothing in the script is late: events re-delivered after a kill are duplicates.
        late = client.query(
            "SELECT count() FROM dead_letters FINAL WHERE reason = 'late'"
        ).result_rows[0][0]
    assert late == 0
    assert (total, unique) == (len(events), len(events))
    assert doubled == dict.fromkeys(doubled, 0)
    assert journeys == expected
    assert leaks == expected_leaks
    assert surveys == expected_surveys
    assert conflicting == []


def hostile(n: int, rng: random.Random) -> tuple[bytes, str]:
    """The n-th hostile message and the dead-letter reason it must get."""
    good = make_event(n, event_id=f"bad-{n}")
    kind = n % 12
    if kind == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) + b"\xff", (
            "invalid_json"
        )
    if kind == 1:
        return orjson.dumps(good)[: rng.randint(1, 60)], "invalid_json"  # truncated
    if kind == 2:
        return b"[" * 2000 + b"]" * 2000, "invalid_json"  # nesting beyond orjson's limit
    if kind == 3:
        return rng.choice([b"[1, 2]", b"42", b'"text"', b"null", b"true"]), "invalid_envelope"
    if kind == 4:
        return orjson.dumps({"events": {"not": "a list"}}), "invalid_envelope"
    if kind == 5:
        return orjson.dumps(dict(good, type="teleport")), "unknown_type"
    if kind == 6:
        return orjson.dumps(dict(good, ts="2999-01-01T00:00:00Z")), "ts_in_future"
    if kind == 7:
        return orjson.dumps(dict(good, customer_id=rng.randint(0, 10**9))), "schema_violation"
    if kind == 8:
        return orjson.dumps({k: v for k, v in good.items() if k != "event_id"}), (
            "schema_violation"
        )
    if kind == 9:
        return orjson.dumps(dict(good, properties={"deep": {"er": [1]}})), "schema_violation"
    if kind == 10:
        return orjson.dumps(dict(good, channel="x" * 5000)), "schema_violation"
    return orjson.dumps(dict(good, customerId="c-1")), "schema_violation"  # a typo'd field


def test_a_flood_of_hostile_messages_lands_in_dead_letters_and_the_valid_ones_in_clickhouse(
    tmp_path,
):
    rng = random.Random(13)
    bad = [hostile(n, rng) for n in range(100_000)]
    valid = [make_event(i, customer_id=f"c-{i % 500}") for i in range(10_000)]
    messages = [(None, value) for value, _ in bad]
    for position, message in zip(
        sorted(rng.sample(range(len(messages)), 500)), as_messages(valid, 20), strict=True
    ):
        messages.insert(position, message)  # envelopes of valid events in between
    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path, PARCOURS_SINK_BATCH_MAX="20000") as worker,
    ):
        produce(broker.bootstrap, "touchpoints", messages)
        worker.wait_for_rows({"touchpoints": 10_000, "dead_letters": 100_000}, timeout=300)
        assert worker.process.poll() is None
    with clickhouse(tmp_path / "clickhouse") as client:
        reasons = dict(
            client.query("SELECT reason, count() FROM dead_letters GROUP BY reason").result_rows
        )
        stored = client.query("SELECT count(), uniqExact(event_id) FROM touchpoints").result_rows
    assert reasons == dict(Counter(reason for _, reason in bad))
    assert stored == [(10_000, 10_000)]


def test_a_broker_restarted_empty_is_survived_and_the_loss_is_logged(tmp_path):
    """The local broker keeps no data: after its restart the worker reconnects by itself,
    says in its log what went with the broker, and processes what is sent next."""
    before = [make_event(i, customer_id=f"c-{i % 23}") for i in range(300)]
    # Fewer after than before: each partition's new log stays shorter than the offsets
    # committed on the old one, which is how the worker tells a reset.
    after = [make_event(1000 + i, customer_id=f"c-{i % 23}") for i in range(200)]
    broker = LocalBroker(log_path=tmp_path / "broker.log")
    broker.start()
    restarted = None
    try:
        with broker.worker(tmp_path, PARCOURS_STATE_SCAN_SECONDS="1") as worker:
            produce(broker.bootstrap, "touchpoints", as_messages(before))
            worker.wait_for_rows({"touchpoints": 300}, 120)
            # Kill it between batches: rows land before the batch's state and marks are
            # written. A write in flight at the kill is retried to the new broker, and
            # tansu's memory storage then refused every later write to that changelog
            # partition (AlreadyExists on offsets it handed out again): a broker fault this
            # test is not about.
            wait_until(lambda: caught_up(worker), 30, "the worker did not catch up", worker)
            broker.kill()
            time.sleep(2.0)  # the worker sees the broker gone
            restarted = LocalBroker(port=broker.port, log_path=tmp_path / "broker-2.log")
            restarted.start()
            produce(restarted.bootstrap, "touchpoints", as_messages(after))
            worker.wait_for_rows({"touchpoints": 500}, 120)
            wait_until(
                lambda: worker.metric_sum("parcours_broker_resets_total") > 0,
                30,
                "no broker reset noticed",
                worker,
            )
            assert worker.process.poll() is None
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert "the broker lost its data: touchpoints" in log
        assert "Lost with it: the messages on it not consumed yet" in log
    finally:
        broker.stop()
        if restarted is not None:
            restarted.stop()
    with clickhouse(tmp_path / "clickhouse") as client:
        ids = client.query("SELECT event_id FROM touchpoints FINAL").result_rows
    assert Counter(i for (i,) in ids) == Counter(e["event_id"] for e in before + after)


def caught_up(worker) -> bool:
    """Has the worker committed every message it consumes (its last batch is durable)?
    It must report touchpoints' lag at all: before its first look, there is none."""
    lags = {
        labels: value
        for (name, labels), value in worker.metrics().items()
        if name == "parcours_consumer_lag_messages"
    }
    touchpoints = [v for labels, v in lags.items() if ("topic", "touchpoints") in labels]
    return bool(touchpoints) and not any(lags.values())


def deep_member(event: dict, depth: int) -> bytes:
    """`event` as JSON with properties nested `depth` levels deep (the schema allows none)."""
    raw = orjson.dumps({**event, "properties": {"x": 1}})
    return raw.replace(b'{"x":1}', b'{"x":' + b'{"n":' * depth + b"1" + b"}" * depth + b"}")


def test_poison_messages_cost_only_themselves(tmp_path):
    """An envelope member nested deeper than the encoder writes, properties deeper than the
    explainer recurses, a ts of year 1, and 150 valid events spanning 150 months: every
    valid event lands in ClickHouse, every bad one in the dead letters with its reason."""
    valid = [make_event(i, customer_id=f"c-{i % 7}") for i in range(100)]
    envelope = orjson.dumps({"events": valid[:50]})
    envelope = envelope[: -len(b"]}")] + b"," + deep_member(make_event(900), 300) + b"]}"
    spread = [
        make_event(
            200 + i, customer_id="c-old", ts=f"{2010 + i // 12}-{1 + i % 12:02d}-03T10:00:00Z"
        )
        for i in range(150)
    ]
    messages = [
        (b"c-0", envelope),
        (b"c-1", deep_member(make_event(901), 1000)),
        (b"c-2", orjson.dumps(make_event(902, ts="0001-01-01T00:00:00Z"))),
        *as_messages(valid[50:]),
    ]
    with (
        LocalBroker(log_path=tmp_path / "broker.log") as broker,
        broker.worker(tmp_path, PARCOURS_MAX_AGE_SECONDS="0") as worker,
    ):
        # First, and alone: behind the others' watermark they would be late.
        produce(broker.bootstrap, "touchpoints", as_messages(spread, 150))
        worker.wait_for_rows({"touchpoints": 150}, timeout=120)
        produce(broker.bootstrap, "touchpoints", messages)
        worker.wait_for_rows({"touchpoints": 250, "dead_letters": 3}, timeout=120)
        worker.wait_until_quiet("dead_letters")
        assert worker.process.poll() is None
    with clickhouse(tmp_path / "clickhouse") as client:
        stored = client.query("SELECT count(), uniqExact(event_id) FROM touchpoints").result_rows
        reasons = sorted(client.query("SELECT reason FROM dead_letters").result_rows)
    assert stored == [(250, 250)]
    assert reasons == [("schema_violation",), ("schema_violation",), ("ts_out_of_range",)]


def test_sigterm_stops_a_worker_within_10_s_while_clickhouse_is_down_and_loses_nothing(tmp_path):
    fault = tmp_path / "clickhouse-is-down"
    fault.touch()
    events = [make_event(i, customer_id=f"c-{i % 11}") for i in range(200)]
    with LocalBroker(log_path=tmp_path / "broker.log") as broker:
        env = {"PARCOURS_SINK_FAULT_FILE": str(fault), "PARCOURS_SINK_MAX_BACKOFF_SECONDS": "30"}
        with broker.worker(tmp_path, **env) as worker:
            produce(broker.bootstrap, "touchpoints", as_messages(events))
            wait_until(
                lambda: worker.metric_sum("parcours_sink_failures_total", table="touchpoints") >= 5,
                90,
                "no failing inserts",
                worker,
            )
            started = time.monotonic()
            worker.process.send_signal(signal.SIGTERM)
            worker.process.wait(30)
            stopped_in = time.monotonic() - started
        fault.unlink()
        with broker.worker(tmp_path, **env) as worker:
            worker.wait_for_rows({"touchpoints": 200}, timeout=120)
    assert stopped_in < 10, f"SIGTERM took {stopped_in:.1f}s"
