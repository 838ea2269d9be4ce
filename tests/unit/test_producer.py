"""The producer helper: checks events before sending, batches per key, flushes on exit.

The sends go to the real local broker and are read back with a consumer; the
simulator's run goes on through a real worker into ClickHouse.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
import pytest

from streams.config import load_config
from streams.config.settings import Settings
from streams.edge.producer import InvalidEvent, TouchpointProducer
from tests.support.events import LOCAL, make_event

TYPES = load_config(LOCAL.config_path).touchpoint_types


def test_a_bad_event_raises_where_it_is_made_and_names_the_field():
    async def scenario():
        # never started; checks the types too
        producer = TouchpointProducer("127.0.0.1:1", settings=LOCAL, known_types=TYPES)
        good = make_event(1)
        producer.check(good)
        with pytest.raises(InvalidEvent, match=r"\$\.ts") as bad_ts:
            producer.check(make_event(2, ts="yesterday"))
        with pytest.raises(InvalidEvent, match="teleport") as unknown:
            await producer.send_many([good, make_event(3, type="teleport")])
        with pytest.raises(InvalidEvent, match="needs customer_id or anonymous_id"):
            producer.check(make_event(4, customer_id=None))
        # Nothing of a call with a bad event was queued: stopping sends nothing.
        await producer.stop()
        return bad_ts.value, unknown.value

    bad_ts, unknown = asyncio.run(scenario())
    assert (bad_ts.reason, bad_ts.path) == ("schema_violation", "$.ts")
    assert (unknown.reason, unknown.path) == ("unknown_type", "$.type")


def test_the_producer_needs_no_server_configuration_and_fills_in_ids_and_times(tmp_path):
    settings = Settings(producer_idempotent=False, config_path=tmp_path / "no-such.yaml")
    # Any well-formed type: the worker, which has the configuration, checks the type.
    event = make_event(1, type="teleport", event_id=None, ts=None)

    async def scenario():
        producer = TouchpointProducer("127.0.0.1:1", settings=settings)  # never started
        before = time.time() * 1000
        ts_ms = producer.check(event)
        assert before - 1 <= ts_ms <= time.time() * 1000 + 1
        ids = await producer.send_many([event, make_event(2, event_id="mine")])
        batch = producer._batches.pop(next(iter(producer._batches)))
        await producer.stop()  # nothing left to send
        return ts_ms, ids, batch

    ts_ms, ids, batch = asyncio.run(scenario())
    assert "event_id" not in event  # the caller's dict is left alone
    made = uuid.UUID(ids[0])
    assert (made.version, ids[1]) == (7, "mine")
    assert [e["event_id"] for e in batch] == ids
    assert abs((made.int >> 80) - ts_ms) <= 5  # the id's time is the event's time


def test_settings_are_checked():
    with pytest.raises(ValueError, match="KAFKA_BROKER"):
        TouchpointProducer(settings=Settings(broker=""))
    with pytest.raises(ValueError, match="max_events"):
        TouchpointProducer("127.0.0.1:1", settings=LOCAL, max_events=0)


@pytest.mark.e2e
def test_a_batch_picked_by_two_senders_at_once_is_sent_once():
    """The linger task and send_many can both pick a batch while a send waits."""

    class SlowClient:  # a Kafka client whose buffer is full for a moment
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future:
            await asyncio.sleep(0.01)
            self.sent.append(key)
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    async def race() -> list[bytes]:
        producer = TouchpointProducer("127.0.0.1:9")
        producer._producer = client = SlowClient()
        await producer.send_many([make_event(1), make_event(2)])  # one open batch, key c-1
        [partition] = producer._batches  # the batch of c-1's partition
        await asyncio.gather(*(producer._send_batch(partition) for _ in range(3)))
        return client.sent

    assert asyncio.run(race()) == [b"c-1"]


class OneSlotClient:
    """A Kafka client whose buffer for the partition holds one message, as aiokafka's does
    under load: a send waits until the message ahead drains, and when it does, whichever
    send runs first takes the room, a newcomer before the sends that waited."""

    def __init__(self) -> None:
        self.sent: list[str] = []  # event ids, in the order the client took them
        self.busy = False
        self._drained: asyncio.Future | None = None

    async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future:
        while self.busy:
            assert self._drained is not None
            await asyncio.shield(self._drained)
        self.busy = True
        self._drained = asyncio.get_running_loop().create_future()
        self.sent += [e["event_id"] for e in orjson.loads(value)["events"]]
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def drain(self) -> None:
        if self.busy and self._drained is not None:
            self.busy = False
            self._drained.set_result(None)


def test_a_partition_s_envelopes_reach_the_client_in_the_order_they_closed():
    """Under load, the linger task's envelope waited for room while newer envelopes from
    send_many took it first: its events reached the broker a second behind them, and the
    worker dead-lettered them as late."""

    async def scenario() -> list[str]:
        producer = TouchpointProducer("127.0.0.1:9", settings=LOCAL, max_events=1)
        producer._producer = client = OneSlotClient()
        await producer.send(make_event(1))  # takes the room
        waiting = asyncio.create_task(producer.send(make_event(2)))
        await asyncio.sleep(0.01)  # event 2's envelope waits for room
        client.drain()  # its sender is woken, but has not run yet
        newer = asyncio.create_task(producer.send(make_event(3)))
        while not (waiting.done() and newer.done()):
            await asyncio.sleep(0.01)
            client.drain()
        return client.sent

    assert asyncio.run(scenario()) == ["e-1", "e-2", "e-3"]


def test_batches_linger_no_longer_than_asked_when_the_caller_never_pauses():
    """A busy caller never yields to the linger task: batches go out from send itself."""

    class Client:
        def __init__(self) -> None:
            self.sent: list[tuple[float, bytes]] = []

        async def send(self, topic: str, value: bytes, key: bytes) -> asyncio.Future:
            self.sent.append((time.monotonic(), key))
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    async def busy() -> list[tuple[float, bytes]]:
        producer = TouchpointProducer("127.0.0.1:9", linger_seconds=0.05, max_events=10**9)
        producer._producer = client = Client()
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 0.5:  # no await that would let other tasks run
            await producer.send(make_event(n, customer_id=f"c-{n % 7}"))
            n += 1
        return client.sent, started

    sent, started = asyncio.run(busy())
    assert sent, "nothing left within the half second"
    # After its linger (0.05 s), not at the end (0.5 s); slack for a loaded CI machine.
    assert sent[0][0] - started < 0.25


def test_the_package_exports_the_producer_helper_and_nothing_heavy_on_import():
    import streams
    from streams.edge.producer import InvalidEvent, SyncTouchpointProducer, TouchpointProducer

    assert streams.TouchpointProducer is TouchpointProducer
    assert streams.SyncTouchpointProducer is SyncTouchpointProducer
    assert streams.InvalidEvent is InvalidEvent
    with pytest.raises(AttributeError, match="no attribute 'journeys'"):
        _ = streams.journeys
