"""Table writes made durable (streams.pipeline.durable), against a stand-in for Faust's
producer that behaves as its flush does: it returns after 0.1 s without a send, records
still queued, and a refused record only reaches the sensors."""

from __future__ import annotations

import asyncio

import pytest

from streams import metrics
from streams.pipeline import durable
from streams.pipeline.durable import ChangelogWatch, ChangelogWriteFailed, drain, write_durably


class SlowBuffer:
    """Faust's send buffer: each flush sends at most one record (then 0.1 s pass)."""

    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer
        self.queued: list[tuple[str, object]] = []
        self.flushes = 0

    @property
    def size(self) -> int:
        return len(self.queued)

    async def flush(self) -> None:
        self.flushes += 1
        if self.queued:
            self.producer.deliver(*self.queued.pop(0))


class FakeProducer:
    """Delivers to the watch as Faust's topics do: refused records go to on_send_error."""

    def __init__(self, watch: ChangelogWatch, refuse: int = 0) -> None:
        self.watch = watch
        self.buffer = SlowBuffer(self)
        self.refuse = refuse  # the next `refuse` records are refused
        self.accepted: list[tuple[str, object]] = []
        self.client_flushes = 0

    def send_soon(self, topic: str, value: object) -> None:
        self.buffer.queued.append((topic, value))

    def deliver(self, topic: str, value: object) -> None:
        state = self.watch.on_send_initiated(self, topic, value, 0, 0)
        if self.refuse:
            self.refuse -= 1
            self.watch.on_send_error(self, RuntimeError("AlreadyExists"), state)
        else:
            self.accepted.append((topic, value))

    async def flush(self) -> None:
        self.client_flushes += 1


def test_drain_waits_until_the_buffer_is_empty_not_one_flush():
    producer = FakeProducer(ChangelogWatch())
    for i in range(5):
        producer.send_soon("app-state-changelog", i)
    asyncio.run(drain(producer))
    assert producer.buffer.size == 0 and len(producer.accepted) == 5
    assert producer.buffer.flushes == 5 and producer.client_flushes == 1


def test_a_drain_that_waits_says_so(monkeypatch, caplog):
    producer = FakeProducer(ChangelogWatch())
    producer.send_soon("app-state-changelog", 1)
    producer.send_soon("app-state-changelog", 2)
    ticks = iter([0.0, 31.0, 31.0, 40.0, 40.0])  # a minute would pass between flushes
    with caplog.at_level("WARNING"):
        asyncio.run(drain(producer, clock=lambda: next(ticks)))
    assert "1 table records still wait to be sent after 31 s" in caplog.text


def written_by(producer: FakeProducer, values: list[int]):
    return lambda: [producer.send_soon("app-state-changelog", v) for v in values]


def test_records_the_broker_refused_are_written_again_until_accepted(caplog):
    watch = ChangelogWatch()
    producer = FakeProducer(watch, refuse=3)
    before = metrics.CHANGELOG_REFUSED._value.get()
    with caplog.at_level("WARNING"):
        asyncio.run(write_durably(written_by(producer, [1, 2]), producer, watch, "states", 5, 0))
    # 1, 2 refused; 1 refused again, 2 accepted; then both accepted
    assert [v for _, v in producer.accepted] == [2, 1, 2]
    assert watch.refused == 3 and metrics.CHANGELOG_REFUSED._value.get() == before + 3
    assert "refused 2 changelog records of states (attempt 1 of 5)" in caplog.text
    assert "refused 1 changelog records of states (attempt 2 of 5)" in caplog.text


def test_a_broker_that_keeps_refusing_stops_the_batch_after_the_last_attempt():
    watch = ChangelogWatch()
    producer = FakeProducer(watch, refuse=10**6)
    with pytest.raises(ChangelogWriteFailed, match=r"marks 3 times \(AlreadyExists\)"):
        asyncio.run(write_durably(written_by(producer, [1]), producer, watch, "marks", 3, 0))
    assert producer.accepted == [] and watch.refused == 3


def test_only_changelog_records_count():
    """Another topic's send error (an invitation, a dead letter) is not a table write."""
    watch = ChangelogWatch()
    producer = FakeProducer(watch, refuse=1)
    producer.send_soon("survey-invitations", {"id": 1})
    asyncio.run(drain(producer))
    assert watch.refused == 0


def test_backoff_doubles_between_attempts(monkeypatch):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(durable.asyncio, "sleep", sleep)
    watch = ChangelogWatch()
    producer = FakeProducer(watch, refuse=10**6)
    with pytest.raises(ChangelogWriteFailed):
        asyncio.run(write_durably(written_by(producer, [1]), producer, watch, "marks", 4, 0.5))
    assert [s for s in slept if s] == [0.5, 1.0, 2.0]
