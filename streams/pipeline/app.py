"""The Faust application: topics, tables and thin agents.

    touchpoints ─ingest─► touchpoints-resolved ─sink─► ClickHouse touchpoints
         │                  │
         │                  └─journeys─┬─► journey-updates     ─sink─► journeys
         │                     │       ├─► leaks               ─sink─► leaks
         │                   (late)    ├─► survey-invitations  ─sink─► survey_invitations
         │                     │       ├─► survey-suppressions ─sink─► survey_suppressions
         │                     │       ├─► customer-health     ─sink─► customer_health
         │                     │       └─► follow-ups          ─sink─► follow_ups
         └────────────► touchpoints-dlq ─sink─► ClickHouse dead_letters

Agents only move data: the logic lives in `streams.core` (pure), the writes in
`streams.clickhouse.sink`, the metrics in `streams.pipeline.recorder`, the outputs in
`streams.outputs`. Every agent works on batches
(`take_events`) because Faust's per-message overhead, not the logic, is the cost to
design around.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from functools import partial

import faust
import orjson

from streams.clickhouse.rows import DEAD_LETTER_COLUMNS, TOUCHPOINT_COLUMNS
from streams.clickhouse.sink import ClickHouseSink, batch_token
from streams.config import Config
from streams.config.settings import TOUCHPOINTS, TOUCHPOINTS_DLQ, TOUCHPOINTS_RESOLVED, Settings
from streams.core.events import PROCESSING_ERROR, parser_for
from streams.core.ingest import ingest_batch, kafka_partition
from streams.core.stitching import DueIndex, Folds, StepResult, journey_step
from streams.outputs import OUTPUTS
from streams.pipeline import records
from streams.pipeline.payloads import batch_payloads
from streams.pipeline.recorder import Recorder
from streams.pipeline.tables import (
    CUSTOMER_STATE,
    as_state,
    index_due,
    read_in_partition,
    read_state,
    remember,
)


def kafka_url(broker: str) -> str:
    """Faust wants kafka://host:port; accept host:port and comma-separated lists too."""
    return ";".join(
        part if "://" in part else f"kafka://{part}"
        for part in broker.replace(",", ";").split(";")
        if part
    )


