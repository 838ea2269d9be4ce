"""Latency of a live stream, for `parcours bench`.

A simulated population sends touchpoints paced at a given rate (event time = the wall
clock at send) to one worker on the local stack. Afterwards the worker's ClickHouse
tells, exactly and per row:
  event → row visible       touchpoints.inserted_at (ClickHouse's clock) - ts
  event → invitation        survey_invitations.decided_at (the worker's clock when it
                            decided) - trigger_at, for invitations a touchpoint or a
                            journey stage triggered.
Invitations are decided in event-time order once the watermark passes their trigger, so
they wait `allowed_lateness` (60 s in the shipped configuration); the bench sets it to
`lateness` (1 s by default: producers batching per key reorder events by a few tens of
milliseconds, and with 0 nearly every event would be late) and says so. They are then
held until their send time (a delay of 30 minutes or more, out of quiet hours); the
bench sets every delay to 0 and drops the quiet hours, so the figure is the pipeline's
own time from a trigger to a published invitation.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from clickhouse_connect.driver.client import Client

from streams.clickhouse.client import connect
from streams.config.settings import Settings
from streams.dev.local_stack import LocalBroker, peak_rss_mb, wait_for, wait_ready
from streams.dev.simulate import Faults, Pace, Summary, deliveries, run
from streams.edge.produce import create_topics
from streams.edge.producer import TouchpointProducer
from streams.outputs import WORKER_TOPICS

WARM_UP_SECONDS = 3.0  # left out of the figures: the first batches meet cold caches
TAIL_SECONDS = 3.0  # left out: the last triggers wait for a tick to pass the watermark
WINDOW = "BETWEEN {since:DateTime64(3, 'UTC')} AND {until:DateTime64(3, 'UTC')}"
TO_ROW = f"""
    SELECT count(), quantiles(0.5, 0.95, 0.99)(dateDiff('ms', ts, inserted_at))
    FROM touchpoints WHERE ts {WINDOW}"""
TO_INVITATION = f"""
    SELECT count(), quantiles(0.5, 0.95, 0.99)(dateDiff('ms', trigger_at, decided_at))
    FROM survey_invitations FINAL
    WHERE trigger IN ('touchpoint', 'completion') AND trigger_at {WINDOW}"""


@dataclass
class Percentiles:
    count: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0

    def text(self) -> str:
        if not self.count:
            return "no samples"
        return (
            f"p50 {self.p50_ms:,.0f} ms, p95 {self.p95_ms:,.0f} ms, p99 {self.p99_ms:,.0f} ms "
            f"({self.count:,} samples)"
        )


@dataclass
class Latency:
    rate_requested: float
    rate_sent: float
    events: int
    lateness: str
    batch_seconds: float
    to_row: Percentiles = field(default_factory=Percentiles)
    to_invitation: Percentiles = field(default_factory=Percentiles)
    worker_peak_rss_mb: float | None = None
    late_events: int = 0  # behind the watermark: kept out of journeys, so of invitations
    landed: int = 0  # touchpoints in ClickHouse when the figures were taken
    longest_compute_s: float = 0.0  # see Throughput.longest_compute_s

    def summary(self) -> str:
        return (
            f"latency at {self.rate_requested:,.0f} events/s requested, "
            f"{self.rate_sent:,.0f} sent ({self.events:,} events; agent batches "
            f"≤{self.batch_seconds:g} s; allowed_lateness {self.lateness}):\n"
            f"  event → row visible in ClickHouse: {self.to_row.text()}\n"
            f"  event → survey invitation decided: {self.to_invitation.text()}\n"
            f"  late events (kept out of journeys): {self.late_events:,}; "
            f"{self.landed:,} of {self.events:,} in ClickHouse; the longest batch computed "
            f"in ≤{self.longest_compute_s:g} s"
        )


def bench_config(source: Path, lateness: str, target: Path) -> Path:
    """`source` with `allowed_lateness` set to `lateness`, every survey delay 0 and no
    quiet hours: the configuration of the latency runs."""
    doc = yaml.safe_load(source.read_text())
    doc.setdefault("event_time", {})["allowed_lateness"] = lateness
    surveys = doc.get("surveys", {})
    surveys.pop("quiet_hours", None)
    for rule in surveys.get("rules", {}).values():
        rule["delay"] = "0s"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def percentiles(client: Client, sql: str, parameters: dict) -> Percentiles:
    count, values = client.query(sql, parameters=parameters).result_rows[0]
    if not count:
        return Percentiles()
    return Percentiles(count, *(float(v) for v in values))


def measure_latency(
    rate: float,
    seconds: float,
    batch_seconds: float | None,
    partitions: int,
    seed: int,
    work: Path,
    timeout: float,
    lateness: str = "1s",
) -> Latency:
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings()
    config = bench_config(settings.config_path, lateness, work / "journeys.yaml")
    env = {
        "PARCOURS_CONFIG": str(config),
        "PARCOURS_PARTITIONS": str(partitions),
        "PARCOURS_TICK_SECONDS": "1",
    }
    if batch_seconds is not None:
        env["PARCOURS_BATCH_SECONDS"] = str(batch_seconds)
    limit = int(rate * seconds)
    with LocalBroker(log_path=work / "broker.log") as broker:
        asyncio.run(create_topics(broker.bootstrap, WORKER_TOPICS, partitions))
        with broker.worker(work / "worker", **env) as worker:
            wait_ready([worker], timeout)
            started = datetime.now(UTC)
            summary = asyncio.run(send_paced(broker.bootstrap, rate, limit, seed, started))
            sent_seconds = time.monotonic() - summary.started
            # Every event, or all but the last few: on the local broker the very last
            # record sometimes stays invisible to consumers until another one follows
            # (see "Notes on the local broker"); figures come from what landed.
            wait_for(
                lambda: worker.sink_rows("touchpoints") >= summary.messages * 0.999,
                timeout,
                "99.9% of the touchpoints in ClickHouse",
                poll=0.25,
            )
            landed = worker.wait_until_quiet("touchpoints", quiet_seconds=3.0, timeout=timeout)
            worker.wait_until_quiet("survey_invitations", quiet_seconds=3.0, timeout=timeout)
            rss = peak_rss_mb(worker.pid)
            late = int(worker.metric_sum("parcours_events_ingested_total", result="late"))
            longest = worker.longest_batch_seconds()
        client = connect(worker.clickhouse_url)
        try:
            window = {
                "since": started + timedelta(seconds=WARM_UP_SECONDS),
                "until": started + timedelta(seconds=sent_seconds - TAIL_SECONDS),
            }
            to_row = percentiles(client, TO_ROW, window)
            to_invitation = percentiles(client, TO_INVITATION, window)
        finally:
            client.close()
    return Latency(
        rate,
        summary.messages / sent_seconds,
        summary.messages,
        lateness,
        batch_seconds if batch_seconds is not None else settings.batch_seconds,
        to_row,
        to_invitation,
        rss,
        late,
        landed,
        longest,
    )


async def send_paced(
    bootstrap: str, rate: float, limit: int, seed: int, start: datetime
) -> Summary:
    """The simulator's population at `rate`, no delivery faults, event time = now."""
    settings = Settings().with_overrides(
        broker=bootstrap, producer_idempotent=False, producer_max_batch_bytes=1
    )
    stream = deliveries(seed, start, Pace(rate), faults=Faults(0.0, 0.0), max_gap_seconds=20)
    async with TouchpointProducer(settings=settings, linger_seconds=0.02) as producer:
        return await run(
            stream, producer.send, limit, paced=True, summary=Summary(), progress_every=1e9
        )
