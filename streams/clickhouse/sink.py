"""Write batches to ClickHouse from a thread: transient failures retried, permanent ones
isolated to the rows that cause them.

clickhouse-connect's embedded (chDB) client has no async API, so inserts run on
one dedicated thread; the agent awaits them, which is what holds back its
offset commit until ClickHouse has the rows. A failed insert is retried with
the same deduplication token (the batch's offset ranges), so a retry that had
in fact succeeded is dropped by ClickHouse instead of doubling the rows.

Transient failures (connection, timeouts, too many parts, memory) are retried with
jittered backoff, for as long as it takes. A permanent one (ClickHouse refuses the rows
themselves, or the client cannot encode them) splits the batch in halves until the bad
rows are found; those go to `on_rejected` (the worker dead-letters them as
`sink_rejected`) and the rest are written. A batch is inserted one partition (month) at a
time, so a legal batch is never refused for spanning many months.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError

from streams import metrics
from streams.clickhouse.rows import PARTITIONED_BY

log = logging.getLogger(__name__)
T = TypeVar("T")  # what a function run on the sink thread returns

# Server errors worth retrying: the rows are fine, the server is not (yet).
TRANSIENT_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS (merges catch up); a batch's months are inserted apart
    319,  # UNKNOWN_STATUS_OF_INSERT
    394,  # QUERY_WAS_CANCELLED
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
})  # fmt: skip
_CODE = re.compile(r"Code: (\d+)")
Rejected = Callable[[str, Sequence[str], Sequence, str], Awaitable[None]]


def is_permanent(exc: BaseException) -> bool:
    """Will the same insert fail again however often it is retried?"""
    if isinstance(exc, DataError | ValueError | TypeError | OverflowError):
        return True  # the client cannot encode the rows
    code = _CODE.search(str(exc)) if isinstance(exc, DatabaseError) else None
    return code is not None and int(code.group(1)) not in TRANSIENT_CODES


def by_partition(table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> list[list]:
    """The rows grouped by the table's monthly partition, in first-seen order."""
    column = PARTITIONED_BY.get(table)
    if column is None or column not in columns:
        return [list(rows)]
    at = list(columns).index(column)
    groups: dict[object, list] = {}
    for row in rows:
        value = row[at]
        month = (value.year, value.month) if isinstance(value, datetime) else None
        groups.setdefault(month, []).append(row)
    return list(groups.values())


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

    def run_sync(self, fn: Callable[[Client], T]) -> T:
        """Run fn(client) on the sink thread from synchronous code (start-up)."""
        return self._executor.submit(lambda: fn(self._client_now())).result()

    async def write(
        self,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence],
        token: str,
        on_rejected: Rejected | None = None,
    ) -> None:
        """Insert `rows`; return once ClickHouse has all of them but those it refuses for
        good, which go to `on_rejected(table, columns, row, error)` (logged if None)."""
        if not rows:
            return
        metrics.SINK_BACKLOG.labels(table).inc(len(rows))
        groups = by_partition(table, columns, rows)
        for n, group in enumerate(groups):
            part_token = token if len(groups) == 1 else f"{token}/m{n}"
            await self._write_isolating(table, columns, group, part_token, on_rejected)
        metrics.SINK_BACKLOG.labels(table).dec(len(rows))

    async def _write_isolating(
        self,
        table: str,
        columns: Sequence[str],
        rows: list,
        token: str,
        on_rejected: Rejected | None,
    ) -> None:
        try:
            await self._insert_retrying(table, columns, rows, token)
            return
        except Exception as exc:
            if len(rows) > 1:  # halves, each with its own token, until the bad rows show
                mid = len(rows) // 2
                await self._write_isolating(table, columns, rows[:mid], f"{token}/a", on_rejected)
                await self._write_isolating(table, columns, rows[mid:], f"{token}/b", on_rejected)
                return
            error = str(exc)[:1000]
        metrics.SINK_REJECTED.labels(table).inc()
        if on_rejected is None:
            log.error("ClickHouse refused a row of %s for good: %s", table, error)
        else:
            await on_rejected(table, columns, rows[0], error)

    async def _insert_retrying(
        self, table: str, columns: Sequence[str], rows: list, token: str
    ) -> None:
        """Insert; retry transient failures with jittered backoff; raise permanent ones."""
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
            except Exception as exc:
                metrics.SINK_FAILURES.labels(table).inc()
                if is_permanent(exc):
                    raise
                wait = backoff * random.uniform(0.5, 1.5)  # jitter: workers do not retry in step
                log.warning("insert into %s failed (%s); retrying in %.1fs", table, exc, wait)
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            metrics.SINK_INSERT_SECONDS.labels(table).observe(time.perf_counter() - started)
            metrics.SINK_ROWS.labels(table).inc(len(rows))
            metrics.SINK_BATCHES.labels(table).inc()
            metrics.SINK_LAST_WRITE.labels(table).set(time.time())
            return

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
