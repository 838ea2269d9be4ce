"""`parcours bench-memory`: what a worker's memory grows by per customer key.

A real worker on the local broker and the embedded ClickHouse takes a warm-up batch of
one-visit anonymous ids (the first batch also grows the engine's caches, the buffers and
the allocator's arenas), then two more batches of as many new ids: their growth, divided
by their keys, is what each key costs to keep.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from streams.dev.local_stack import LocalBroker
from streams.edge.produce import produce


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def visits(prefix: str, count: int, start: datetime) -> list[tuple[bytes, bytes]]:
    """One site visit each of `count` anonymous ids, 50 ms apart."""
    messages = []
    for n in range(count):
        key = f"{prefix}-{n}"
        event = {
            "event_id": f"{prefix}-e{n}",
            "anonymous_id": key,
            "type": "site_visit",
            "ts": (start + timedelta(milliseconds=50 * n)).isoformat(timespec="milliseconds"),
            "channel": "web",
            "source": "site",
        }
        messages.append((key.encode(), orjson.dumps(event)))
    return messages


def run(keys: int, data_dir: Path, store: str) -> dict:
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    start = datetime.now(UTC) - timedelta(minutes=30)
    figures: dict = {"keys_per_batch": keys, "store": store}
    with (
        LocalBroker(log_path=data_dir / "broker.log") as broker,
        broker.worker(data_dir, PARCOURS_STORE=store) as worker,
    ):
        assert worker.process is not None
        landed = 0
        for batch in ("idle", "first", "second", "third"):
            count = 1 if batch == "idle" else keys
            produce(broker.bootstrap, "touchpoints", visits(batch, count, start))
            landed += count
            worker.wait_for_rows({"touchpoints": landed}, timeout=600)
            time.sleep(3)  # let the changelog and the sinks settle
            figures[f"rss_after_{batch}_mb"] = round(rss_bytes(worker.pid) / 1e6, 1)
            print(f"  {batch}: {figures[f'rss_after_{batch}_mb']:,} MB", flush=True)
    grown = figures["rss_after_third_mb"] - figures["rss_after_first_mb"]
    figures["bytes_per_key"] = round(grown * 1e6 / (2 * keys))
    return figures
