"""An embedded ClickHouse client, closed after use."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.clickhouse.client import connect
from streams.clickhouse.rows import touchpoint_row


@contextmanager
def clickhouse(path: Path) -> Iterator:
    """An embedded ClickHouse client, closed after use (chDB holds one path per process)."""
    client = connect(f"chdb://{path}")
    try:
        yield client
    finally:
        client.close()


def touchpoint_ch_row(event_id: str, **fields: object) -> list:
    """A `touchpoints` row as the worker writes it (through `touchpoint_row`), now;
    keyword arguments replace fields of the resolved event."""
    now_ms = int(time.time() * 1000)
    event = {
        "event_id": event_id,
        "customer_key": "c-1",
        "customer_id": "c-1",
        "type": "site_visit",
        "phase": "before",
        "ts_ms": now_ms,
        "channel": "web",
        "source": "site",
        "src_partition": 0,
        "src_offset": 0,
        "ingested_ms": now_ms,
    }
    return touchpoint_row({**event, **fields})
