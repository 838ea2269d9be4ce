"""Touchpoint events as producers send them, and producer settings for the local broker."""

from __future__ import annotations

import time

from streams.config.settings import Settings

NOW_MS = int(time.time() * 1000)


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


# The local broker has no idempotent producers (see LocalBroker.WORKER_ENV).
LOCAL = Settings(producer_idempotent=False)
