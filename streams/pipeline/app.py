"""The Faust application: topics, tables and thin agents.

    touchpoints ─ingest─► touchpoints-resolved ─sink─► ClickHouse touchpoints
         │                  │
         │                  └─journeys─┬─► journey-updates     ─sink─► journeys
         │                     │       ├─► leaks               ─sink─► leaks
         │                   (late)    ├─► survey-invitations  ─sink─► survey_invitations
         │                     │       ├─► survey-suppressions ─sink─► survey_suppressions
         │                     │       └─► customer-health     ─sink─► customer_health
         └────────────► touchpoints-dlq ─sink─► ClickHouse dead_letters

Agents only move data: the logic lives in `streams.core.ingest`, `streams.core.stitching` and
`streams.core.journeys` (pure) and `streams.clickhouse.sink`. Every agent works on batches
(`take_events`) because Faust's per-message overhead, not the logic, is the cost to
design around.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import faust
import orjson
from faust.streams import _current_event

from streams import metrics
from streams.clickhouse.rows import (
    DEAD_LETTER_COLUMNS,
    OUTPUT_ROWS,
    TOUCHPOINT_COLUMNS,
    dead_letter_row,
    touchpoint_row,
)
from streams.clickhouse.sink import ClickHouseSink, batch_token
from streams.config import Config
from streams.config.settings import (
    OUTPUT_TOPICS,
    TOUCHPOINTS,
    TOUCHPOINTS_DLQ,
    TOUCHPOINTS_RESOLVED,
    Settings,
)
from streams.core.events import LATE, Rejection, parser_for
from streams.core.eventtime import NEVER
from streams.core.ingest import (
    DeadLetter,
    RawMessage,
    ingest_batch,
    kafka_partition,
)
from streams.core.stitching import DueIndex, Message, journey_step
from streams.pipeline import worker_metrics
from streams.pipeline.payloads import batch_payloads

log = logging.getLogger("parcours.worker")


def kafka_url(broker: str) -> str:
    """Faust wants kafka://host:port; accept host:port and comma-separated lists too."""
    return ";".join(
        part if "://" in part else f"kafka://{part}"
        for part in broker.replace(",", ";").split(";")
        if part
    )


