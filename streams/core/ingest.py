"""The ingest step: raw `touchpoints` messages in; events to forward and dead letters out.

Pure: the caller supplies the remembered ids per key (looked up by key and the
source partition its messages arrive on) and the clock, and applies
the returned updates. The Faust agent, the benchmark and the tests run the same
function. Order of effects the caller must keep, so nothing is lost on a crash:
forward events and dead letters (and wait for the broker's ack), then store the
seen ids, then commit offsets. A crash in between re-sends; it never drops.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiokafka.partitioner import DefaultPartitioner

from streams.core.dedupe import SeenIds, drop_duplicates
from streams.core.events import (
    PROCESSING_ERROR,
    EventParser,
    Rejection,
    ValidEvent,
    describe,
    whole_message,
)


@dataclass(frozen=True, slots=True)
class RawMessage:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


def dead_letter_id(topic: str, partition: int, offset: int, index: int) -> str:
    """Same origin, same id: a re-sent dead letter replaces itself in ClickHouse."""
    origin = f"{topic}/{partition}/{offset}/{index}"
    return hashlib.blake2b(origin.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    rejection: Rejection
    topic: str
    partition: int
    offset: int
    received_ms: int

    def headers(self, source: str) -> list[tuple[str, bytes]]:
        """Kafka headers of the dead-letter message; its value is the original bytes."""
        r = self.rejection
        return [
            ("parcours.reason", r.reason.encode()),
            ("parcours.detail", r.detail.encode()),
            ("parcours.path", r.path.encode()),
            ("parcours.index", str(r.index).encode()),
            ("parcours.origin.topic", self.topic.encode()),
            ("parcours.origin.partition", str(self.partition).encode()),
            ("parcours.origin.offset", str(self.offset).encode()),
            ("parcours.received_ms", str(self.received_ms).encode()),
            ("parcours.source", source.encode()),
        ]


@dataclass
class IngestOutcome:
    # partition of `touchpoints-resolved` -> resolved events for it, in arrival order
    forward: dict[int, list[dict]] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)  # all of them, in arrival order
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # dedupe key -> (source partition, remembered ids) to store after forwarding
    seen_updates: dict[str, tuple[int, SeenIds]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)  # valid / invalid / duplicate
    # (type, channel, source, result) -> events, for metrics; valid and duplicate only
    tally: Counter = field(default_factory=Counter)


@functools.lru_cache(maxsize=1 << 16)  # asked twice per event, for few distinct keys
def kafka_partition(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) picks for `key`."""
    all_partitions = list(range(partitions))
    return _PARTITIONER(key.encode(), all_partitions, all_partitions)


_PARTITIONER = DefaultPartitioner()


def customer_key(event: dict) -> str:
    """Key of the customer an event belongs to, before identity resolution."""
    return event.get("customer_id") or event["anonymous_id"]


def ingest_batch(
    messages: Sequence[RawMessage],
    parser: EventParser,
    phases: dict[str, str],
    seen_lookup: Callable[[str, int], SeenIds | None],
    partition_for: Callable[[str], int],
    *,
    now_ms: int,
    dedupe_window_ms: int,
    dedupe_max_ids: int,
) -> IngestOutcome:
    """Parse, validate and dedupe a batch of messages (see module docstring)."""
    outcome = IngestOutcome()
    by_key: dict[str, list[tuple[str, int, int]]] = {}
    partition_of_key: dict[str, int] = {}
    arrived: list[tuple[RawMessage, ValidEvent]] = []

    for message in messages:
        try:
            valid, rejected = parser.parse(message.value, now_ms)
        except Exception as exc:  # the parser isolates events; this is the last resort
            letter = whole_message(PROCESSING_ERROR, describe(exc), message.value or b"")
            valid, rejected = [], [letter]
        for rejection in rejected:
            outcome.dead_letters.append(
                DeadLetter(rejection, message.topic, message.partition, message.offset, now_ms)
            )
        for item in valid:
            key = customer_key(item.event)
            arrival = len(arrived)
            arrived.append((message, item))
            by_key.setdefault(key, []).append((item.event["event_id"], item.ts_ms, arrival))
            partition_of_key.setdefault(key, message.partition)
    outcome.counts["invalid"] = len(outcome.dead_letters)
    fresh_arrivals = _dedupe(
        outcome, lambda a: arrived[a][1].event, by_key, partition_of_key, seen_lookup,
        dedupe_window_ms, dedupe_max_ids,
    )  # fmt: skip
    # Forward in arrival order, grouped by the partition each customer's journeys live on:
    # grouping by key would reorder events across keys and push the watermark ahead.
    for arrival in sorted(fresh_arrivals):
        message, item = arrived[arrival]
        outcome.tally[_labels(item.event, "valid")] += 1
        key = customer_key(item.event)
        resolved = resolved_event(item, message, phases, key, now_ms)
        outcome.forward.setdefault(partition_for(key), []).append(resolved)
        outcome.events.append(resolved)
    return outcome