def faust_app(settings: Settings) -> faust.App:
    return faust.App(
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


def create_app(settings: Settings, config: Config, sink: ClickHouseSink) -> faust.App:
    app = faust_app(settings)

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
    outputs = {o.kind: raw_topic(o.topic) for o in OUTPUTS}
    # Event ids seen recently, per customer key (see streams.core.dedupe).
    seen = app.Table("ingest-seen", default=None, partitions=settings.partitions)
    # Journey state per customer key (see streams.core.journeys for its layout).
    journey_state = app.Table("journey-state", default=None, partitions=settings.partitions)
    # Faust takes a table's codec from a Record value type only; ours is a dataclass.
    # Set before first use: the store and the changelog read it then.
    journey_state.value_serializer = CUSTOMER_STATE
    parser = parser_for(config.touchpoint_types, settings)
    record = Recorder(config, touchpoints.get_topic_name())

    @app.agent(touchpoints)
    async def ingest(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_seconds):
            started = time.perf_counter()
            event_of_partition = {e.message.partition: e for e in events}
            outcome = ingest_batch(
                [records.raw_message(e) for e in events],
                parser,
                config.phases,
                partial(read_in_partition, seen, event_of_partition),
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
            await remember(app, seen, event_of_partition, outcome.seen_updates.items())
            record.ingested((e.message.timestamp for e in events), outcome, started)

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
                token = batch_token(table, records.offsets(events))
                # A row refused for good is dead-lettered (never the dead letters' own).
                rejected = None if topic is dead_letter_topic else partial(refused, events[0])
                await sink.write(table, columns, rows_of(events), token, rejected)

        app.agent(topic, name=f"sink_{table}")(write)

    async def refused(first: faust.EventT, table: str, columns, row, error: str) -> None:
        letter = records.sink_letter(first, table, columns, row, error)
        await dead_letter_topic.send(
            key=None, value=letter.rejection.payload, headers=letter.headers("sink")
        )

    sink_to(resolved, "touchpoints", TOUCHPOINT_COLUMNS, records.touchpoint_rows)
    sink_to(dead_letter_topic, "dead_letters", DEAD_LETTER_COLUMNS, records.dead_letter_rows)
    for o in OUTPUTS:
        rows_of = partial(records.rows_in, o.kind, o.to_row)
        sink_to(outputs[o.kind], o.table, o.columns, rows_of)

    watermarks: dict = {}  # partition -> Watermark, of this process's partitions
    due = DueIndex()
    folds = Folds(settings.fold_cache_keys)
    indexed: set[int] = set()  # partitions whose due customers were loaded from the table

    @app.agent(resolved)
    async def journeys(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_seconds):
            event_of_partition = {e.message.partition: e for e in events}
            for partition in event_of_partition.keys() - indexed:  # after a (re)start
                index_due(journey_state, partition, due)
                indexed.add(partition)
            messages = [records.journey_message(e) for e in events]
            result = journey_step(
                config,
                messages,
                partial(read_state, journey_state, event_of_partition),
                watermarks,
                due,
                wall_ms=int(time.time() * 1000),
                folds=folds,
            )
            await asyncio.gather(*[await send() for send in publish(result)])
            await remember(app, journey_state, event_of_partition, result.states.items())
            record.journeys_stepped(messages, result, watermarks)

    def publish(result: StepResult) -> list[Callable]:
        """The sends of one journey step: identity messages, outputs, late letters."""
        sends = [
            partial(resolved.send, key=key.encode(), value=orjson.dumps(doc))
            for key, doc in result.sends
        ]
        # One message per kind and partition, not per customer: each message costs the
        # producer and every sink agent far more than its rows do.
        batches: dict[tuple[str, int], list[dict]] = {}
        for kind, rows_by_key in result.rows.items():
            for key, rows in rows_by_key.items():
                batches.setdefault((kind, result.states[key][0]), []).extend(rows)
        sends += [
            partial(outputs[kind].send, key=None, value=payload, partition=partition)
            for (kind, partition), rows in batches.items()
            for payload in batch_payloads(rows, kind)
        ]
        topic = resolved.get_topic_name()
        letters = [records.late_letter(message, event, topic) for message, event in result.late]
        letters += [
            records.step_letter(message, event, topic, PROCESSING_ERROR, detail)
            for message, event, detail in result.failed
        ]
        sends += [
            partial(
                dead_letter_topic.send,
                key=None,
                value=letter.rejection.payload,
                headers=letter.headers("journeys"),
            )
            for letter in letters
        ]
        return sends

    @app.timer(interval=settings.state_scan_seconds)
    async def scan_state() -> None:
        """Journeys open, keys and retained touchpoints, consumer lag, broker resets."""
        assigned = app.consumer.assignment()
        mine = {tp.partition for tp in assigned if tp.topic == resolved.get_topic_name()}
        record.state_scanned(map(as_state, journey_state.values()), mine)
        ends = {}
        for tp in assigned:
            if tp.topic.endswith("-changelog"):  # table state: read at recovery, not committed
                continue
            with contextlib.suppress(Exception):  # not fetched yet, or revoked meanwhile
                ends[tp] = app.consumer.highwater(tp)
        record.offsets_scanned(ends, app.monitor.tp_committed_offsets)

    @app.timer(interval=settings.tick_seconds)
    async def tick() -> None:
        """Let idle partitions' watermarks follow the clock (see streams.core.eventtime)."""
        value = orjson.dumps({"control": "tick", "wall_ms": int(time.time() * 1000)})
        for partition in range(settings.partitions):
            await resolved.send(key=None, value=value, partition=partition)

    return app
