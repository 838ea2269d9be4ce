"""`parcours bench`: how fast parcours is, against baselines measured in the same run.

On the same synthetic events (pre-encoded once):
  core       ingest + journey steps called in-process (no Kafka, no Faust): the ceiling
             the Python logic itself sets; also the state it keeps per customer;
  sink       touchpoint rows inserted into the embedded ClickHouse in the worker's batches;
  baseline   a bare Faust agent that only decodes the messages (streams.dev.bench_baseline);
  pipeline   the real workers (ingest, identity, journeys, leaks, surveys, ClickHouse sink),
             once with one event per message and once with batch envelopes, with 1 and
             more worker processes.
Consumers start first and settle into their group; then the events are sent as fast as
the broker takes them, and a run is timed from the first send until the last event is
decoded (baseline) or in ClickHouse (pipeline). The latency of a paced live stream is
measured by streams.dev.bench_latency. Figures: events/s, ratios, peak memory (RSS).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import time
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import orjson

from streams.clickhouse.client import connect, migrate
from streams.clickhouse.rows import TOUCHPOINT_COLUMNS, touchpoint_row
from streams.clickhouse.sink import ClickHouseSink
from streams.config.settings import TOUCHPOINTS, Settings
from streams.dev.bench_compare import CoreTiming, compare_cores, comparison
from streams.dev.bench_core import Core
from streams.dev.bench_latency import Latency, measure_latency
from streams.dev.bench_profile import Profile, py_spy, sampled
from streams.dev.bench_report import print_report
from streams.dev.local_stack import (
    ChildProcess,
    LocalBroker,
    WorkerProcess,
    cpu_seconds,
    machine_idle,
    peak_rss_mb,
    wait_for,
    wait_ready,
)
from streams.dev.synth import generate
from streams.edge.produce import as_messages, create_topics, send_messages
from streams.outputs import WORKER_TOPICS


@dataclass
class Throughput:
    run: str  # core, baseline or pipeline
    messages_kind: str  # "1 event/message" or "envelopes of ≤N"
    workers: int
    events: int
    messages: int
    seconds: float
    events_per_second: float
    peak_rss_mb: list[float | None] = field(default_factory=list)  # per process; None: gone
    vs_baseline: float | None = None
    # CPU seconds used during the run by each consumer process, and by the broker; the
    # machine's idle share meanwhile (on 2 cores, wall-clock ratios measure free CPU).
    cpu_seconds: list[float] = field(default_factory=list)
    broker_cpu_seconds: float = 0.0
    idle_share: float = 0.0
    events_per_cpu_second: float = 0.0  # per consumer-process CPU second
    state_records_per_event: float | None = None  # changelog records (pipeline)
    epochs: int | None = None
    # The longest a worker computed one batch (its event loop waiting), as the bucket
    # bound of parcours_compute_seconds that holds it.
    longest_compute_s: float | None = None
    profiles: list[Profile] = field(default_factory=list)  # per worker, with --profile


@dataclass
class Report:
    customers: int
    events: int
    partitions: int
    throughput: list[Throughput] = field(default_factory=list)
    sink_rows_per_second: float = 0.0
    state_bytes_per_customer: float = 0.0
    latency: list[Latency] = field(default_factory=list)
    core_compared: list[CoreTiming] = field(default_factory=list)  # this commit, --compare
    core_us_per_event: dict[str, float] = field(default_factory=dict)  # ingest, journey step


def run_core(
    messages: list[tuple[bytes, bytes]], events: int, partitions: int, batch: int = 2000
) -> tuple[Throughput, Core, list[list]]:
    """Time the core; return it (for its state) and the touchpoint rows it produced."""
    core = Core(partitions)
    rows: list[list] = []
    started = time.perf_counter()
    for start in range(0, len(messages), batch):
        outcome, _ = core.step(messages[start : start + batch])
        rows.extend(touchpoint_row(e) for b in outcome.forward.values() for e in b)
    seconds = time.perf_counter() - started
    figure = Throughput(
        "core (in-process)", "1 event/message", 0, events, len(messages), seconds, events / seconds
    )
    return figure, core, rows


def run_sink(rows: list[list], work: Path, batch: int) -> float:
    """Rows/s of the sink inserting `rows` into the embedded ClickHouse in `batch`es."""
    shutil.rmtree(work, ignore_errors=True)
    url = f"chdb://{work}"
    sink = ClickHouseSink(lambda: connect(url))
    try:
        sink.run_sync(migrate)

        async def write_all() -> float:
            started = time.perf_counter()
            for n, start in enumerate(range(0, len(rows), batch)):
                await sink.write(
                    "touchpoints", TOUCHPOINT_COLUMNS, rows[start : start + batch], f"b{n}"
                )
            return time.perf_counter() - started

        seconds = asyncio.run(write_all())
    finally:
        sink.close()
    return len(rows) / seconds


def send_all(broker: LocalBroker, messages: list[tuple[bytes, bytes]]) -> float:
    """Send `messages`; return the wall time (time.time) of the first send."""
    started = time.time()
    asyncio.run(send_messages(broker.bootstrap, TOUCHPOINTS, messages))
    return started


class CpuMeter:
    """CPU seconds of some processes and the machine's idle share, between start and stop."""

    def __init__(self, pids: list[int], broker_pid: int) -> None:
        self.pids, self.broker_pid = pids, broker_pid
        self.before = [cpu_seconds(p) for p in pids]
        self.broker_before = cpu_seconds(broker_pid)
        self.idle_before = machine_idle()

    def stop(self, figure: Throughput) -> Throughput:
        figure.cpu_seconds = [
            cpu_seconds(p) - b for p, b in zip(self.pids, self.before, strict=True)
        ]
        figure.broker_cpu_seconds = cpu_seconds(self.broker_pid) - self.broker_before
        idle, total = machine_idle()
        figure.idle_share = (idle - self.idle_before[0]) / max(1, total - self.idle_before[1])
        figure.events_per_cpu_second = figure.events / max(1e-9, sum(figure.cpu_seconds))
        return figure


