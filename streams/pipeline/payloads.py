"""Lists of rows or events as Kafka message values, each below the broker's size limit."""

from __future__ import annotations

from collections.abc import Iterable

import orjson

# Kafka refuses messages over its max.message.bytes (1 MB by default): a batch for one
# partition is split into payloads well below that.
MAX_PAYLOAD_BYTES = 512 * 1024


def batch_payloads(
    items: Iterable[dict],
    field: str = "events",
    max_bytes: int = MAX_PAYLOAD_BYTES,
    control: str | None = None,
) -> list[bytes]:
    """`{field: [...]}` payloads of `items`, in order, each at most `max_bytes` (an item
    larger than that alone goes in a payload of its own); `control` adds
    `"control": control` to each."""
    head, tail = orjson.dumps(field) + b":[", b"]}"
    if control is not None:
        head = b'"control":' + orjson.dumps(control) + b"," + head
    overhead = 1 + len(head) + len(tail)
    payloads: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for encoded in map(orjson.dumps, items):
        if parts and overhead + size + len(parts) + len(encoded) > max_bytes:
            payloads.append(b"{" + head + b",".join(parts) + tail)
            parts, size = [], 0
        parts.append(encoded)
        size += len(encoded)
    if parts:
        payloads.append(b"{" + head + b",".join(parts) + tail)
    return payloads
