"""Table writes that are durable before the worker goes on, or a loud failure.

The epoch protocol (streams.pipeline.epochs) writes a batch's states before the marks
that say it is done. That order holds only if each write reached the broker, and Faust
promises neither: its flush returns once its send buffer has sent nothing for 0.1 s,
records still queued, and a changelog record the broker refuses is only logged. So the
runner writes through `write_durably`: it drains the buffer, counts the changelog
records refused meanwhile (`ChangelogWatch`, a Faust sensor), writes again (the same
keys and values: the changelog is compacted) while some were, and raises after
`attempts` tries, before anything later is written. The agent then restarts, and the
batch runs again from the last mark that is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust

from streams import metrics

log = logging.getLogger(__name__)

ATTEMPTS = 5
STILL_QUEUED_EVERY_S = 30.0  # how often a drain that waits says so


class ChangelogWriteFailed(RuntimeError):
    pass


class ChangelogWatch(faust.Sensor):
    """Counts the changelog records the broker refused (every table of the app)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refused = 0
        self.last_error: BaseException | None = None

    def on_send_initiated(self, producer, topic: str, message, keysize: int, valsize: int):
        return topic  # handed to on_send_error as its state

    def on_send_error(self, producer, exc: BaseException, state: Any) -> None:
        if isinstance(state, str) and state.endswith("-changelog"):
            self.refused += 1
            self.last_error = exc
            metrics.CHANGELOG_REFUSED.inc()


async def drain(producer: Any, clock: Callable[[], float] = time.monotonic) -> None:
    """Until Faust's send buffer is empty and the client has sent what it holds."""
    started = said = clock()
    while producer.buffer.size:
        await producer.buffer.flush()
        now = clock()
        if now - said >= STILL_QUEUED_EVERY_S:
            said = now
            log.warning(
                "%d table records still wait to be sent after %.0f s: is the broker up?",
                producer.buffer.size,
                said - started,
            )
    await producer.flush()
    await asyncio.sleep(0)  # the sends' done-callbacks (the watch) run before we look


async def write_durably(
    write: Callable[[], None],
    producer: Any,
    watch: ChangelogWatch,
    what: str,
    attempts: int = ATTEMPTS,
    backoff_s: float = 1.0,
) -> None:
    """`write()` (table assignments), then wait until the broker accepted every record;
    write again while it refused some; raise `ChangelogWriteFailed` after `attempts`."""
    for attempt in range(1, attempts + 1):
        refused_before = watch.refused
        write()
        await drain(producer)
        refused = watch.refused - refused_before
        if not refused:
            return
        log.warning(
            "the broker refused %d changelog records of %s (attempt %d of %d): %s",
            refused, what, attempt, attempts, watch.last_error,
        )  # fmt: skip
        if attempt < attempts:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
    raise ChangelogWriteFailed(
        f"the broker refused changelog records of {what} {attempts} times "
        f"({watch.last_error}); nothing later is written: the batch runs again from "
        "the last durable mark"
    )
