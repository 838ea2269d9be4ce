"""The state table: its codec, its values, and reading it from batches of events.

Tables take the partition of a key (its RocksDB folder and its changelog partition) from
Faust's *current event*; a batch from `take_events` has none, so each read and write
sets the event of the key's partition as current (`current`), as a one-event-at-a-time
stream would.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import faust
import orjson
from faust.serializers import codecs
from faust.streams import _current_event
from faust.types import TableT

from streams.core.state import CustomerState
from streams.core.stitching import DueIndex
from streams.pipeline.epochs import PartitionMark, is_mark


@contextmanager
def current(event: faust.EventT) -> Iterator[None]:
    """Make `event` Faust's current event while the block runs."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class CustomerStateCodec(codecs.Codec):
    """The state table's values: `CustomerState` (or a partition's `PartitionMark`) in
    memory, their JSON layout in the changelog and in RocksDB. So a read of the in-memory
    table converts nothing; only a write to the changelog, a recovery and a RocksDB read
    do."""

    def _dumps(self, value: CustomerState | PartitionMark) -> bytes:
        return orjson.dumps(value.to_json())

    def _loads(self, raw: bytes) -> CustomerState | PartitionMark:
        doc = orjson.loads(raw)
        return PartitionMark.from_json(doc) if is_mark(doc) else CustomerState.from_json(doc)


CUSTOMER_STATE = "customer-state"
codecs.register(CUSTOMER_STATE, CustomerStateCodec())


def as_state(value: object) -> CustomerState | None:
    """A state table value as a `CustomerState` (None for a partition's mark). Values
    recovered from the changelog can come back as their JSON layout (a dict): Faust
    decodes a recovery with the codec its changelog topic was created with, before ours
    was set."""
    if isinstance(value, dict):
        return None if is_mark(value) else CustomerState.from_json(value)
    return value if isinstance(value, CustomerState) else None


def as_mark(value: object) -> PartitionMark | None:
    """A state table value as a partition's `PartitionMark` (see as_state)."""
    if isinstance(value, dict) and is_mark(value):
        return PartitionMark.from_json(value)
    return value if isinstance(value, PartitionMark) else None


def index_due(table: TableT, partition: int, due: DueIndex) -> None:
    """Re-find the customers of `partition` with journeys to close (the index is in memory)."""
    for key, value in table.items():
        state = as_state(value)
        if state and state.partition == partition and not state.alias:
            due.push(partition, min((e.ts_ms for e in state.events), default=None), key)
