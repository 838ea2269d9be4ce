"""Drop exact duplicates by event_id, per customer key, in bounded memory.

Each key remembers the ids it saw within a window of event time (and at most
`max_ids` of them, newest kept). A duplicate is an id already remembered, or
one seen earlier in the same batch. Older duplicates than the window pass
through; the ClickHouse tables deduplicate those on event_id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

SeenIds = dict[str, int]  # event_id -> event time (epoch ms)

T = TypeVar("T")


def drop_duplicates(
    seen: SeenIds | None,
    candidates: Sequence[tuple[str, int, T]],
    *,
    window_ms: int,
    max_ids: int,
) -> tuple[list[T], int, SeenIds]:
    """Return (new items in order, number of duplicates, updated seen ids).

    `candidates` are (event_id, ts_ms, item) triples for one key.
    """
    remembered = dict(seen or {})
    fresh: list[T] = []
    duplicates = 0
    for event_id, ts_ms, item in candidates:
        if event_id in remembered:
            duplicates += 1
            continue
        remembered[event_id] = ts_ms
        fresh.append(item)
    return fresh, duplicates, _bound(remembered, window_ms, max_ids)


def _bound(remembered: SeenIds, window_ms: int, max_ids: int) -> SeenIds:
    if not remembered:
        return remembered
    horizon = max(remembered.values()) - window_ms
    kept = {eid: ts for eid, ts in remembered.items() if ts >= horizon}
    if len(kept) > max_ids:
        newest = sorted(kept.items(), key=lambda kv: kv[1], reverse=True)[:max_ids]
        kept = dict(newest)
    return kept