def take_entered(
    events: Sequence[dict],
    partition: int,
    seen_lookup: Callable[[str, int], SeenIds | None],
    *,
    dedupe_window_ms: int,
    dedupe_max_ids: int,
) -> IngestOutcome:
    """Resolved events that entered on another partition, for customers of `partition`
    (an `entered` control): deduped here, where their customers' memory of ids is."""
    outcome = IngestOutcome()
    by_key: dict[str, list[tuple[str, int, int]]] = {}
    for arrival, event in enumerate(events):
        by_key.setdefault(event["customer_key"], []).append(
            (event["event_id"], event["ts_ms"], arrival)
        )
    partition_of_key = dict.fromkeys(by_key, partition)
    fresh = _dedupe(
        outcome, events.__getitem__, by_key, partition_of_key, seen_lookup,
        dedupe_window_ms, dedupe_max_ids,
    )  # fmt: skip
    outcome.events = [events[a] for a in sorted(fresh)]
    for event in outcome.events:
        outcome.tally[_labels(event, "valid")] += 1
    return outcome


def count_where_taken(outcome: IngestOutcome) -> None:
    """`outcome.forward` holds events of customers living on other partitions (the
    caller took its own): they are counted there, where they are taken, not twice."""
    for events in outcome.forward.values():
        for e in events:
            outcome.tally[_labels(e, "valid")] -= 1
            outcome.counts["valid"] -= 1


def _dedupe(
    outcome: IngestOutcome,
    event_of: Callable[[int], dict],
    by_key: dict[str, list[tuple[str, int, int]]],
    partition_of_key: dict[str, int],
    seen_lookup: Callable[[str, int], SeenIds | None],
    window_ms: int,
    max_ids: int,
) -> list[int]:
    """Drop each key's duplicates (counted in `outcome`); return the fresh arrivals."""
    fresh_arrivals: list[int] = []
    for key, candidates in by_key.items():
        fresh, duplicates, remembered = drop_duplicates(
            seen_lookup(key, partition_of_key[key]),
            candidates,
            window_ms=window_ms,
            max_ids=max_ids,
        )
        outcome.counts["duplicate"] += duplicates
        outcome.counts["valid"] += len(fresh)
        if duplicates:
            for arrival in {c[2] for c in candidates}.difference(fresh):
                outcome.tally[_labels(event_of(arrival), "duplicate")] += 1
        outcome.seen_updates[key] = (partition_of_key[key], remembered)
        fresh_arrivals += fresh
    return fresh_arrivals


def _labels(event: dict, result: str) -> tuple[str, str, str, str]:
    return event["type"], event["channel"], event["source"], result


def resolved_event(
    item: ValidEvent, message: RawMessage, phases: dict[str, str], key: str, now_ms: int
) -> dict:
    """The event as it travels on `touchpoints-resolved`: validated, keyed, timed, traced."""
    return {
        **item.event,
        "customer_key": key,
        "phase": phases.get(item.event["type"], ""),
        "ts_ms": item.ts_ms,
        "ingested_ms": now_ms,
        "src_partition": message.partition,
        "src_offset": message.offset,
    }
