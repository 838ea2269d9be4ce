"""Epochs: which records a batch runs, and how a crashed epoch is run again exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.pipeline.epochs import (
    Missing,
    OpenEpoch,
    PartitionMark,
    Record,
    plan,
    reads,
    records_wait,
)

T, R = "touchpoints", "touchpoints-resolved"


def records(topic: str, first: int, last: int, ts: float = 100.0) -> list[Record]:
    return [Record(b"k", b"{}", topic, 2, o, ts) for o in range(first, last + 1)]


def spans(epochs) -> list[tuple[str, int, int, bool]]:
    return [(e.topic, e.first, e.last, e.rerun) for e in epochs]


def test_a_fresh_partition_makes_one_epoch_per_topic_with_the_batch_clock():
    epochs, missing = plan(records(T, 0, 9) + records(R, 0, 2), PartitionMark(), wall_ms=7)
    assert spans(epochs) == [(T, 0, 9, False), (R, 0, 2, False)]
    assert {e.wall_ms for e in epochs} == {7}
    assert missing == []


def test_records_whose_effects_are_durable_are_skipped():
    mark = PartitionMark()
    first, _ = plan(records(T, 0, 9), mark, wall_ms=1)
    mark.finish(first[0])
    # Faust's commit lagged the mark: the restart re-delivers 5..9 with new ones.
    epochs, _ = plan(records(T, 5, 14), mark, wall_ms=2)
    assert spans(epochs) == [(T, 10, 14, False)]


def test_an_open_epoch_runs_again_over_exactly_its_offsets_with_its_clock_and_watermark():
    watermark = {"lateness_ms": 1, "idle_timeout_ms": 1, "value": 5, "max_event_ms": 6,
                 "last_arrival_wall_ms": 3}  # fmt: skip
    mark = PartitionMark(done={T: 4}, open=[OpenEpoch(T, 5, 12, 1234, watermark)])
    epochs, missing = plan(records(T, 5, 20), mark, wall_ms=9999)
    assert spans(epochs) == [(T, 5, 12, True), (T, 13, 20, False)]
    rerun = epochs[0]
    assert [r.offset for r in rerun.records] == list(range(5, 13))
    assert (rerun.wall_ms, rerun.watermark) == (1234, watermark)
    assert rerun.token("journeys") == plan(records(T, 5, 12), mark, 1)[0][0].token("journeys")
    assert missing == []


def test_what_a_short_batch_lacks_of_an_open_epoch_is_fetched():
    mark = PartitionMark(done={T: 4}, open=[OpenEpoch(T, 5, 12, 1234, None)])
    epochs, missing = plan(records(T, 5, 8), mark, wall_ms=1)
    assert spans(epochs) == [(T, 5, 12, True)]
    assert missing == [Missing(T, 2, 9, 12)]


def test_an_open_epoch_of_a_topic_absent_from_the_batch_stays_open():
    mark = PartitionMark(done={T: 4}, open=[OpenEpoch(T, 5, 12, 1234, None)])
    epochs, missing = plan(records(R, 0, 3), mark, wall_ms=1)
    assert spans(epochs) == [(R, 0, 3, False)]
    assert mark.open == [OpenEpoch(T, 5, 12, 1234, None)]
    assert missing == []


@pytest.mark.parametrize("delivered_from", [0, 1])
def test_a_log_the_broker_started_over_is_not_taken_for_a_redelivery(delivered_from):
    """The broker lost its data: offsets 0.. again, with records sent after the mark.
    What the consumer skipped of the new log's head (Faust can drop the first record
    after the group rejoins) is fetched, not lost."""
    mark = PartitionMark()
    first, _ = plan(records(T, 0, 9, ts=100.0), mark, wall_ms=1)
    mark.finish(first[0])
    epochs, missing = plan(records(T, delivered_from, 3, ts=200.0), mark, wall_ms=2)
    assert spans(epochs) == [(T, delivered_from, 3, False)]
    assert missing == ([Missing(T, 2, 0, delivered_from - 1)] if delivered_from else [])


def test_tokens_name_the_table_the_topic_the_partition_and_the_offsets():
    (a,), _ = plan(records(T, 0, 9), PartitionMark(), 1)
    (b,), _ = plan(records(T, 0, 10), PartitionMark(), 1)
    (c,), _ = plan(records(R, 0, 9), PartitionMark(), 1)
    tokens = {a.token("journeys"), a.token("leaks"), b.token("journeys"), c.token("journeys")}
    assert len(tokens) == 4


def test_a_mark_survives_its_json_layout():
    mark = PartitionMark({T: 4}, [OpenEpoch(T, 5, 9, 1, None, True)], {"value": 1}, {T: 100.0})
    assert PartitionMark.from_json(mark.to_json()) == mark


def test_records_wait_past_what_was_read_but_a_transaction_marker_is_no_record():
    assert records_wait(end=None, read_to=-1) is False  # nothing fetched yet
    assert records_wait(end=10, read_to=9) is False  # all read
    assert records_wait(end=11, read_to=9) is False  # a marker at offset 10
    assert records_wait(end=12, read_to=9) is True
    assert records_wait(end=5000, read_to=-1) is True  # a backlog, nothing read yet


def test_a_re_run_decides_behind_as_its_first_run_did():
    """Whether ticks move the watermark is recorded with the intent: a mark from before
    the flag (five fields) reads as not behind."""
    old = {"epochs": 1, "done": {T: 4}, "open": [[T, 5, 12, 1234, None]]}
    assert PartitionMark.from_json(old).open == [OpenEpoch(T, 5, 12, 1234, None, False)]
    mark = PartitionMark(done={T: 4}, open=[OpenEpoch(T, 5, 12, 1234, None, True)])
    epochs, _ = plan(records(T, 5, 20), mark, wall_ms=9999)
    assert [(e.rerun, e.behind) for e in epochs] == [(True, True), (False, None)]


def planned_as_the_worker_does(batch: list[Record], mark: PartitionMark, log: list[Record]):
    """plan(), then what streams.pipeline.runner does with what is missing: fetch it
    from `log` (the partition's records) and plan again."""
    epochs, missing = plan(batch, mark, wall_ms=99)
    if missing:
        wanted = {o for m in missing for o in range(m.first, m.last + 1)}
        merged = {r.offset: r for r in [*batch, *(r for r in log if r.offset in wanted)]}
        epochs, _ = plan([merged[o] for o in sorted(merged)], mark, wall_ms=99)
    return epochs


def test_records_the_consumer_skipped_after_the_mark_are_missing():
    mark = PartitionMark(done={T: 20})
    epochs, missing = plan(records(T, 22, 30) + records(T, 33, 36), mark, wall_ms=1)
    assert missing == [Missing(T, 2, 21, 21), Missing(T, 2, 31, 32)]
    assert spans(epochs) == [(T, 22, 36, False)]  # the caller fetches, then plans again


def test_a_rerun_missing_its_head_fetches_it():
    mark = PartitionMark(done={T: 4}, open=[OpenEpoch(T, 5, 12, 1234, None)])
    _, missing = plan(records(T, 7, 20), mark, wall_ms=1)
    assert missing == [Missing(T, 2, 5, 6)]


def test_gaps_are_read_once_per_topic_partition_and_huge_ones_not_at_all():
    gaps = [Missing(T, 2, 21, 21), Missing(T, 2, 31, 32), Missing(R, 2, 5, 5),
            Missing(T, 3, 100, 100_099), Missing(R, 3, 7, 100_007)]  # fmt: skip
    spans, refused = reads(gaps, limit=100_000)
    assert spans == [Missing(T, 2, 21, 32), Missing(R, 2, 5, 5), Missing(T, 3, 100, 100_099)]
    assert refused == [Missing(R, 3, 7, 100_007)]  # 100,001 offsets: an offset reset


def test_a_first_epoch_starts_where_its_first_record_is():
    _, missing = plan(records(T, 40, 45), PartitionMark(), wall_ms=1)
    assert missing == []  # nothing durable: no offset is expected before the first


@given(
    st.lists(st.integers(1, 30), min_size=1, max_size=8),
    st.integers(0, 7),
    st.sets(st.integers(0, 250), max_size=20),
)
def test_however_batches_are_cut_and_whatever_the_consumer_skips_each_offset_runs_once(
    sizes, crash, skipped
):
    """Batches of the sizes given; the `crash`-th epoch's effects are lost after its
    intent; the consumer drops the offsets in `skipped` when it re-delivers. Replaying
    from the last durable offset (with batches cut anew) runs every offset exactly once
    outside the lost epoch, and the lost one exactly as first cut."""
    mark, offset, ran, lost = PartitionMark(), 0, [], None
    for n, size in enumerate(sizes):
        (epoch,), _ = plan(records(T, offset, offset + size - 1), mark, wall_ms=n)
        offset += size
        if n == crash:
            mark.open = [epoch.open(None)]
            lost = (epoch.first, epoch.last)
            break
        mark.finish(epoch)
        ran.append((epoch.first, epoch.last))
    # Restart: Faust re-delivers from an offset at or before the mark, cut in 3s,
    # dropping the skipped offsets (a batch is never empty: it has a last record).
    start, end = 0, offset + 5  # 5 more records came after the crash
    log = records(T, 0, end)
    while start <= end:
        last = min(start + 2, end)
        batch = [r for r in records(T, start, last) if r.offset not in skipped or r.offset == last]
        for epoch in planned_as_the_worker_does(batch, mark, log):
            if epoch.rerun:
                assert (epoch.first, epoch.last) == lost
            assert [r.offset for r in epoch.records] == list(range(epoch.first, epoch.last + 1))
            ran.append((epoch.first, epoch.last))
            mark.finish(epoch)
        start += 3
    covered = sorted(o for first, last in ran for o in range(first, last + 1))
    assert covered == list(range(end + 1))
