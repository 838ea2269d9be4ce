"""Shared fixtures: a parser over the default config, and event factories."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from streams.clickhouse.client import connect
from streams.config import load_config
from streams.config.settings import SCHEMAS_DIR
from streams.core.events import EventParser

NOW_MS = int(time.time() * 1000)


@pytest.fixture(scope="session")
def config():
    return load_config(SCHEMAS_DIR / "journeys.yaml")


@pytest.fixture(scope="session")
def parser(config) -> EventParser:
    return EventParser(config.touchpoint_types, max_age_seconds=90 * 86400)


def make_event(n: int = 0, **fields) -> dict:
    """A valid touchpoint event; keyword arguments replace fields."""
    event = {
        "event_id": f"e-{n}",
        "type": "site_visit",
        "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW_MS / 1000 - 60)),
        "customer_id": "c-1",
        "channel": "web",
        "source": "site",
        "properties": {"page": "/home"},
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


@contextmanager
def clickhouse(path: Path) -> Iterator:
    """An embedded ClickHouse client, closed after use (chDB holds one path per process)."""
    client = connect(f"chdb://{path}")
    try:
        yield client
    finally:
        client.close()
