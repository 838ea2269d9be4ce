"""Collector tests: events, write keys and a POST helper."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.core.events import EventParser
from tests.support.journeys import CONFIG

PARSER = EventParser(CONFIG.touchpoint_types)


KEYS = {"site-key": "site", "crm-key": "crm"}
SITE = {"Authorization": "Bearer site-key"}


def event(n: int, customer: str = "c1", **changes) -> dict:
    body = {
        "event_id": f"e{n}",
        "customer_id": customer,
        "type": "site_visit",
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "channel": "web",
    }
    return {**body, **changes}


async def post(client, body, headers=SITE, raw=False):
    data = body if raw else orjson.dumps(body)
    response = await client.post("/v1/events", data=data, headers=headers)
    return response.status, await response.json(), response.headers
