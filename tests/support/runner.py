"""The epoch runner (streams.pipeline.runner) without a broker: a stand-in for Faust's
consumer (assignment and end offsets) and its events, a dict for the table, and the
durable writes captured instead of sent."""

from __future__ import annotations

import dataclasses
import time

import orjson
from faust.types import TP

from streams.config import load_config
from streams.config.settings import TOUCHPOINTS, TOUCHPOINTS_RESOLVED, Settings
from streams.pipeline.recorder import Recorder
from streams.pipeline.runner import EpochRunner

SETTINGS = Settings(partitions=1)
TOUCH, RESOLVED = SETTINGS.topic(TOUCHPOINTS), SETTINGS.topic(TOUCHPOINTS_RESOLVED)
CONFIG = load_config(SETTINGS.config_path)


class Consumer:
    def __init__(self, end: int) -> None:
        self.end = end  # the offset the next touchpoint will get

    def assignment(self) -> set[TP]:
        return {TP(TOUCH, 0), TP(RESOLVED, 0)}

    def highwater(self, tp: TP) -> int:
        return self.end


class App:
    def __init__(self, end: int) -> None:
        self.consumer = Consumer(end)
        self.sensors: set = set()


class Message:
    def __init__(self, topic: str, offset: int, key: bytes | None) -> None:
        self.topic, self.partition, self.offset, self.key = topic, 0, offset, key
        self.timestamp = time.time()


class Event:  # what Faust's take_events yields: a message and its value
    def __init__(self, message: Message, value: bytes) -> None:
        self.message, self.value = message, value


def record(topic: str, offset: int, doc: dict, key: bytes | None = None) -> Event:
    return Event(Message(topic, offset, key), orjson.dumps(doc))


def runner(end: int, captured: list, partitions: int = 1) -> EpochRunner:
    """A runner on partition 0 (of `partitions`) whose `_make_durable` appends each
    batch's effects to `captured` instead of writing them."""
    config = dataclasses.replace(CONFIG, allowed_lateness_ms=1000, idle_timeout_ms=5000)
    settings = dataclasses.replace(SETTINGS, partitions=partitions)
    run = EpochRunner(App(end), {}, settings, config, None, Recorder(config, TOUCH), {}, None)

    async def make_durable(done, pending, marks) -> None:
        captured.extend(done)

    run._make_durable = make_durable  # type: ignore[method-assign]
    return run
