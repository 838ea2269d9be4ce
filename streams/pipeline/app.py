"""The Faust application: topics, one state table and two thin agents.

    touchpoints ──┐
                  ├─step─┬─► ClickHouse: touchpoints, journeys, leaks, invitations, ...
    touchpoints-  │      ├─► survey-invitations, follow-ups   (for the dispatcher)
    resolved ─────┘      ├─► touchpoints-resolved  (customers of other partitions,
                         │                          identity links and hand-overs)
                         ├─► touchpoints-dlq ─sink─► ClickHouse dead_letters
                         └─► customer-state changelog: changed keys, then the mark

One agent takes both input topics (co-partitioned: a customer's key maps to the same
partition in both), so a customer's state has one writer. It works in epochs (see
streams.pipeline.epochs); the logic lives in `streams.core` (pure), the epoch's work in
`streams.pipeline.runner`, the writes in `streams.clickhouse.sink`, the metrics in
`streams.pipeline.recorder`. Batches (`take_events`) because Faust's per-message
overhead, not the logic, is the cost to design around.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any, cast

import faust
import orjson

from streams.clickhouse.rows import DEAD_LETTER_COLUMNS
from streams.clickhouse.sink import ClickHouseSink, batch_token
from streams.config import Config
from streams.config.settings import TOUCHPOINTS, TOUCHPOINTS_DLQ, TOUCHPOINTS_RESOLVED, Settings
from streams.outputs import OUTPUTS
from streams.pipeline import records
from streams.pipeline.recorder import Recorder
from streams.pipeline.refetch import fetch_range
from streams.pipeline.runner import EpochRunner
from streams.pipeline.tables import CUSTOMER_STATE, as_state


def kafka_url(broker: str) -> str:
    """Faust wants kafka://host:port; accept host:port and comma-separated lists too."""
    return ";".join(
        part if "://" in part else f"kafka://{part}"
        for part in broker.replace(",", ";").split(";")
        if part
    )


# Quick group joins and failover; the design notes measured 9 s with 6 s + 3 s. Faust's
# defaults make a first join wait about 30 s on the local broker.
GROUP_TIMINGS: dict[str, Any] = {
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
    "broker_rebalance_timeout": 3.0,
}


def faust_app(settings: Settings) -> faust.App:
    producer_batch: dict[str, Any] = (
        {"producer_max_batch_size": settings.producer_max_batch_bytes}
        if settings.producer_max_batch_bytes
        else {}
    )
    return faust.App(
        settings.app_id,
        broker=kafka_url(settings.broker),
        store=settings.store,
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        **GROUP_TIMINGS,
        producer_acks=-1,
        # A standby replays the other workers' changelogs: worth it on a cluster (fast
        # failover), wasted CPU on one host (PARCOURS_STANDBY_REPLICAS).
        table_standby_replicas=settings.standby_replicas,
        **producer_batch,
    )


def batches(
    stream: faust.StreamT, most: int, within_seconds: float
) -> AsyncIterator[Sequence[faust.EventT]]:
    """Up to `most` events, or those that came within the time: Faust's `take_events`
    (its streams have it; the type they are given to agents as does not say so)."""
    return cast(faust.Stream, stream).take_events(most, within=within_seconds)


def create_app(settings: Settings, config: Config, sink: ClickHouseSink) -> faust.App:
    app = faust_app(settings)

    def raw_topic(*names: str) -> faust.TopicT:
        return app.topic(
            *(settings.topic(n) for n in names),
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    inputs = raw_topic(TOUCHPOINTS, TOUCHPOINTS_RESOLVED)
    resolved = raw_topic(TOUCHPOINTS_RESOLVED)
    dead_letter_topic = raw_topic(TOUCHPOINTS_DLQ)
    published = {settings.topic(o.topic): raw_topic(o.topic) for o in OUTPUTS if o.topic}
    # Per customer key: its state, dedupe memory included (see streams.core.state); per
    # partition: its epoch mark (see streams.pipeline.epochs).
    state = cast(
        faust.Table, app.Table("customer-state", default=None, partitions=settings.partitions)
    )
    # Faust takes a table's codec from a Record value type only; ours is a dataclass.
    # Set before first use: the store and the changelog read it then.
    state.value_serializer = CUSTOMER_STATE
    record = Recorder(config, settings.topic(TOUCHPOINTS))
    runner = EpochRunner(
        app,
        state,
        settings,
        config,
        sink,
        record,
        {
            settings.topic(TOUCHPOINTS_RESOLVED): resolved,
            settings.topic(TOUCHPOINTS_DLQ): dead_letter_topic,
            **published,
        },
        partial(fetch_range, settings.broker),
    )

    @app.agent(inputs)
    async def step(stream: faust.StreamT) -> None:
        async for events in batches(stream, settings.batch_max, settings.batch_seconds):
            await runner.run(events)

    @app.task
    async def send_tells() -> None:
        await runner.tells.run()

    @app.agent(dead_letter_topic)
    async def sink_dead_letters(stream: faust.StreamT) -> None:
        async for events in batches(stream, settings.sink_batch_max, settings.sink_batch_seconds):
            token = batch_token("dead_letters", records.offsets(events))
            rows = records.dead_letter_rows(events)
            await sink.write("dead_letters", DEAD_LETTER_COLUMNS, rows, token)

    @app.timer(interval=settings.state_scan_seconds)
    async def scan_state() -> None:
        """Journeys open, keys and retained touchpoints, consumer lag, broker resets."""
        assigned = app.consumer.assignment()
        mine = {tp.partition for tp in assigned if tp.topic == settings.topic(TOUCHPOINTS)}
        states = (s for s in map(as_state, state.values()) if s is not None)
        record.state_scanned(states, mine)
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
