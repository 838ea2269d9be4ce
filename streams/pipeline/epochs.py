"""Epochs: the unit in which the worker makes its effects durable. Pure.

An epoch is one batch of offsets [first, last] of one topic partition. The worker
computes an epoch's effects in memory, then makes them durable in this order:

    1. intent   the partition's mark names the epoch (its offsets, the wall clock and
                the watermark it was computed with), alone in its changelog batch;
    2. rows     ClickHouse inserts, one per table, token (table, topic, partition,
                first, last): a repeated insert of the same epoch is dropped;
    3. messages the dispatcher's topics, dead letters, forwards to other partitions;
    4. state    one changelog record per changed customer key;
    5. mark     the partition's mark moves `done` to `last` and closes the intent: the
                commit marker, again alone in its batch;
    6. offsets  Faust commits last + 1 (it may lag: the mark is the truth).

After a crash, offsets at or below `done` are skipped, and an epoch left open is run
again over exactly [first, last] with its recorded clock and watermark, so it computes
the same rows under the same tokens (fetching from the broker what the first batch
after the restart did not bring). A customer whose state record was written before the
crash sees its events again as duplicates (their ids are in its state): nothing is
applied twice. The mark is the last record of its changelog partition in every batch,
which also keeps the local broker's end-offset quirk (see LocalBroker) from hiding the
state records before it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

from streams.core.eventtime import Watermark

MARK_PREFIX = "\x00epochs/"  # table keys of marks: no customer key starts with NUL


@dataclass(frozen=True, slots=True)
class Record:
    """A Kafka record as the worker needs it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_s: float = 0.0


@dataclass(frozen=True)
class OpenEpoch:
    topic: str
    first: int
    last: int
    wall_ms: int
    watermark: dict | None  # the partition's watermark before the epoch (None: fresh)
    behind: bool = False  # the partition had touchpoints not read yet (see Epoch)

    def to_json(self) -> list:
        return [self.topic, self.first, self.last, self.wall_ms, self.watermark, self.behind]


@dataclass
class PartitionMark:
    """Per partition: how far each topic's effects are durable, and what is in flight."""

    done: dict[str, int] = field(default_factory=dict)  # topic -> last durable offset
    open: list[OpenEpoch] = field(default_factory=list)
    watermark: dict | None = None  # after the last durable epoch
    # topic -> the latest record timestamp (s) up to `done`: a record at or below `done`
    # that is newer comes from a log the broker started over (it lost its data).
    done_ts: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "epochs": 1,
            "done": self.done,
            "open": [e.to_json() for e in self.open],
            "watermark": self.watermark,
            "done_ts": self.done_ts,
        }

    @classmethod
    def from_json(cls, doc: dict) -> PartitionMark:
        return cls(
            dict(doc.get("done", {})),
            [OpenEpoch(*e) for e in doc.get("open", ())],
            doc.get("watermark"),
            dict(doc.get("done_ts", {})),
        )

    def done_at(self, topic: str) -> int:
        return self.done.get(topic, -1)

    def is_done(self, record: Record) -> bool:
        """Are `record`'s effects durable? Forgets `topic` if the broker started it over."""
        if record.offset > self.done_at(record.topic):
            return False
        if record.timestamp_s <= self.done_ts.get(record.topic, float("inf")):
            return True
        # A new log: nothing of it was done, and it starts at offset 0 (what the
        # consumer skipped of its head is missing, not lost).
        self.done[record.topic] = -1
        self.done_ts.pop(record.topic, None)
        self.open = [o for o in self.open if o.topic != record.topic]
        return False

    def finish(self, epoch: Epoch) -> None:
        """`epoch`'s effects are durable."""
        self.done[epoch.topic] = max(self.done_at(epoch.topic), epoch.last)
        newest = max((r.timestamp_s for r in epoch.records), default=0.0)
        self.done_ts[epoch.topic] = max(self.done_ts.get(epoch.topic, 0.0), newest)
        self.open = [o for o in self.open if o.last > self.done_at(o.topic)]


def mark_key(partition: int) -> str:
    return f"{MARK_PREFIX}{partition}"


def is_mark(doc: object) -> bool:
    """Is this stored table value a partition mark (as JSON)?"""
    return isinstance(doc, dict) and "epochs" in doc


