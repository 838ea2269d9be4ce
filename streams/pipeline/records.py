"""Faust events as the core's plain messages, and Kafka records as ClickHouse rows."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Sequence

import faust
import orjson

from streams.clickhouse.rows import dead_letter_row, touchpoint_row
from streams.core.events import LATE, SINK_REJECTED, WHOLE_MESSAGE, Rejection
from streams.core.ingest import DeadLetter, RawMessage
from streams.core.stitching import Message


def raw_message(event: faust.EventT) -> RawMessage:
    m = event.message
    return RawMessage(m.key, event.value, m.topic, m.partition, m.offset)


def journey_message(event: faust.EventT) -> Message:
    m = event.message
    key = m.key.decode() if m.key is not None else None
    return Message(key, m.partition, m.offset, orjson.loads(event.value))


def late_letter(message: Message, event: dict, topic: str) -> DeadLetter:
    detail = f"ts {event['ts']} is behind the watermark of partition {message.partition}"
    return step_letter(message, event, topic, LATE, detail, "$.ts")


def step_letter(
    message: Message, event: dict | None, topic: str, reason: str, detail: str, path: str = "$"
) -> DeadLetter:
    """A dead letter of the journey step: one event of `message`, or all of it (None)."""
    if event is None:
        index, payload = WHOLE_MESSAGE, orjson.dumps(message.doc)
    else:
        index = next(i for i, e in enumerate(message.doc["events"]) if e is event)
        payload = orjson.dumps(event)
    rejection = Rejection(reason, detail, path, index, payload)
    return DeadLetter(rejection, topic, message.partition, message.offset, int(time.time() * 1000))


def sink_letter(
    first: faust.EventT, table: str, columns: Sequence[str], row: Sequence, error: str
) -> DeadLetter:
    """A row ClickHouse refused for good, from the batch whose first message is `first`."""
    m = first.message
    return sink_letter_of(m.topic, m.partition, m.offset, table, columns, row, error)


def sink_letter_of(
    topic: str,
    partition: int,
    offset: int,
    table: str,
    columns: Sequence[str],
    row: Sequence,
    error: str,
) -> DeadLetter:
    """A row ClickHouse refused for good, as a `sink_rejected` dead letter: the row as JSON,
    from the batch starting at `offset` (the index tells rows apart)."""
    payload = orjson.dumps(dict(zip(columns, row, strict=True)), default=str)
    index = zlib.crc32(payload) & 0x7FFFFFFF
    detail = f"ClickHouse refused this {table} row: {error}"[:1000]
    rejection = Rejection(SINK_REJECTED, detail, "$", index, payload)
    return DeadLetter(rejection, topic, partition, offset, int(time.time() * 1000))


def touchpoint_rows(events: list[faust.EventT]) -> list:
    docs = [orjson.loads(e.value) for e in events]
    # Control messages and forwarded events of the journey step were stored already.
    return [touchpoint_row(ev) for d in docs if "control" not in d for ev in d["events"]]


def dead_letter_rows(events: list[faust.EventT]) -> list:
    return [dead_letter_row(e.value or b"", headers(e.message.headers)) for e in events]


def rows_in(field: str, to_row: Callable[[dict], list], events: list[faust.EventT]) -> list:
    return [to_row(r) for e in events for r in orjson.loads(e.value)[field]]


def offsets(events: Iterable[faust.EventT]) -> Iterable[tuple[str, int, int]]:
    return ((e.message.topic, e.message.partition, e.message.offset) for e in events)


def headers(raw: object) -> dict[str, bytes]:
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, dict) else raw
    return {k: v for k, v in items}