class BaselineProcess(ChildProcess):
    """streams.dev.bench_baseline in a child process."""

    def __init__(self, broker: str, expected: int, folder: Path) -> None:
        self.broker, self.expected, self.folder = broker, expected, folder
        self.log_path = folder / "baseline.log"
        self.result = folder / "baseline-result.json"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spawn(
            [sys.executable, "-m", "streams.dev.bench_baseline"],
            {
                "KAFKA_BROKER": self.broker,
                "BENCH_TOPIC": TOUCHPOINTS,
                "BENCH_EXPECTED_EVENTS": str(self.expected),
                "BENCH_RESULT_FILE": str(self.result),
                "PARCOURS_DATA_DIR": str(self.folder),
            },
        )

    def finished_at(self) -> float | None:
        """Wall time the last event was decoded, once it was."""
        if not self.result.exists():
            return None
        return orjson.loads(self.result.read_bytes())["finished_at"]


def run_baseline(
    kind: str, messages: list[tuple[bytes, bytes]], events: int, work: Path, timeout: float
) -> Throughput:
    shutil.rmtree(work, ignore_errors=True)
    with LocalBroker(log_path=work / "broker.log") as broker:
        asyncio.run(create_topics(broker.bootstrap, [TOUCHPOINTS], 4))
        with BaselineProcess(broker.bootstrap, events, work) as baseline:
            wait_ready([baseline], timeout)
            meter = CpuMeter([baseline.pid], broker.pid)
            started = send_all(broker, messages)
            wait_for(lambda: baseline.finished_at() is not None, timeout, "the baseline to finish")
            finished = baseline.finished_at()
            assert finished is not None  # waited for above
            seconds = finished - started
            rss = [peak_rss_mb(baseline.pid)]
            figure = Throughput(
                "baseline (bare Faust)", kind, 1, events, len(messages), seconds,
                events / seconds, rss,
            )  # fmt: skip
            return meter.stop(figure)


def run_pipeline(
    kind: str,
    messages: list[tuple[bytes, bytes]],
    events: int,
    workers: int,
    partitions: int,
    work: Path,
    timeout: float,
    profile_dir: Path | None = None,
) -> Throughput:
    shutil.rmtree(work, ignore_errors=True)
    env = {"PARCOURS_MAX_AGE_SECONDS": "0", "PARCOURS_PARTITIONS": str(partitions)}
    with LocalBroker(log_path=work / "broker.log") as broker, ExitStack() as stack:
        asyncio.run(create_topics(broker.bootstrap, WORKER_TOPICS, partitions))
        # Each worker has its own embedded ClickHouse; rows are counted across them.
        running: list[WorkerProcess] = [
            stack.enter_context(broker.worker(work / f"worker-{n}", **env)) for n in range(workers)
        ]
        wait_ready(running, timeout)
        meter = CpuMeter([w.pid for w in running], broker.pid)
        sampling: AbstractContextManager[list[Profile]] = (
            sampled([w.pid for w in running], profile_dir, profile_name(kind, workers))
            if profile_dir is not None
            else nullcontext([])
        )
        with sampling as profiles:
            started = send_all(broker, messages)
            # Each look at a worker's /metrics costs it CPU (at 20 a second, a seventh of
            # it): look twice a second, and take the end from the sink's own clock.
            wait_for(
                lambda: sum(w.sink_rows("touchpoints") for w in running) >= events,
                timeout,
                "every touchpoint in ClickHouse",
                poll=0.5,
            )
        finished = max(
            w.metric_sum("parcours_sink_last_write_timestamp_seconds", table="touchpoints")
            for w in running
        )
        seconds = finished - started
        rss = [peak_rss_mb(w.pid) for w in running]
        figure = meter.stop(
            Throughput(
                "pipeline", kind, workers, events, len(messages), seconds, events / seconds, rss
            )
        )
        figure.profiles = profiles
        # A batch writes its states after its rows, and counts an epoch once they are
        # written: an epoch finished after the last row landed (the ticks make one if
        # no data is left) means every state of the run is counted.
        for w in running:
            then = epochs_of(w)
            wait_for(partial(epochs_since, w, then), timeout, f"{w.log_path} to finish its batch")
        records = sum(w.metric_sum("parcours_state_records_total") for w in running)
        figure.state_records_per_event = records / events
        figure.epochs = int(sum(epochs_of(w) for w in running))
        figure.longest_compute_s = max(w.longest_batch_seconds() for w in running)
    return figure


