"""The Faust application: topics, tables and three thin agents.

    touchpoints ──ingest──► touchpoints-resolved ──sink──► ClickHouse touchpoints
                     └────► touchpoints-dlq      ──sink──► ClickHouse dead_letters

Agents only move data: the logic lives in `streams.ingest` (pure) and
`streams.sink`. Every agent works on batches (`take_events`) because Faust's
per-message overhead, not the logic, is the cost to design around.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial

import faust
import orjson
from faust.streams import _current_event

from streams import metrics
from streams.config import Config
from streams.events import EventParser
from streams.ingest import RawMessage, ingest_batch
from streams.rows import DEAD_LETTER_COLUMNS, TOUCHPOINT_COLUMNS, dead_letter_row, touchpoint_row
from streams.settings import TOUCHPOINTS, TOUCHPOINTS_DLQ, TOUCHPOINTS_RESOLVED, Settings
from streams.sink import ClickHouseSink, batch_token


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

    # Event ids seen recently, per customer key (see streams.dedupe).
    seen = app.Table("ingest-seen", default=None, partitions=settings.partitions)

    parser = EventParser(
        config.touchpoint_types,
        max_message_bytes=settings.max_message_bytes,
        max_future_seconds=settings.max_future_seconds,
        max_age_seconds=settings.max_age_seconds,
    )
    phases = {name: t.phase for name, t in config.touchpoint_types.items()}

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
                now_ms=int(time.time() * 1000),
                dedupe_window_ms=int(settings.dedupe_window_seconds * 1000),
                dedupe_max_ids=settings.dedupe_max_ids_per_key,
            )
            acks = [
                await resolved.send(key=key.encode(), value=orjson.dumps({"events": batch}))
                for key, batch in outcome.forward.items()
            ]
            acks += [
                await dead_letter_topic.send(
                    key=None, value=letter.rejection.payload, headers=letter.headers("ingest")
                )
                for letter in outcome.dead_letters
            ]
            await asyncio.gather(*acks)  # forwarded before remembered: a crash re-sends
            for key, (partition, ids) in outcome.seen_updates.items():
                with _current(event_of_partition[partition]):
                    seen[key] = ids
            # Changelog writes are buffered: make them durable before this batch's offsets
            # can be committed, or a restart would forget these ids and forward them again.
            await app.producer.flush()

            metrics.MESSAGES_CONSUMED.labels(touchpoints.get_topic_name()).inc(len(events))
            for result, count in outcome.counts.items():
                metrics.EVENTS.labels(result).inc(count)
            for letter in outcome.dead_letters:
                metrics.DEAD_LETTERS.labels(letter.rejection.reason).inc()
            metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    @app.agent(resolved)
    async def sink_touchpoints(stream: faust.StreamT) -> None:
        async for events in stream.take_events(
            settings.sink_batch_max, within=settings.sink_batch_seconds
        ):
            rows = [touchpoint_row(ev) for e in events for ev in orjson.loads(e.value)["events"]]
            await sink.write(
                "touchpoints",
                TOUCHPOINT_COLUMNS,
                rows,
                batch_token("touchpoints", _offsets(events)),
            )

    @app.agent(dead_letter_topic)
    async def sink_dead_letters(stream: faust.StreamT) -> None:
        async for events in stream.take_events(
            settings.sink_batch_max, within=settings.sink_batch_seconds
        ):
            rows = [dead_letter_row(e.value or b"", _headers(e.message.headers)) for e in events]
            await sink.write(
                "dead_letters",
                DEAD_LETTER_COLUMNS,
                rows,
                batch_token("dead_letters", _offsets(events)),
            )

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


def _raw_message(event: faust.EventT) -> RawMessage:
    m = event.message
    return RawMessage(m.key, event.value, m.topic, m.partition, m.offset)


def _offsets(events: Iterable[faust.EventT]) -> Iterable[tuple[str, int, int]]:
    return ((e.message.topic, e.message.partition, e.message.offset) for e in events)


def _headers(headers: object) -> dict[str, bytes]:
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, dict) else headers
    return {k: v for k, v in items}
