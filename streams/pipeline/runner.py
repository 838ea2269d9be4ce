"""One batch of the worker's one agent, epoch by epoch (see streams.pipeline.epochs).

For each partition's epoch: ingest the touchpoint messages (parse, validate, dedupe
against the customer's state), run the journey step on the customers of this partition
(events of customers living elsewhere are forwarded to them on `touchpoints-resolved`),
and collect the epoch's effects: ClickHouse rows, messages, changed states. Then the
batch's effects are made durable in the epochs' order: intents, rows, messages,
states, marks. Nothing is written before every epoch of the batch is computed, so a
failure while computing leaves no trace. The event loop waits while a batch is computed
(`parcours_compute_seconds`): `PARCOURS_BATCH_MAX` bounds that, at a cost in throughput
(see deploy/README.md, "Known limits").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import faust
import orjson
from faust.types import TP, TableT

from streams import metrics
from streams.clickhouse.rows import TOUCHPOINT_COLUMNS, touchpoint_row
from streams.clickhouse.sink import ClickHouseSink
from streams.config import Config
from streams.config.settings import (
    TOUCHPOINTS,
    TOUCHPOINTS_DLQ,
    TOUCHPOINTS_RESOLVED,
    Settings,
)
from streams.core.events import PROCESSING_ERROR, parser_for
from streams.core.eventtime import Watermark, tell_now
from streams.core.ingest import (
    DeadLetter,
    IngestOutcome,
    RawMessage,
    count_where_taken,
    ingest_batch,
    kafka_partition,
    take_entered,
)
from streams.core.state import CustomerState
from streams.core.stitching import DueIndex, Folds, Message, StepResult, journey_step
from streams.outputs import OUTPUTS
from streams.pipeline import durable, epochs, records
from streams.pipeline.epochs import Epoch, PartitionMark, Record
from streams.pipeline.payloads import batch_payloads
from streams.pipeline.recorder import Recorder
from streams.pipeline.refetch import broker_hosts
from streams.pipeline.tables import as_mark, as_state, current, index_due
from streams.pipeline.tells import Shortcuts, Tells

log = logging.getLogger("parcours.worker")

# A gap in a partition's offsets larger than this is not fetched (and said so): it comes
# from a deliberate offset reset, not from a consumer that dropped a few records.
MAX_REFETCH = 100_000


@dataclass
class Effects:
    """What one epoch computed, to be made durable."""

    epoch: Epoch
    rows: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)
    sends: list[tuple[str, bytes | None, bytes, int | None, list | None]] = field(
        default_factory=list
    )  # (topic, key, value, partition, headers)
    started_watermark: dict | None = None
    tells: list[tuple[int, int, bytes]] = field(default_factory=list)  # (from, to, value)


Fetch = Callable[[epochs.Missing], Awaitable[list[Record]]]


class EpochRunner:
    def __init__(
        self,
        app: faust.App,
        table: TableT,
        settings: Settings,
        config: Config,
        sink: ClickHouseSink,
        recorder: Recorder,
        topics: dict[str, faust.TopicT],
        fetch: Fetch,
    ) -> None:
        self.app, self.table, self.settings, self.config = app, table, settings, config
        self.sink, self.record, self.topics, self.fetch = sink, recorder, topics, fetch
        self.parser = parser_for(config.touchpoint_types, settings)
        self.watch = durable.ChangelogWatch()  # the table writes the broker refused
        app.sensors.add(self.watch)
        self.touchpoints = settings.topic(TOUCHPOINTS)
        self.resolved = settings.topic(TOUCHPOINTS_RESOLVED)
        self.dead_letters = settings.topic(TOUCHPOINTS_DLQ)
        self.watermarks: dict = {}  # partition -> Watermark, of this process's partitions
        self.due = DueIndex()
        self.folds = Folds(settings.fold_cache_keys)
        self.indexed: set[int] = set()  # partitions whose due customers were loaded
        self.read_to: dict[int, int] = {}  # partition -> last touchpoints offset computed
        # (from, to) partition -> (entry watermark, idle, wall ms) last told
        self.told: dict[tuple[int, int], tuple[int, bool, int]] = {}
        self.tells = Tells(self.resolved, broker_hosts(settings.broker))  # app.py runs it
        self.shortcuts = Shortcuts()
        # The batch in progress: an event per partition. Tables take a key's partition
        # from Faust's current event, so each read and write sets its partition's.
        self.event_of: dict[int, faust.EventT] = {}

    # -- the batch ------------------------------------------------------------------

    async def run(self, events: Sequence[faust.EventT]) -> None:
        self.event_of = {e.message.partition: e for e in events}
        by_partition: dict[int, list[Record]] = {}
        for e in events:
            m = e.message
            record = Record(m.key, e.value, m.topic, m.partition, m.offset, m.timestamp)
            by_partition.setdefault(m.partition, []).append(record)
        pending: dict[str, tuple[int, CustomerState | None]] = {}  # the batch's states
        marks: dict[int, PartitionMark] = {}
        done: list[Effects] = []
        wall_ms = int(time.time() * 1000)
        started = time.perf_counter()
        for partition, batch in sorted(by_partition.items()):
            with current(self.event_of[partition]):
                mark = as_mark(self.table.get(epochs.mark_key(partition))) or PartitionMark()
            if partition not in self.indexed:  # after a (re)start: due customers, watermark
                index_due(self.table, partition, self.due)
                self.indexed.add(partition)
                if mark.watermark and partition not in self.watermarks:
                    self.watermarks[partition] = epochs.watermark_from(mark.watermark)
            planned, missing = epochs.plan(batch, mark, wall_ms)
            if missing:  # a re-run's records, or records the consumer skipped
                batch = await self._fill(batch, missing)
                planned, _ = epochs.plan(batch, mark, wall_ms)  # what stays missing is none
            self._read_up_to(partition, mark.done_at(self.touchpoints))
            for epoch in planned:
                done.append(self._compute(epoch, pending))
            if planned:
                marks[partition] = mark
        if not done:
            return
        metrics.COMPUTE_SECONDS.observe(time.perf_counter() - started)  # a re-run's refetch too
        await self._make_durable(done, pending, marks)

    async def _fill(self, batch: list[Record], missing: list[epochs.Missing]) -> list[Record]:
        """`batch` with the records of `missing` fetched from the broker, in offset order."""
        spans, refused = epochs.reads(missing, MAX_REFETCH)
        for gap in refused:
            log.warning(
                "%s partition %d: offsets %d..%d were skipped by the consumer and are too "
                "many to fetch (more than %d): was the group's offset moved past them on "
                "purpose? Their events are not processed.",
                gap.topic, gap.partition, gap.first, gap.last, MAX_REFETCH,
            )  # fmt: skip
        merged = {(r.topic, r.offset): r for r in batch}
        for span in spans:
            found = [r for r in await self.fetch(span) if (r.topic, r.offset) not in merged]
            metrics.RECORDS_REFETCHED.labels(span.topic).inc(len(found))
            merged.update(((r.topic, r.offset), r) for r in found)
        return [merged[k] for k in sorted(merged)]

    async def _make_durable(
        self,
        done: list[Effects],
        pending: dict[str, tuple[int, CustomerState | None]],
        marks: dict[int, PartitionMark],
    ) -> None:
        # 1. intents: each partition's mark names its epochs in flight, alone in its batch.
        for partition, mark in marks.items():
            ours = {(e.epoch.topic, e.epoch.first) for e in done if e.epoch.partition == partition}
            mark.open = [o for o in mark.open if (o.topic, o.first) not in ours] + [
                e.epoch.open(e.started_watermark) for e in done if e.epoch.partition == partition
            ]
        await self._durably(self._write_marks, marks, "the epochs' intents")
        # 2. rows, 3. messages.
        for effects in done:
            for table, (columns, rows) in effects.rows.items():
                rejected = partial(self._refused, effects.epoch)
                await self.sink.write(table, columns, rows, effects.epoch.token(table), rejected)
        acks, sources = [], []
        for effects in done:
            for topic, key, value, to_partition, headers in effects.sends:
                acks.append(
                    await self.topics[topic].send(
                        key=key, value=value, partition=to_partition, headers=headers
                    )
                )
                sources.append((effects.epoch.partition, topic))
        for (source, topic), metadata in zip(sources, await asyncio.gather(*acks), strict=True):
            if topic == self.resolved:  # where a tell from `source` must not overtake it
                self.shortcuts.acked(source, metadata.partition, metadata.offset)
        self.shortcuts.all_acked()
        self.tells.put([t for effects in done for t in effects.tells])  # after what they cover
        # 4. states: one record per changed key of the batch.
        await self._durably(self._write_states, pending, "the batch's customer states")
        metrics.STATE_RECORDS.inc(len(pending) + 2 * len(marks))
        metrics.EPOCHS.inc(len(done))
        # 5. marks: the epochs are done.
        for partition, mark in marks.items():
            for effects in done:
                if effects.epoch.partition == partition:
                    mark.finish(effects.epoch)
            mark.watermark = epochs.watermark_json(self.watermarks.get(partition))
        await self._durably(self._write_marks, marks, "the epochs' marks")

    async def _durably(self, write: Callable[[dict], None], items: dict, what: str) -> None:
        await durable.write_durably(partial(write, items), self.app.producer, self.watch, what)

    def _write_marks(self, marks: dict[int, PartitionMark]) -> None:
        for partition, mark in marks.items():
            self._write(partition, epochs.mark_key(partition), mark)

    def _write_states(self, pending: dict[str, tuple[int, CustomerState | None]]) -> None:
        for key, (partition, state) in pending.items():
            self._write(partition, key, state)

    def _write(self, partition: int, key: str, value: object) -> None:
        with current(self.event_of[partition]):
            if value is None:
                self.table.pop(key, None)
            else:
                self.table[key] = value

    async def _refused(self, epoch: Epoch, table: str, columns, row, error: str) -> None:
        where = (epoch.topic, epoch.partition, epoch.first)
        letter = records.sink_letter(*where, table, columns, row, error)
        await self.topics[self.dead_letters].send(
            key=None, value=letter.rejection.payload, headers=letter.headers("sink")
        )

    # -- one epoch, in memory ----------------------------------------------------------

    def _compute(self, epoch: Epoch, pending: dict) -> Effects:
        partition, wall_ms = epoch.partition, epoch.wall_ms
        if epoch.watermark is not None:  # a re-run starts where the first run started
            self.watermarks[partition] = epochs.watermark_from(epoch.watermark)
        effects = Effects(epoch, started_watermark=epochs.watermark_json(
            self.watermarks.get(partition)))  # fmt: skip
        started = time.perf_counter()

        def load(key: str, _partition: int) -> CustomerState | None:
            if key in pending:
                return pending[key][1]
            with current(self.event_of[partition]):
                return as_state(self.table.get(key))

        if epoch.behind is None:
            epoch.behind = self._behind(partition)
        if epoch.topic == self.touchpoints:  # read from now on, not before: a tick epoch
            # computed ahead of it in this batch must still find these records waiting
            self._read_up_to(partition, epoch.last)
        else:
            self.shortcuts.computed(partition, epoch.last)
        mark = self.watermarks.setdefault(
            partition, Watermark(self.config.allowed_lateness_ms, self.config.idle_timeout_ms)
        )
        mark.expect([p for p in range(self.settings.partitions) if p != partition])
        touch: list[Record] = []
        controls: list[Message] = []
        for record in epoch.records:
            doc = _control_doc(record) if record.topic == self.resolved else None
            if doc is None:
                touch.append(record)
            else:
                if epoch.behind and doc["control"] == "tick":
                    doc["behind"] = True
                key = record.key.decode() if record.key is not None else None
                controls.append(Message(key, partition, record.offset, doc))

        taken: list[dict] = []  # this partition's touchpoints of the epoch
        messages: list[Message] = []
        if touch:
            outcome = self._ingest(touch, partition, load, pending, wall_ms)
            taken = outcome.forward.pop(partition, [])
            count_where_taken(outcome)
            self._letters(effects, outcome.dead_letters, "ingest")
            self.record.ingested((r.timestamp_s for r in touch), outcome, taken, started)
            if outcome.events:
                messages.append(Message(None, partition, epoch.first, {"events": outcome.events}))
        entered = [m for m in controls if m.doc["control"] == "entered"]
        if entered:
            taken = taken + self._take_entered(entered, partition, load, pending, started)
        if taken:
            effects.rows["touchpoints"] = (TOUCHPOINT_COLUMNS, [touchpoint_row(e) for e in taken])
        result = journey_step(
            self.config,
            [*messages, *controls],
            load,
            self.watermarks,
            self.due,
            wall_ms=wall_ms,
            folds=self.folds,
            home=partial(kafka_partition, partitions=self.settings.partitions),
        )
        pending.update(result.states)
        self._outputs(effects, result)
        if any(t == self.resolved for t, *_ in effects.sends):
            self.shortcuts.sending(partition)
        ticked = any(m.doc["control"] == "tick" for m in controls)
        self._tell_watermark(effects, mark, partition, set(result.forwards), ticked, wall_ms)
        self.record.journeys_stepped([*messages, *controls], result, self.watermarks)
        return effects

    def _read_up_to(self, partition: int, offset: int) -> None:
        self.read_to[partition] = max(self.read_to.get(partition, -1), offset)

    def _behind(self, partition: int) -> bool:
        """Has the partition's touchpoints topic records this process has not computed?
        The consumer knows the end of the log from its last fetch; None before one."""
        tp = TP(self.touchpoints, partition)
        if tp not in self.app.consumer.assignment():
            return False
        end = self.app.consumer.highwater(tp)
        return epochs.records_wait(end, self.read_to.get(partition, -1))

    def _ingest(
        self, touch: list[Record], partition: int, load, pending: dict, wall_ms: int
    ) -> IngestOutcome:
        partitions = self.settings.partitions

        def seen(key: str, _partition: int) -> dict | None:
            if kafka_partition(key, partitions) != partition:
                return None  # deduped where the customer lives
            return self._seen(load, key, partition)

        outcome = ingest_batch(
            [RawMessage(r.key, r.value, r.topic, r.partition, r.offset) for r in touch],
            self.parser,
            self.config.phases,
            seen,
            partial(kafka_partition, partitions=partitions),
            now_ms=wall_ms,
            dedupe_window_ms=int(self.settings.dedupe_window_seconds * 1000),
            dedupe_max_ids=self.settings.dedupe_max_ids_per_key,
        )
        self._remember(outcome, partition, load, pending)
        return outcome

    @staticmethod
    def _seen(load, key: str, partition: int) -> dict | None:
        state = load(key, partition)
        return state.seen if state is not None else None

    def _remember(self, outcome: IngestOutcome, partition: int, load, pending: dict) -> None:
        """Store the ids this partition's customers now remember."""
        for key, (_, ids) in outcome.seen_updates.items():
            if kafka_partition(key, self.settings.partitions) == partition:
                state = load(key, partition) or CustomerState()
                pending[key] = (partition, state.evolve(seen=ids))

    def _take_entered(
        self, entered: list[Message], partition: int, load, pending: dict, started: float
    ) -> list[dict]:
        """The touchpoints of `entered` controls, deduped against their customers' ids
        (each control keeps only its fresh ones); return those taken."""
        outcome = take_entered(
            [e for m in entered for e in m.doc.get("events", ())],
            partition,
            partial(self._seen, load),
            dedupe_window_ms=int(self.settings.dedupe_window_seconds * 1000),
            dedupe_max_ids=self.settings.dedupe_max_ids_per_key,
        )
        self._remember(outcome, partition, load, pending)
        fresh = {id(e) for e in outcome.events}
        for m in entered:
            m.doc["events"] = [e for e in m.doc.get("events", ()) if id(e) in fresh]
        self.record.ingested((), outcome, outcome.events, started)
        return outcome.events

    def _tell_watermark(
        self,
        effects: Effects,
        mark: Watermark,
        partition: int,
        forwarded_to: set[int],
        ticked: bool,
        wall_ms: int,
    ) -> None:
        """Tell the other partitions this one's entry watermark, after the touchpoints
        it sent them (see streams.core.eventtime.tell_now): in memory where it may
        (see streams.pipeline.tells.Shortcuts), else through the broker."""
        doc = None  # encoded for the first tell through the broker, if there is one
        mine = self.app.consumer.assignment()
        for other in range(self.settings.partitions):
            if other == partition:
                continue
            there = self.watermarks.get(other)
            tp = TP(self.resolved, other)
            if (
                there is not None
                and tp in mine
                and self.shortcuts.direct(partition, other, self.app.consumer.highwater(tp))
            ):
                there.hear(partition, mark.value, mark.idle)
                continue
            told = self.told.get((partition, other))
            if tell_now(mark, told, other in forwarded_to, ticked, wall_ms):
                doc = doc or orjson.dumps(
                    {"control": "watermark", "from": partition, "value": mark.value,
                     "idle": mark.idle}
                )  # fmt: skip
                effects.tells.append((partition, other, doc))
                self.told[partition, other] = (mark.value, mark.idle, wall_ms)

    def _outputs(self, effects: Effects, result: StepResult) -> None:
        p = effects.epoch.partition
        for output in OUTPUTS:
            published = [r for rows in result.rows.get(output.kind, {}).values() for r in rows]
            if not published:
                continue
            effects.rows[output.table] = (output.columns, [output.to_row(r) for r in published])
            if output.topic is not None:  # a consumer outside the worker takes these
                topic = self.settings.topic(output.topic)
                for payload in batch_payloads(published, output.kind):
                    effects.sends.append((topic, None, payload, p, None))
        for key, doc in result.sends:
            effects.sends.append((self.resolved, key.encode(), orjson.dumps(doc), None, None))
        for elsewhere, events in result.forwards.items():
            for payload in batch_payloads(events, control="entered"):
                effects.sends.append((self.resolved, None, payload, elsewhere, None))
        came_in = effects.epoch.topic  # ingest's events and controls alike
        letters = [records.late_letter(m, e, came_in) for m, e in result.late]
        letters += [
            records.step_letter(m, e, came_in, PROCESSING_ERROR, detail)
            for m, e, detail in result.failed
        ]
        self._letters(effects, letters, "journeys")

    def _letters(self, effects: Effects, letters: list[DeadLetter], source: str) -> None:
        for letter in letters:
            effects.sends.append(
                (self.dead_letters, None, letter.rejection.payload, None, letter.headers(source))
            )


def _control_doc(record: Record) -> dict | None:
    """The doc of a control message of `touchpoints-resolved`; None for touchpoints."""
    try:
        doc = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        return None  # ingest dead-letters it
    return doc if isinstance(doc, dict) and "control" in doc else None
