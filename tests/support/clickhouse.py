"""An embedded ClickHouse client, closed after use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.clickhouse.client import connect


@contextmanager
def clickhouse(path: Path) -> Iterator:
    """An embedded ClickHouse client, closed after use (chDB holds one path per process)."""
    client = connect(f"chdb://{path}")
    try:
        yield client
    finally:
        client.close()
