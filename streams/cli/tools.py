"""Commands to try and measure parcours locally: demo, bench, simulator, load test, broker."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import click

from streams.cli.options import (
    BROKER_OPTION,
    CONFIG_OPTION,
    broker_errors,
    numbers,
    settings_needing,
    share_option,
    shown_option,
    work_dir_option,
)

CORE_BASELINE = "20689b8"  # the core before incremental journeys (issue 17)


@click.command()
@click.option("--customers", default=400, show_default=True, help="synthetic customers")
@click.option("--seed", default=7, show_default=True, help="random seed of the population")
@work_dir_option("demo")
@click.option(
    "--timeout", default=300.0, show_default=True, help="seconds to wait for every event to land"
)
def demo(customers: int, seed: int, data_dir: Path, timeout: float) -> None:
    """Run the whole pipeline locally (broker + embedded ClickHouse + worker) and summarize."""
    from streams.dev.demo import run_demo

    run_demo(customers, seed, data_dir, timeout)


@click.command()
@click.option("--customers", default=10_000, show_default=True, help="synthetic customers")
@click.option(
    "--events",
    "max_events",
    type=click.IntRange(min=1),
    help="at most this many of their events (the first in time) [default: all, ~5.6 each]",
)
@click.option("--envelope", default=50, show_default=True, help="events per batch envelope")
@click.option(
    "--partitions", default=4, show_default=True, help="partitions of every topic (parallelism)"
)
@click.option(
    "--workers",
    default="1,2",
    show_default=True,
    callback=numbers(int),
    help="worker process counts to compare on envelopes, e.g. 1,2",
)
@click.option(
    "--rate",
    "rates",
    default="1000,5000",
    show_default=True,
    callback=numbers(float),
    help="events/s of the paced live streams whose latency is measured; '' for none",
)
@click.option(
    "--latency-seconds", default=20.0, show_default=True, help="seconds each paced stream lasts"
)
@click.option(
    "--batch-seconds",
    type=float,
    help="the agents' batch window for the latency runs [default: PARCOURS_BATCH_SECONDS, 0.5]",
)
@click.option("--seed", default=7, show_default=True)
@work_dir_option("bench")
@click.option("--timeout", default=600.0, show_default=True, help="seconds per run")
@click.option(
    "--compare",
    metavar="REF",
    help="also time the core of git commit REF (a worktree) on the same events, e.g. "
    f"{CORE_BASELINE} (the engine before incremental journeys)",
)
@shown_option(
    "--rounds",
    3,
    click.IntRange(min=1),
    "with --compare: time the two cores alternately this many times; each keeps its best",
)
@shown_option(
    "--instructions",
    0,
    click.IntRange(min=0),
    "with --compare: also count each core's CPU instructions over the first N messages under "
    "valgrind, exact where seconds drift with the machine's load (about a minute per core for "
    "3,000, the counts side by side on the machine's cores; the first messages are the start "
    "of the day: count them all, with fewer "
    "--customers, for the whole day's mix); 0: not counted",
)
@click.option("--core-only", is_flag=True, help="only the in-process core (and --compare)")
@click.option(
    "--profile",
    is_flag=True,
    help="sample each pipeline worker with py-spy while it takes the messages: collapsed "
    "stacks (a flame graph's input) under DATA_DIR/profiles, and the top five functions",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable figures")
def bench(as_json: bool, **options: Any) -> None:
    """Measure throughput, latency and memory against baselines measured in the same run.

    Runs, on the same synthetic events: the pure core in-process; the ClickHouse sink; a
    bare Faust agent that only decodes the messages (the baseline); the full pipeline
    on the local stack with one event per message and with batch envelopes, with each
    worker count of --workers; then a paced live stream per --rate, timing every event
    to its row in ClickHouse and to its survey invitation. Takes a few minutes.
    """
    from streams.dev.bench import run_bench
    from streams.dev.bench_compare import CompareError

    if options["instructions"] and not options["compare"]:
        raise click.UsageError("--instructions counts both cores of --compare: add --compare REF")
    try:
        run_bench(as_json=as_json, **options)
    except CompareError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@BROKER_OPTION
@CONFIG_OPTION
@shown_option("--rate", 20.0, click.FloatRange(min=0.01), "mean events per second")
@shown_option("--events", 0, click.IntRange(min=0), "stop after N events (0: run until Ctrl-C)")
@click.option(
    "--fast",
    is_flag=True,
    help="send as fast as possible, event times back-dated to end about now (needs --events)",
)
@click.option(
    "--burst",
    "burst_factor",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="customers arrive N times faster during each burst (1: steady)",
)
@shown_option(
    "--burst-every", 60.0, click.FloatRange(min=1.0), "seconds from one burst to the next"
)
@shown_option("--burst-seconds", 10.0, click.FloatRange(min=0.1), "length of a burst")
@click.option("--seed", default=7, show_default=True, help="seed of the population")
@share_option(
    "--anonymous-rate", 0.3, "share of customers browsing anonymously before logging in at checkout"
)
@share_option("--abandon-rate", 0.25, "share of started checkouts never paid")
@share_option("--support-rate", 0.15, "share of customers calling support")
@share_option("--answer-rate", 0.5, "share of delivered customers answering a survey")
@share_option("--duplicate-rate", 0.01, "share of events sent twice (producer retries)")
@share_option("--out-of-order-rate", 0.02, "share of events held back, arriving after newer ones")
@shown_option(
    "--max-delay",
    30.0,
    click.FloatRange(min=1.0),
    "seconds an out-of-order event is held at most; keep it below the "
    "allowed lateness or the worker counts it as late",
)
@shown_option(
    "--max-gap", 60, click.IntRange(min=5), "seconds between a customer's touchpoints at most"
)
@shown_option("--envelope", 20, click.IntRange(min=1), "events of one customer per message at most")
@click.option(
    "--jsonl",
    type=click.File("wb"),
    help="write the events to this file ('-': stdout) instead of Kafka",
)
def simulate(
    broker: str | None,
    config_path: Path | None,
    rate: float,
    events: int,
    fast: bool,
    burst_factor: float,
    burst_every: float,
    burst_seconds: float,
    seed: int,
    anonymous_rate: float,
    abandon_rate: float,
    support_rate: float,
    answer_rate: float,
    duplicate_rate: float,
    out_of_order_rate: float,
    max_delay: float,
    max_gap: int,
    envelope: int,
    jsonl: BinaryIO | None,
) -> None:
    """Send a live synthetic population's touchpoints into the touchpoints topic.

    Seeded customers arrive at random (Poisson) and walk purchase, support and
    onboarding journeys: segments, channels, checkout abandonment, support calls,
    survey answers, anonymous visitors who log in at checkout. Events go through the
    producer helper (checked, batched per customer, flushed on Ctrl-C), with event
    time = wall clock, some sent twice and some out of order.
    """
    import asyncio
    from datetime import UTC

    from streams.dev.simulate import (
        Faults,
        Pace,
        Summary,
        deliveries,
        fast_start,
        to_jsonl,
        to_kafka,
    )
    from streams.dev.synth import Mix

    if fast and not events:
        raise click.UsageError("--fast needs --events N: how many events to back-date")
    needed = ("broker",) if jsonl is None else ()
    settings = settings_needing(*needed, broker=broker, config_path=config_path)
    pace = Pace(rate, burst_factor, burst_every, burst_seconds)
    mix = Mix(anonymous_rate=anonymous_rate, support_rate=support_rate, answer_rate=answer_rate)
    now = datetime.now(UTC)
    start = fast_start(now, events, pace) if fast else now
    stream = deliveries(
        seed,
        start,
        pace,
        mix.with_checkout_abandonment(abandon_rate),
        Faults(duplicate_rate, out_of_order_rate, max_delay),
        max_gap,
        id_prefix=f"sim{seed}-{int(start.timestamp())}",
    )
    limit = events or None
    summary = Summary()
    target = jsonl.name if jsonl else settings.topic("touchpoints")
    click.echo(f"simulating {rate:g} events/s (seed {seed}) into {target}; Ctrl-C stops", err=True)
    try:
        with broker_errors(settings.broker):
            if jsonl is not None:
                heartbeat = settings.heartbeat_file
                asyncio.run(to_jsonl(stream, jsonl, limit, not fast, summary, heartbeat))
            else:
                asyncio.run(to_kafka(stream, settings, limit, not fast, summary, envelope))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # stopped by the user; what was batched has been sent
    click.echo(summary.progress(), err=True)
    click.echo(
        "by type: " + ", ".join(f"{t} {n}" for t, n in summary.types.most_common()), err=True
    )


@click.command("bench-views")
@click.option("--touchpoints", default=1_000_000, show_default=True)
@click.option("--weeks", default=8, show_default=True, help="weeks of history they span")
@click.option("--seed", default=7, show_default=True)
@click.option("--runs", default=5, show_default=True, help="queries per view")
@click.option("--reuse", is_flag=True, help="time the data of the last run again")
@work_dir_option("bench-views")
@click.option("--json", "as_json", is_flag=True, help="machine-readable figures")
def bench_views(
    touchpoints: int,
    weeks: int,
    seed: int,
    runs: int,
    reuse: bool,
    data_dir: Path,
    as_json: bool,
) -> None:
    """Time the journey-map views on N touchpoints in the embedded ClickHouse."""
    from streams.dev.bench_views import run

    run(touchpoints, seed, weeks, data_dir, runs, as_json, reuse)


@click.command("bench-memory")
@click.option("--keys", default=20_000, show_default=True, help="anonymous ids per batch")
@click.option("--store", default="memory://", show_default=True, help="the worker's table store")
@work_dir_option("bench-memory")
def bench_memory(keys: int, store: str, data_dir: Path) -> None:
    """Measure a worker's memory per customer key: RSS after a warm-up batch of one-visit
    anonymous ids, and after two more batches of as many new ones."""
    from streams.dev.bench_memory import run

    click.echo(f"worker RSS (local broker, embedded ClickHouse, {store}):")
    figures = run(keys, data_dir / "bench-memory", store)
    click.echo(
        f"{figures['bytes_per_key']:,} bytes per key kept (the next {2 * keys:,} ids: "
        f"{figures['rss_after_first_mb']:,} -> {figures['rss_after_third_mb']:,} MB)"
    )


@click.command("load-collector")
@click.option("--url", default="http://127.0.0.1:8080/v1/events", show_default=True)
@click.option("--write-key", required=True, help="a key of PARCOURS_WRITE_KEYS")
@click.option("--events", default=100_000, show_default=True)
@click.option("--batch", "batch_size", default=100, show_default=True, help="events per request")
@click.option("--clients", default=8, show_default=True, help="concurrent connections")
def load_collector(url: str, write_key: str, events: int, batch_size: int, clients: int) -> None:
    """Measure a running collector: accepted events/s and answer latencies."""
    import asyncio

    from streams.dev.loadtest import load

    click.echo(f"POSTing {events:,} events in batches of {batch_size} from {clients} clients")
    try:
        result = asyncio.run(load(url, write_key, events, batch_size, clients))
    except (OSError, RuntimeError) as exc:
        raise click.ClickException(f"{url}: {exc}") from None
    click.echo(result.report())


@click.command("local-broker")
@click.option("--port", type=int, default=9092, show_default=True)
def local_broker(port: int) -> None:
    """Run the local Kafka-compatible broker (tansu, memory storage) until Ctrl-C."""
    import signal

    from streams.dev.local_stack import LocalBroker

    def interrupted(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM (a service manager, `kill`) stops tansu too, as Ctrl-C does.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupted)
    broker = LocalBroker(port=port)
    code = 0
    try:
        broker.start()
        click.echo(f"broker ready: kafka://{broker.bootstrap} (memory storage; Ctrl-C stops it)")
        code = broker.running.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    sys.exit(code)
