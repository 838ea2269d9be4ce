"""Write batches to ClickHouse from a thread, retrying until they are accepted.

clickhouse-connect's embedded (chDB) client has no async API, so inserts run on
one dedicated thread; the agent awaits them, which is what holds back its
offset commit until ClickHouse has the rows. A failed insert is retried with
the same deduplication token (the batch's offset ranges), so a retry that had
in fact succeeded is dropped by ClickHouse instead of doubling the rows.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clickhouse_connect.driver.client import Client

from streams import metrics

log = logging.getLogger(__name__)


def batch_token(table: str, offsets: Iterable[tuple[str, int, int]]) -> str:
    """Deduplication token of a batch: the table and the first/last offset per partition."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for topic, partition, offset in offsets:
        bounds = ranges.setdefault((topic, partition), [offset, offset])
        bounds[0] = min(bounds[0], offset)
        bounds[1] = max(bounds[1], offset)
    text = (
        table + ";" + ";".join(f"{t}/{p}/{lo}-{hi}" for (t, p), (lo, hi) in sorted(ranges.items()))
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class ClickHouseSink:
    """Inserts on one thread; `write` returns only once ClickHouse accepted the rows."""

    def __init__(
        self,
        client_factory: Callable[[], Client],
        *,
        max_backoff_seconds: float = 30.0,
        fault_file: Path | None = None,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse-sink")
        self._client_factory = client_factory
        self._client: Client | None = None
        self._max_backoff = max_backoff_seconds
        self._fault_file = fault_file

    def _client_now(self) -> Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    async def run(self, fn: Callable[[Client], object]) -> object:
        """Run fn(client) on the sink thread (for migrations and queries)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._client_now()))

    def run_sync(self, fn: Callable[[Client], object]) -> object:
        """Run fn(client) on the sink thread from synchronous code (start-up)."""
        return self._executor.submit(lambda: fn(self._client_now())).result()

    async def write(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence], token: str
    ) -> None:
        if not rows:
            return
        metrics.SINK_BACKLOG.labels(table).inc(len(rows))
        backoff = 0.25
        while True:
            started = time.perf_counter()
            try:
                if self._fault_file is not None and self._fault_file.exists():
                    raise ConnectionError(f"fault drill: {self._fault_file} exists")
                await self.run(
                    lambda client: client.insert(
                        table,
                        rows,
                        column_names=list(columns),
                        settings={"insert_deduplication_token": token},
                    )
                )
            except Exception as exc:  # any failure: keep the rows, wait, retry
                metrics.SINK_FAILURES.labels(table).inc()
                log.warning("insert into %s failed (%s); retrying in %.1fs", table, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            metrics.SINK_INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
            metrics.SINK_ROWS.labels(table).inc(len(rows))
            metrics.SINK_BATCHES.labels(table).inc()
            metrics.SINK_BACKLOG.labels(table).dec(len(rows))
            metrics.SINK_LAST_WRITE.labels(table).set(time.time())
            return

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