def profile_name(kind: str, workers: int) -> str:
    """A file name for a run's profiles: 'pipeline-single-1w', 'pipeline-envelopes-2w'."""
    return f"pipeline-{'single' if kind.startswith('1 ') else 'envelopes'}-{workers}w"


def epochs_of(worker: WorkerProcess) -> float:
    return worker.metric_sum("parcours_epochs_total")


def epochs_since(worker: WorkerProcess, then: float) -> bool:
    """Has the worker finished an epoch since it had finished `then`?"""
    return epochs_of(worker) > then


def run_bench(
    customers: int,
    max_events: int | None,
    envelope: int,
    partitions: int,
    workers: list[int],
    rates: list[float],
    latency_seconds: float,
    batch_seconds: float | None,
    seed: int,
    data_dir: Path,
    timeout: float,
    as_json: bool,
    compare: str | None = None,
    core_only: bool = False,
    rounds: int = 3,
    instructions: int = 0,
    profile: bool = False,
) -> Report:
    # SIGTERM (timeout, Ctrl-\, a CI cancel) unwinds like Ctrl-C, so the broker and the
    # workers this started are stopped rather than left running in their own sessions.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    say = (lambda *_: None) if as_json else (lambda *a: print(*a, flush=True))
    if profile and py_spy() is None:
        sys.exit("parcours bench --profile: py-spy is not installed (pip install py-spy)")
    # Live traffic is dense: customers arrive over ten minutes, acting every 5 to 20 s,
    # so a producer flushing every 30 s has several events of a customer to batch.
    events = generate(customers, seed=seed, arrivals_seconds=600, max_gap_seconds=20)
    events = events[:max_events] if max_events else events
    singles = as_messages(events)
    # Envelopes per partition, as the producer helper and the collector send them.
    batched = as_messages(events, envelope_size=envelope, window_ms=30_000, partitions=partitions)
    work = data_dir / "bench"
    report = Report(customers, len(events), partitions)
    say(
        f"parcours bench: {len(events):,} events of {customers:,} customers; "
        f"{len(batched):,} envelopes of ≤{envelope}; {partitions} partitions"
    )

    core_figure, core, rows = run_core(singles, len(events), partitions)
    report.throughput.append(core_figure)
    report.state_bytes_per_customer = core.state_bytes_per_customer()
    report.core_us_per_event = {
        "ingest": core.ingest_seconds / len(events) * 1e6,
        "journey step": core.journey_seconds / len(events) * 1e6,
    }
    say(
        f"  core: {core_figure.events_per_second:,.0f} events/s "
        f"(ingest {report.core_us_per_event['ingest']:,.1f} µs/event, journey step "
        f"{report.core_us_per_event['journey step']:,.1f}); "
        f"state {report.state_bytes_per_customer:,.0f} bytes per customer key"
    )
    del core
    if compare:
        say(f"  core vs {compare}: {rounds} rounds, fresh processes, same events")
        report.core_compared = compare_cores(
            singles, len(events), partitions, compare, work, rounds, say, instructions
        )
        say(f"  {comparison(*report.core_compared)}")
    if core_only:
        if as_json:
            print(json.dumps(asdict(report), indent=2))
        else:
            print_report(report)
        return report
    report.sink_rows_per_second = run_sink(rows, work / "sink", Settings().sink_batch_max)
    say(f"  sink: {report.sink_rows_per_second:,.0f} rows/s into the embedded ClickHouse")
    del rows

    for kind, messages, counts in (
        ("1 event/message", singles, [1]),
        (f"envelopes of ≤{envelope}", batched, workers),
    ):
        baseline = run_baseline(kind, messages, len(events), work / "baseline", timeout)
        report.throughput.append(baseline)
        say(f"  baseline, {kind}: {baseline.events_per_second:,.0f} events/s")
        for count in counts:
            figure = run_pipeline(
                kind, messages, len(events), count, partitions, work / "pipeline", timeout,
                profile_dir=data_dir / "profiles" if profile else None,
            )  # fmt: skip
            figure.vs_baseline = figure.events_per_second / baseline.events_per_second
            report.throughput.append(figure)
            say(f"  pipeline, {kind}, {count} worker(s): {figure.events_per_second:,.0f} events/s")

    for rate in rates:
        say(f"  latency at {rate:,.0f} events/s for {latency_seconds:.0f} s ...")
        report.latency.append(
            measure_latency(
                rate, latency_seconds, batch_seconds, partitions, seed, work / "latency", timeout
            )
        )

    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print_report(report)
    return report
