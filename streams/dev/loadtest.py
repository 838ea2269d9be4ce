"""`parcours load-collector`: how many events/s a running collector accepts.

Concurrent clients POST batches of valid synthetic events (unique ids) as fast as the
collector answers; every answer must be a 202 accepting the whole batch. Prints
events/s, requests/s and latency percentiles of the answers.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson


@dataclass
class LoadResult:
    events: int
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def report(self) -> str:
        return (
            f"{self.events:,} events in {self.requests:,} requests, {self.seconds:.1f}s: "
            f"{self.events_per_second:,.0f} events/s, {self.requests / self.seconds:,.0f} req/s; "
            f"latency p50 {self.percentile(50):.1f} ms, p95 {self.percentile(95):.1f} ms, "
            f"p99 {self.percentile(99):.1f} ms, mean {statistics.mean(self.latencies_ms):.1f} ms"
        )


def batch(run: str, number: int, size: int) -> bytes:
    ts = datetime.now(UTC).isoformat(timespec="milliseconds")
    return orjson.dumps(
        [
            {
                "event_id": f"load-{run}-{number}-{i}",
                "customer_id": f"load-{run}-{(number * size + i) % 1000}",
                "type": "site_visit",
                "ts": ts,
                "channel": "web",
            }
            for i in range(size)
        ]
    )


async def load(url: str, write_key: str, events: int, batch_size: int, clients: int) -> LoadResult:
    run = f"{time.time_ns():x}"
    requests = -(-events // batch_size)
    bodies = [batch(run, n, batch_size) for n in range(requests)]  # built before timing
    latencies: list[float] = []
    queue = iter(bodies)
    headers = {"Authorization": f"Bearer {write_key}", "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        for body in queue:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                answer = await response.json()
                if response.status != 202 or answer["accepted"] != batch_size:
                    raise RuntimeError(f"collector answered {response.status}: {answer}")
            latencies.append((time.perf_counter() - started) * 1000)

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        seconds = time.perf_counter() - started
    return LoadResult(requests * batch_size, requests, seconds, latencies)