def create_app(settings: Settings, config: Config, sink: ClickHouseSink) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=kafka_url(settings.broker),
        store=settings.store,
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # Quick group joins and failover; the design notes measured 9 s with 6 s + 3 s.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=3.0,
        producer_acks=-1,
        **(
            {"producer_max_batch_size": settings.producer_max_batch_bytes}
            if settings.producer_max_batch_bytes
            else {}
        ),
    )

    def raw_topic(name: str) -> faust.TopicT:
        return app.topic(
            settings.topic(name),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    touchpoints = raw_topic(TOUCHPOINTS)
    resolved = raw_topic(TOUCHPOINTS_RESOLVED)
    dead_letter_topic = raw_topic(TOUCHPOINTS_DLQ)
    # What the journey step publishes (journeys, leaks, invitations, ...): kind -> topic.
    outputs = {kind: raw_topic(topic) for kind, (topic, _) in OUTPUT_TOPICS.items()}
    # Event ids seen recently, per customer key (see streams.core.dedupe).
    seen = app.Table("ingest-seen", default=None, partitions=settings.partitions)
    # Journey state per customer key (see streams.core.journeys for its layout).
    journey_state = app.Table("journey-state", default=None, partitions=settings.partitions)

    parser = parser_for(config.touchpoint_types, settings)
    phases = config.phases
    answers = metrics.AnswerScores(worker_metrics.answer_subjects(config), config.touchpoint_types)
    worker_metrics.show_every_series(
        config, ["touchpoints", "dead_letters", *(t for _, t in OUTPUT_TOPICS.values())]
    )

    async def remember(
        table: faust.TableT,
        event_of_partition: dict[int, faust.EventT],
        updates: Iterable[tuple[str, tuple[int, object]]],
    ) -> None:
        """Write (key, (partition, value)) to `table`, durably, before offsets are committed.

        Each key is written in the partition its messages come from, with an event of that
        partition current (see _current). Changelog writes are buffered: flushing makes
        them durable first, or a restart would forget this batch's state and redo it.
        """
        for key, (partition, value) in updates:
            with _current(event_of_partition[partition]):
                table[key] = value
        await app.producer.flush()

    @app.agent(touchpoints)
    async def ingest(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_seconds):
            started = time.perf_counter()
            event_of_partition = {e.message.partition: e for e in events}
            outcome = ingest_batch(
                [_raw_message(e) for e in events],
                parser,
                phases,
                partial(_read_in_partition, seen, event_of_partition),
                partial(kafka_partition, partitions=settings.partitions),
                now_ms=int(time.time() * 1000),
                dedupe_window_ms=int(settings.dedupe_window_seconds * 1000),
                dedupe_max_ids=settings.dedupe_max_ids_per_key,
            )
            acks = [
                await resolved.send(key=None, value=payload, partition=partition)
                for partition, batch in outcome.forward.items()
                for payload in batch_payloads(batch)
            ]
            acks += [
                await dead_letter_topic.send(
                    key=None, value=letter.rejection.payload, headers=letter.headers("ingest")
                )
                for letter in outcome.dead_letters
            ]
            await asyncio.gather(*acks)  # forwarded before remembered: a crash re-sends
            await remember(seen, event_of_partition, outcome.seen_updates.items())

            done = time.time()
            metrics.MESSAGES_CONSUMED.labels(touchpoints.get_topic_name()).inc(len(events))
            metrics.count_ingested(outcome.tally, outcome.counts["invalid"])
            for letter in outcome.dead_letters:
                metrics.DEAD_LETTERS.labels(letter.rejection.reason).inc()
            for e in events:
                metrics.PROCESSING.labels("ingest").observe(done - e.message.timestamp)
            for batch in outcome.forward.values():
                for event in batch:
                    metrics.EVENT_LAG.observe(done - event["ts_ms"] / 1000)
                answers.count(batch)
            metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    def sink_to(
        topic: faust.TopicT,
        table: str,
        columns: list[str],
        rows_of: Callable[[list[faust.EventT]], list],
    ) -> None:
        """An agent writing `topic` to `table` in batches (see streams.clickhouse.sink)."""

        async def write(stream: faust.StreamT) -> None:
            async for events in stream.take_events(
                settings.sink_batch_max, within=settings.sink_batch_seconds
            ):
                token = batch_token(table, _offsets(events))
                await sink.write(table, columns, rows_of(events), token)

        app.agent(topic, name=f"sink_{table}")(write)

    sink_to(resolved, "touchpoints", TOUCHPOINT_COLUMNS, _touchpoint_rows)
    sink_to(dead_letter_topic, "dead_letters", DEAD_LETTER_COLUMNS, _dead_letter_rows)
    for kind, (_, table) in OUTPUT_TOPICS.items():
        columns, to_row = OUTPUT_ROWS[table]
        sink_to(outputs[kind], table, columns, partial(_rows_in, kind, to_row))

    watermarks: dict = {}  # partition -> Watermark, of this process's partitions
    due = DueIndex()
    indexed: set[int] = set()  # partitions whose due customers were loaded from the table

    @app.agent(resolved)
    async def journeys(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_seconds):
            event_of_partition = {e.message.partition: e for e in events}
            for partition in event_of_partition.keys() - indexed:  # after a (re)start
                _index_due(journey_state, partition, due)
                indexed.add(partition)
            result = journey_step(
                config,
                [_journey_message(e) for e in events],
                partial(_read_in_partition, journey_state, event_of_partition),
                watermarks,
                due,
                wall_ms=int(time.time() * 1000),
            )
            acks = [
                await resolved.send(key=key.encode(), value=orjson.dumps(doc))
                for key, doc in result.sends
            ]
            # One message per kind and partition, not per customer: each message costs the
            # producer and every sink agent far more than its rows do.
            batches: dict[tuple[str, int], list[dict]] = {}
            for kind, rows_by_key in result.rows.items():
                for key, rows in rows_by_key.items():
                    batches.setdefault((kind, result.states[key][0]), []).extend(rows)
            acks += [
                await outputs[kind].send(key=None, value=payload, partition=partition)
                for (kind, partition), rows in batches.items()
                for payload in batch_payloads(rows, kind)
            ]
            for message, event in result.late:
                letter = _late_letter(message, event, resolved.get_topic_name())
                acks.append(
                    await dead_letter_topic.send(
                        key=None, value=letter.rejection.payload, headers=letter.headers("journeys")
                    )
                )
            await asyncio.gather(*acks)
            await remember(
                journey_state,
                event_of_partition,
                (
                    (key, (partition, {**state, "partition": partition}))
                    for key, (partition, state) in result.states.items()
                ),
            )
            for partition, mark in watermarks.items():
                if mark.value > NEVER:
                    metrics.WATERMARK.labels(str(partition)).set(mark.value / 1000)
            metrics.LATE_EVENTS.inc(len(result.late))
            metrics.DEAD_LETTERS.labels(LATE).inc(len(result.late))
            for _, event in result.late:
                metrics.EVENTS.labels(
                    event["type"], event["channel"], metrics.source_label(event["source"]), "late"
                ).inc()
            metrics.IDENTITY_MERGES.inc(result.merged)
            metrics.count_outputs(result.rows)
            for (journey, what), n in result.transitions.items():
                metrics.JOURNEYS.labels(journey, what).inc(n)
            done = time.time()
            for e in events:
                for event in orjson.loads(e.value).get("events", ()):
                    if "ingested_ms" in event:
                        metrics.PROCESSING.labels("journeys").observe(
                            done - event["ingested_ms"] / 1000
                        )

    resets = worker_metrics.BrokerResetWatch()

    @app.timer(interval=settings.state_scan_seconds)
    async def scan_state() -> None:
        """Journeys open, keys and retained touchpoints, consumer lag (see worker_metrics)."""
        assigned = app.consumer.assignment()
        mine = {tp.partition for tp in assigned if tp.topic == resolved.get_topic_name()}
        worker_metrics.scan_journey_state(journey_state.values(), mine)
        ends = {}
        for tp in assigned:
            if tp.topic.endswith("-changelog"):  # table state: read at recovery, not committed
                continue
            with contextlib.suppress(Exception):  # not fetched yet, or revoked meanwhile
                ends[tp] = app.consumer.highwater(tp)
        committed = app.monitor.tp_committed_offsets
        worker_metrics.report_consumer_lag(ends, committed)
        for tp, now, before in resets.check(ends, committed):
            metrics.BROKER_RESETS.inc()
            log.warning(
                "the broker lost its data: %s partition %d starts over at offset %d (this "
                "worker was at %d). Lost with it: the messages on it not consumed yet, the "
                "changelogs of this worker's tables (state lives on in this process, but a "
                "worker started later will not find it), and the committed offsets. Events "
                "sent from now on are processed; resend what producers sent while the "
                "broker was down or before it was consumed.",
                tp.topic,
                tp.partition,
                now,
                before,
            )

    @app.timer(interval=settings.tick_seconds)
    async def tick() -> None:
        """Let idle partitions' watermarks follow the clock (see streams.core.eventtime)."""
        value = orjson.dumps({"control": "tick", "wall_ms": int(time.time() * 1000)})
        for partition in range(settings.partitions):
            await resolved.send(key=None, value=value, partition=partition)

    return app


@contextmanager
def _current(event: faust.EventT) -> Iterator[None]:
    """Make `event` Faust's current event, as in a one-event-at-a-time stream.

    Tables take the partition of a key (its RocksDB folder and its changelog partition)
    from the current event; a batch from `take_events` has none, so we set it.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def _read_in_partition(
    table: faust.TableT, event_of_partition: dict[int, faust.EventT], key: str, partition: int
) -> object:
    with _current(event_of_partition[partition]):
        return table.get(key)


def _journey_message(event: faust.EventT) -> Message:
    m = event.message
    key = m.key.decode() if m.key is not None else None
    return Message(key, m.partition, m.offset, orjson.loads(event.value))


def _index_due(table: faust.TableT, partition: int, due: DueIndex) -> None:
    """Re-find the customers of `partition` with journeys to close (the index is in memory)."""
    for key, state in table.items():
        if state and state.get("partition") == partition and not state.get("alias"):
            due.push(partition, min((e[0] for e in state["events"]), default=None), key)


def _late_letter(message: Message, event: dict, topic: str) -> DeadLetter:
    index = next(i for i, e in enumerate(message.doc["events"]) if e is event)
    detail = f"ts {event['ts']} is behind the watermark of partition {message.partition}"
    rejection = Rejection(LATE, detail, "$.ts", index, orjson.dumps(event))
    return DeadLetter(rejection, topic, message.partition, message.offset, int(time.time() * 1000))


def _raw_message(event: faust.EventT) -> RawMessage:
    m = event.message
    return RawMessage(m.key, event.value, m.topic, m.partition, m.offset)


def _touchpoint_rows(events: list[faust.EventT]) -> list:
    docs = [orjson.loads(e.value) for e in events]
    # Control messages and forwarded events of the journey step were stored already.
    return [touchpoint_row(ev) for d in docs if "control" not in d for ev in d["events"]]


def _dead_letter_rows(events: list[faust.EventT]) -> list:
    return [dead_letter_row(e.value or b"", _headers(e.message.headers)) for e in events]


def _rows_in(field: str, to_row: Callable[[dict], list], events: list[faust.EventT]) -> list:
    return [to_row(r) for e in events for r in orjson.loads(e.value)[field]]


def _offsets(events: Iterable[faust.EventT]) -> Iterable[tuple[str, int, int]]:
    return ((e.message.topic, e.message.partition, e.message.offset) for e in events)


def _headers(headers: object) -> dict[str, bytes]:
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, dict) else headers
    return {k: v for k, v in items}
