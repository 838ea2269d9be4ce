"""Each partition's entry watermark, told to the other partitions after the touchpoints
it sent them (see streams.core.eventtime), by one task and a producer of its own.

A tell is sent once the batch's messages are acknowledged, so it follows the touchpoints
it covers on their partition. Nothing waits for it: not the batch, nor the drains of the
worker's producer before its state writes (streams.pipeline.durable), so a tell the
broker cannot take yet (one that lost the topic) holds up no batch; it expires in the
client. Only the newest tell of a pair of partitions waits to be sent, and a tell lost
in a crash costs nothing: the next one says more.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

log = logging.getLogger("parcours.worker")


class Tells:
    def __init__(self, topic: str, hosts: list[str]) -> None:
        self.topic, self.hosts = topic, hosts
        self.pending: dict[tuple[int, int], bytes] = {}  # (from, to) -> the newest tell
        self.ready = asyncio.Event()

    def put(self, tells: list[tuple[int, int, bytes]]) -> None:
        """(from partition, to partition, value) to send after what was sent before."""
        for source, to, value in tells:
            self.pending.pop((source, to), None)  # the newer one goes to the back
            self.pending[source, to] = value
        if tells:
            self.ready.set()

    async def run(self) -> None:
        """Send tells as they come, oldest first; runs for the worker's life."""
        producer = AIOKafkaProducer(bootstrap_servers=self.hosts, linger_ms=0)
        await producer.start()
        try:
            while True:
                await self.ready.wait()
                self.ready.clear()
                while self.pending:
                    source, to = next(iter(self.pending))
                    value = self.pending.pop((source, to))
                    try:  # queued in the client, not awaited: see the module docstring
                        await producer.send(self.topic, value, partition=to)
                    except Exception as exc:  # the next tell says more
                        log.warning("a watermark tell to partition %d was not sent: %s", to, exc)
        finally:
            await producer.stop()


class Shortcuts:
    """When a tell may skip the broker: from partition q to a partition p this process
    owns, once p has computed every message q sent it (the touchpoints a tell covers
    reach p through the broker; a tell applied in memory must not overtake them). Only a
    lower bound is ever applied, so a tell taken in memory and lost in a restart or a
    rebalance costs nothing but waiting for the next one. On the touchpoints' usual way
    (keyed by customer) nothing is forwarded, and every tell is taken in memory: the
    journeys wait for no round trip through the broker."""

    def __init__(self) -> None:
        self.unacked: set[int] = set()  # partitions whose sends to the topic wait for acks
        self.sent: dict[tuple[int, int], int] = {}  # (from, to) -> offset of the last send
        self.read: dict[int, int] = {}  # partition -> last offset of the topic computed
        self.floor: dict[int, int] = {}  # partition -> last offset when first looked at

    def sending(self, source: int) -> None:
        self.unacked.add(source)

    def acked(self, source: int, partition: int, offset: int) -> None:
        self.sent[source, partition] = max(self.sent.get((source, partition), -1), offset)

    def all_acked(self) -> None:
        self.unacked.clear()

    def computed(self, partition: int, offset: int) -> None:
        self.read[partition] = max(self.read.get(partition, -1), offset)

    def direct(self, source: int, partition: int, end: int | None) -> bool:
        """May `source` tell `partition` in memory? `end`: the offset the partition's next
        message will get, as the consumer last saw it (None: not known yet)."""
        if source in self.unacked:
            return False
        if partition not in self.floor:
            if end is None:
                return False
            self.floor[partition] = end - 1  # what was there before: maybe forwards
        needed = max(self.floor[partition], self.sent.get((source, partition), -1))
        return self.read.get(partition, -1) >= needed