@dataclass
class Epoch:
    topic: str
    partition: int
    first: int
    last: int
    wall_ms: int
    records: list[Record]
    watermark: dict | None = None  # to start from (a re-run); None: the live one
    rerun: bool = False
    # Had the partition's touchpoints records not read yet when the epoch was computed?
    # Its ticks then move no watermark (streams.core.eventtime). Decided live, recorded
    # with the intent, so a re-run decides alike; None: not decided yet.
    behind: bool | None = None

    def token(self, table: str) -> str:
        """The deduplication token of this epoch's insert into `table`."""
        text = f"{table};{self.topic}/{self.partition}/{self.first}-{self.last}"
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def open(self, watermark: dict | None) -> OpenEpoch:
        behind = bool(self.behind)
        return OpenEpoch(self.topic, self.first, self.last, self.wall_ms, watermark, behind)


@dataclass(frozen=True)
class Missing:
    """Records a re-run needs that the batch did not bring: fetch [first, last]."""

    topic: str
    partition: int
    first: int
    last: int


def plan(
    records: list[Record], mark: PartitionMark, wall_ms: int
) -> tuple[list[Epoch], list[Missing]]:
    """The epochs of one partition's records in a batch (in offset order per topic), and
    the offsets they lack.

    Records at or below `done` are skipped (their effects are durable; Faust's commit
    lagged). An open epoch is run again over exactly its offsets, with its clock and
    watermark; the records after it form a new epoch per topic. Offsets from `done` + 1
    to the batch's last record (or an open epoch's last) that the batch did not bring
    are missing: a re-run needs them, and a consumer that skipped records (Faust can
    drop the first records after a restart) must not lose them. The caller fetches
    them and plans again; a gap that stays (transaction markers, records the broker
    deleted) is no record."""
    epochs: list[Epoch] = []
    by_topic: dict[str, list[Record]] = {}
    for record in records:
        if not mark.is_done(record):
            by_topic.setdefault(record.topic, []).append(record)
    missing = [gap for pending in by_topic.values() for gap in _gaps(pending, mark)]
    for was in mark.open:
        if was.last <= mark.done_at(was.topic) or was.topic not in by_topic:
            continue
        pending = by_topic[was.topic]
        head = [r for r in pending if r.offset <= was.last]
        by_topic[was.topic] = pending[len(head) :]
        epochs.append(
            Epoch(
                was.topic,
                pending[0].partition,
                was.first,
                was.last,
                was.wall_ms,
                head,
                was.watermark,
                rerun=True,
                behind=was.behind,
            )
        )
    for topic, pending in by_topic.items():
        if pending:
            epochs.append(
                Epoch(topic, pending[0].partition, pending[0].offset, pending[-1].offset, wall_ms,
                      pending)
            )  # fmt: skip
    return epochs, missing


def _gaps(pending: list[Record], mark: PartitionMark) -> list[Missing]:
    """The offset ranges one topic's `pending` records (in offset order) leave out, from
    the first offset not yet durable to the last one the batch or an open epoch needs."""
    topic, partition = pending[0].topic, pending[0].partition
    reruns = [o for o in mark.open if o.topic == topic and o.last > mark.done_at(topic)]
    if topic in mark.done:
        expected = mark.done[topic] + 1
    else:  # nothing durable yet: only a crashed first epoch says where the topic starts
        expected = min((o.first for o in reruns), default=pending[0].offset)
    gaps: list[Missing] = []
    for record in pending:
        if record.offset > expected:
            gaps.append(Missing(topic, partition, expected, record.offset - 1))
        expected = max(expected, record.offset + 1)
    needed = max((o.last for o in reruns), default=-1)
    if needed >= expected:
        gaps.append(Missing(topic, partition, expected, needed))
    return gaps


def records_wait(end: int | None, read_to: int) -> bool:
    """Do records of a partition wait to be read after offset `read_to`? `end` is the
    offset its next record will get (None: not known yet). One offset is not a record:
    a transactional producer ends each transaction with a marker, which takes an offset
    no consumer sees."""
    return end is not None and end > read_to + 2


def reads(missing: list[Missing], limit: int) -> tuple[list[Missing], list[Missing]]:
    """How to fetch `missing`: one read per topic partition, from its first gap to its
    last (a transactional producer's markers leave a gap per transaction: one read, not
    one each), and the gaps of more than `limit` offsets, which are not read."""
    wanted: dict[tuple[str, int], list[Missing]] = {}
    refused: list[Missing] = []
    for gap in missing:
        if gap.last - gap.first + 1 > limit:
            refused.append(gap)
        else:
            wanted.setdefault((gap.topic, gap.partition), []).append(gap)
    spans = [
        Missing(topic, partition, min(g.first for g in gaps), max(g.last for g in gaps))
        for (topic, partition), gaps in wanted.items()
    ]
    return spans, refused


def watermark_json(mark: Watermark | None) -> dict | None:
    return None if mark is None else asdict(mark)


def watermark_from(doc: dict) -> Watermark:
    return Watermark(**doc)
