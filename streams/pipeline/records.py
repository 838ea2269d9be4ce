"""Dead letters of the journey step and the sink, and dead-letter records as rows."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Mapping, Sequence

import faust
import orjson

from streams.clickhouse.rows import dead_letter_row
from streams.core.events import LATE, SINK_REJECTED, WHOLE_MESSAGE, Rejection
from streams.core.ingest import DeadLetter
from streams.core.stitching import Message


def late_letter(message: Message, event: dict, topic: str) -> DeadLetter:
    detail = f"ts {event['ts']} is behind the watermark of partition {message.partition}"
    return step_letter(message, event, topic, LATE, detail, "$.ts")


def step_letter(
    message: Message, event: dict | None, topic: str, reason: str, detail: str, path: str = "$"
) -> DeadLetter:
    """A dead letter of the journey step: one event of `message`, or all of it (None).
    `topic` is the one the message came in on; an event ingest handed over (a message
    with no control) names the record it came in, the others their message's."""
    offset = message.offset
    if event is None:
        index, payload = WHOLE_MESSAGE, orjson.dumps(message.doc)
    else:
        index = next(i for i, e in enumerate(message.doc["events"]) if e is event)
        # An event judged late where it entered carries the verdict here; not the letter.
        payload = orjson.dumps({k: v for k, v in event.items() if k != "late"})
        if "control" not in message.doc:
            offset = event.get("src_offset", offset)
    rejection = Rejection(reason, detail, path, index, payload)
    return DeadLetter(rejection, topic, message.partition, offset, int(time.time() * 1000))


def sink_letter(
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


def dead_letter_rows(events: Sequence[faust.EventT]) -> list:
    return [dead_letter_row(e.value or b"", headers(e.message.headers)) for e in events]


def offsets(events: Iterable[faust.EventT]) -> Iterable[tuple[str, int, int]]:
    return ((e.message.topic, e.message.partition, e.message.offset) for e in events)


def headers(raw: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> dict[str, bytes]:
    """A message's headers as a dict: Faust gives a mapping or a list of pairs."""
    if not raw:
        return {}
    items = raw.items() if isinstance(raw, Mapping) else raw
    return dict(items)
