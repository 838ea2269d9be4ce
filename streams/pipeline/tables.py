"""Reading and writing Faust tables from batches of events.

Tables take the partition of a key (its RocksDB folder and its changelog partition) from
Faust's *current event*; a batch from `take_events` has none, so each read and write
sets the event of the key's partition as current, as a one-event-at-a-time stream would.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import faust
import orjson
from faust.serializers import codecs
from faust.streams import _current_event

from streams.core.state import CustomerState
from streams.core.stitching import DueIndex


@contextmanager
def current(event: faust.EventT) -> Iterator[None]:
    """Make `event` Faust's current event while the block runs."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def read_in_partition(
    table: faust.TableT, event_of_partition: dict[int, faust.EventT], key: str, partition: int
) -> object:
    with current(event_of_partition[partition]):
        return table.get(key)


async def remember(
    app: faust.App,
    table: faust.TableT,
    event_of_partition: dict[int, faust.EventT],
    updates: Iterable[tuple[str, tuple[int, object]]],
) -> None:
    """Write (key, (partition, value)) to `table`, durably, before offsets are committed;
    a value of None deletes the key (a tombstone in the changelog).

    Changelog writes are buffered: flushing makes them durable first, or a restart would
    forget this batch's state and redo it.
    """
    for key, (partition, value) in updates:
        with current(event_of_partition[partition]):
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    await app.producer.flush()


class CustomerStateCodec(codecs.Codec):
    """The journey-state table's values: `CustomerState` in memory, its JSON layout in the
    changelog and in RocksDB. So a read of the in-memory table converts nothing; only a
    write to the changelog, a recovery and a RocksDB read do."""

    def _dumps(self, state: CustomerState) -> bytes:
        return orjson.dumps(state.to_json())

    def _loads(self, raw: bytes) -> CustomerState:
        return CustomerState.from_json(orjson.loads(raw))


CUSTOMER_STATE = "customer-state"
codecs.register(CUSTOMER_STATE, CustomerStateCodec())


def as_state(value: object) -> CustomerState | None:
    """A journey-state table value as a `CustomerState`. Values recovered from the
    changelog can come back as their JSON layout (a dict): Faust decodes a recovery with
    the codec its changelog topic was created with, before ours was set."""
    return CustomerState.from_json(value) if isinstance(value, dict) else value  # type: ignore[return-value]


def read_state(
    table: faust.TableT, event_of_partition: dict[int, faust.EventT], key: str, partition: int
) -> CustomerState | None:
    return as_state(read_in_partition(table, event_of_partition, key, partition))


def index_due(table: faust.TableT, partition: int, due: DueIndex) -> None:
    """Re-find the customers of `partition` with journeys to close (the index is in memory)."""
    for key, value in table.items():
        state = as_state(value)
        if state and state.partition == partition and not state.alias:
            due.push(partition, min((e.ts_ms for e in state.events), default=None), key)
