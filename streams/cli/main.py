"""The `parcours` command line."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import click

from streams.config.settings import Settings

LOCAL_STACK_HINT = """\
No {what} given. Point the worker at your services:
  parcours worker --broker kafka://host:9092 --clickhouse http://user:pass@host:8123/db
(or set KAFKA_BROKER and CLICKHOUSE_URL). To try everything locally instead:
  parcours demo                      # broker + embedded ClickHouse + worker, then a summary
  parcours local-broker --port 9092  # a local Kafka-compatible broker in this terminal
  parcours worker --broker kafka://127.0.0.1:9092 --clickhouse chdb://.parcours/clickhouse"""


def _work_dir_option(folder: str) -> Callable:
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=Path(".parcours"),
        show_default=True,
        help=f"writes under DATA_DIR/{folder}, wiped first",
    )


BROKER_OPTION = click.option(
    "--broker", help="Kafka bootstrap, e.g. kafka://host:9092 [env KAFKA_BROKER]"
)
CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="journeys.yaml [env PARCOURS_CONFIG; default schemas/journeys.yaml]",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """parcours: customer touchpoints to journeys, leaks and surveys, on Kafka and ClickHouse."""


@main.command()
@BROKER_OPTION
@click.option(
    "--clickhouse",
    "clickhouse_url",
    help="http://user:pass@host:8123/db or chdb://path [env CLICKHOUSE_URL]",
)
@CONFIG_OPTION
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    help="local state folder [env PARCOURS_DATA_DIR; default .parcours]",
)
@click.option(
    "--metrics-port",
    help="port of /metrics, or a range to take the first free port of (9108-9117; several "
    "workers on one host), 0 for none [env PARCOURS_METRICS_PORT; default 9108]",
)
@click.option("--store", help="Faust table store: memory:// or rocksdb:// [env PARCOURS_STORE]")
@click.option(
    "--partitions",
    type=int,
    help="partitions of the input topics [env PARCOURS_PARTITIONS; default 4]",
)
@click.option(
    "--loglevel",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def worker(loglevel: str, **overrides: object) -> None:
    """Run the stream worker: ingest, then sink to ClickHouse.

    Several workers with the same app id share the partitions of one consumer group.
    """
    settings = Settings().with_overrides(**overrides)
    for what, value in (("broker", settings.broker), ("ClickHouse URL", settings.clickhouse_url)):
        if not value:
            raise click.UsageError(LOCAL_STACK_HINT.format(what=what))
    from streams.clickhouse.client import ClickHouseUrlError, client_args
    from streams.config import ConfigError, load_config
    from streams.pipeline.worker import run_worker

    try:  # report bad input here, before Faust starts and buries it in logs
        load_config(settings.config_path)
        client_args(settings.clickhouse_url)
    except (ConfigError, ClickHouseUrlError) as exc:
        raise click.ClickException(str(exc)) from None
    run_worker(settings, loglevel=loglevel)


@main.command()
@click.option("--customers", default=400, show_default=True, help="synthetic customers")
@click.option("--seed", default=7, show_default=True, help="random seed of the population")
@_work_dir_option("demo")
@click.option(
    "--timeout", default=300.0, show_default=True, help="seconds to wait for every event to land"
)
def demo(customers: int, seed: int, data_dir: Path, timeout: float) -> None:
    """Run the whole pipeline locally (broker + embedded ClickHouse + worker) and summarize."""
    from streams.dev.demo import run_demo

    run_demo(customers, seed, data_dir, timeout)


def _numbers(kind: type) -> Callable:
    def parse(_ctx: object, param: click.Parameter, value: str) -> list:
        try:
            numbers = [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"{value!r}: give comma-separated numbers, e.g. 1,2") from None
        if any(n <= 0 for n in numbers):
            raise click.BadParameter(f"{value!r}: every number must be above 0")
        return numbers

    return parse


@main.command()
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
    callback=_numbers(int),
    help="worker process counts to compare on envelopes, e.g. 1,2",
)
@click.option(
    "--rate",
    "rates",
    default="1000,5000",
    show_default=True,
    callback=_numbers(float),
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
@_work_dir_option("bench")
@click.option("--timeout", default=600.0, show_default=True, help="seconds per run")
@click.option("--json", "as_json", is_flag=True, help="machine-readable figures")
def bench(as_json: bool, **options: object) -> None:
    """Measure throughput, latency and memory against baselines measured in the same run.

    Runs, on the same synthetic events: the pure core in-process; the ClickHouse sink; a
    bare Faust agent that only decodes the messages (the baseline); the full pipeline
    on the local stack with one event per message and with batch envelopes, with each
    worker count of --workers; then a paced live stream per --rate, timing every event
    to its row in ClickHouse and to its survey invitation. Takes a few minutes.
    """
    from streams.dev.bench import run_bench

    run_bench(as_json=as_json, **options)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--mapping",
    type=click.Path(path_type=Path),
    help="column mapping (YAML) for a CSV, e.g. schemas/mappings/helpdesk.yaml",
)
@BROKER_OPTION
@click.option(
    "--speed",
    type=float,
    help="N times real time by the event timestamps; default: as fast as possible",
)
@click.option(
    "--envelope",
    default=50,
    show_default=True,
    help="events of one customer per message, within 30 s of event time",
)
@CONFIG_OPTION
def replay(
    file: Path,
    mapping: Path | None,
    broker: str | None,
    speed: float | None,
    envelope: int,
    config_path: Path | None,
) -> None:
    """Load a JSONL file or a CSV export (with --mapping) into the touchpoints topic.

    Rows are checked with the worker's parser and sent in event-time order; rejected
    rows are counted by reason. Historical data: run the worker with
    PARCOURS_MAX_AGE_SECONDS=0, or it dead-letters old events as ts_too_old.
    """
    from streams.config import ConfigError, load_config
    from streams.config.settings import TOUCHPOINTS
    from streams.core.events import EventParser
    from streams.edge.replay import MappingError, print_summary
    from streams.edge.replay import replay as run_replay

    settings = Settings().with_overrides(broker=broker, config_path=config_path)
    if not settings.broker:
        raise click.UsageError(LOCAL_STACK_HINT.format(what="broker"))
    try:
        config = load_config(settings.config_path)
        parser = EventParser(
            config.touchpoint_types, max_age_seconds=0, max_message_bytes=settings.max_message_bytes
        )
        summary = run_replay(
            file,
            mapping,
            settings.broker.removeprefix("kafka://"),
            settings.topic(TOUCHPOINTS),
            parser,
            speed,
            envelope,
        )
    except (ConfigError, MappingError) as exc:
        raise click.ClickException(str(exc)) from None
    print_summary(summary, settings.topic(TOUCHPOINTS))


@main.command("check-config")
@click.argument("path", type=click.Path(path_type=Path), required=False)
def check_config(path: Path | None) -> None:
    """Validate a journeys.yaml (default: the configured one) and say what it declares."""
    from streams.config import ConfigError, load_config

    path = path or Settings().config_path
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{path}: OK, {len(config.touchpoint_types)} touchpoint types, "
        f"{len(config.journeys)} journeys"
    )
    for journey in config.journeys.values():
        click.echo(f"  {journey.name}: {' → '.join(journey.stages)}")


@main.command()
@BROKER_OPTION
@click.option("--host", default="0.0.0.0", show_default=True, help="address to listen on")
@click.option("--port", "collector_port", type=int, help="[env PARCOURS_COLLECTOR_PORT; 8080]")
@click.option(
    "--write-keys",
    help="source:key pairs, e.g. site:s3cret,crm:0th3r [env PARCOURS_WRITE_KEYS]",
)
@click.option(
    "--cors-origins",
    help="origins browsers may send from, comma-separated, or * [env PARCOURS_CORS_ORIGINS]",
)
@CONFIG_OPTION
def collector(host: str, **overrides: object) -> None:
    """Run the HTTP collector: POST /v1/events into the touchpoints topic.

    Takes one event, a JSON array or {"events": [...]} (gzip welcome), with a write key
    in `Authorization: Bearer KEY`; answers 202 with accepted and rejected counts once
    the broker has acknowledged. Also GET /healthz and /metrics.
    """
    import asyncio

    from streams.config import ConfigError, load_config
    from streams.config.settings import TOUCHPOINTS, TOUCHPOINTS_DLQ
    from streams.core.events import parser_for
    from streams.edge.collector import (
        CollectorConfigError,
        CollectorSettings,
        parse_write_keys,
        serve,
    )

    settings = Settings().with_overrides(**overrides)
    if not settings.broker:
        raise click.UsageError(LOCAL_STACK_HINT.format(what="broker"))
    try:
        config = load_config(settings.config_path)
        collector_settings = CollectorSettings(
            write_keys=parse_write_keys(settings.write_keys),
            max_body_bytes=settings.max_message_bytes,
            max_in_flight=settings.collector_max_in_flight,
            cors_origins=frozenset(
                o.strip() for o in settings.cors_origins.split(",") if o.strip()
            ),
        )
    except (ConfigError, CollectorConfigError) as exc:
        raise click.ClickException(str(exc)) from None

    def ready(port: int) -> None:
        click.echo(f"collector ready: http://{host}:{port}/v1/events (Ctrl-C stops it)")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            serve(
                settings.broker.removeprefix("kafka://"),
                settings.topic(TOUCHPOINTS),
                settings.topic(TOUCHPOINTS_DLQ),
                parser_for(config.touchpoint_types, settings),
                collector_settings,
                host,
                settings.collector_port,
                ready,
                settings.producer_idempotent,
            )
        )


@main.command()
@BROKER_OPTION
@click.option(
    "--destinations",
    "destinations_path",
    type=click.Path(path_type=Path),
    envvar="PARCOURS_DESTINATIONS",
    required=True,
    help="YAML file of webhooks and templates (see README) [env PARCOURS_DESTINATIONS]",
)
@click.option(
    "--ledger",
    type=click.Path(path_type=Path),
    help="delivery ledger (SQLite) [default: PARCOURS_DATA_DIR/dispatcher/ledger.db]",
)
@click.option(
    "--group",
    default="parcours-dispatcher",
    show_default=True,
    help="consumer group; dispatchers of one group share the work",
)
@click.option(
    "--metrics-port",
    default="9110",
    show_default=True,
    envvar="PARCOURS_METRICS_PORT",
    help="/metrics port or range, 0 for none [env PARCOURS_METRICS_PORT]",
)
def dispatcher(
    destinations_path: Path, ledger: Path | None, group: str, metrics_port: str, **overrides: object
) -> None:
    """Deliver survey invitations to survey tools' webhooks, once each.

    Reads `survey-invitations`; POSTs each invitation (JSON from the destination's
    template, HMAC-SHA256 signed, Idempotency-Key = invitation id) to every destination,
    with retries and backoff, a rate limit, and the `dispatch-dlq` topic after the last
    attempt. A ledger makes restarts skip what was delivered. Stops on Ctrl-C or SIGTERM.
    """
    import asyncio
    import logging

    from streams import metrics
    from streams.edge.destinations import DestinationsError, load_destinations
    from streams.edge.dispatcher import run_dispatcher

    settings = Settings().with_overrides(**overrides)
    if not settings.broker:
        raise click.UsageError(LOCAL_STACK_HINT.format(what="broker"))
    try:
        destinations = load_destinations(destinations_path)
    except DestinationsError as exc:
        raise click.ClickException(str(exc)) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    port = metrics.serve(metrics_port)
    ledger = ledger or settings.data_dir / "dispatcher" / "ledger.db"
    click.echo(
        f"dispatcher: {len(destinations)} destination(s), ledger {ledger}"
        + (f", metrics on :{port}/metrics" if port else "")
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_dispatcher(settings, destinations, ledger, group))


RATE = click.FloatRange(0.0, 1.0)


@main.command()
@BROKER_OPTION
@CONFIG_OPTION
@click.option(
    "--rate",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="mean events per second",
)
@click.option(
    "--events",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="stop after N events (0: run until Ctrl-C)",
)
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
@click.option(
    "--burst-every",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="seconds from one burst to the next",
)
@click.option(
    "--burst-seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="length of a burst",
)
@click.option("--seed", default=7, show_default=True, help="seed of the population")
@click.option(
    "--anonymous-rate",
    default=0.3,
    show_default=True,
    type=RATE,
    help="share of customers browsing anonymously before logging in at checkout",
)
@click.option(
    "--abandon-rate",
    default=0.25,
    show_default=True,
    type=RATE,
    help="share of started checkouts never paid",
)
@click.option(
    "--support-rate",
    default=0.15,
    show_default=True,
    type=RATE,
    help="share of customers calling support",
)
@click.option(
    "--answer-rate",
    default=0.5,
    show_default=True,
    type=RATE,
    help="share of delivered customers answering a survey",
)
@click.option(
    "--duplicate-rate",
    default=0.01,
    show_default=True,
    type=RATE,
    help="share of events sent twice (producer retries)",
)
@click.option(
    "--out-of-order-rate",
    default=0.02,
    show_default=True,
    type=RATE,
    help="share of events held back, arriving after newer ones",
)
@click.option(
    "--max-delay",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="seconds an out-of-order event is held at most; keep it below the "
    "allowed lateness or the worker counts it as late",
)
@click.option(
    "--max-gap",
    default=60,
    show_default=True,
    type=click.IntRange(min=5),
    help="seconds between a customer's touchpoints at most",
)
@click.option(
    "--envelope",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="events of one customer per message at most",
)
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
    from datetime import UTC, datetime

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
    settings = Settings().with_overrides(broker=broker, config_path=config_path)
    if not settings.broker and jsonl is None:
        raise click.UsageError(LOCAL_STACK_HINT.format(what="broker"))
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
        if jsonl is not None:
            asyncio.run(to_jsonl(stream, jsonl, limit, not fast, summary))
        else:
            asyncio.run(to_kafka(stream, settings, limit, not fast, summary, envelope))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # stopped by the user; what was batched has been sent
    except OSError as exc:  # the broker is unreachable
        raise click.ClickException(f"{settings.broker}: {exc}") from None
    click.echo(summary.progress(), err=True)
    click.echo(
        "by type: " + ", ".join(f"{t} {n}" for t, n in summary.types.most_common()), err=True
    )


@main.command()
@click.option(
    "--clickhouse",
    "clickhouse_url",
    help="http://user:pass@host:8123/db or chdb://path [env CLICKHOUSE_URL]",
)
@click.option("--journey", help="journey to map [default: the first in the config]")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="journeys opened from (UTC) [default: 30 days ago]",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"]),
    help="... up to, excluded (UTC) [default: tomorrow]",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: the map in the terminal and an HTML page",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=Path(".parcours/report.html"),
    show_default=True,
    help="where to write the HTML page (with --format text)",
)
@CONFIG_OPTION
def report(
    clickhouse_url: str | None,
    journey: str | None,
    since: datetime | None,
    until: datetime | None,
    output: str,
    html_path: Path,
    config_path: Path | None,
) -> None:
    """The journey map from ClickHouse: funnel, paths, leaks, scores, customers at risk.

    Prints it (or JSON with --format json) and writes a self-contained HTML page
    (charts as inline SVG: it opens without a network).
    """
    from datetime import UTC, timedelta

    from streams.clickhouse.client import connect
    from streams.clickhouse.report import as_json, as_text, read_map, write_report
    from streams.config import ConfigError, load_config

    settings = Settings().with_overrides(clickhouse_url=clickhouse_url, config_path=config_path)
    if not settings.clickhouse_url:
        raise click.UsageError(LOCAL_STACK_HINT.format(what="ClickHouse URL"))
    try:
        journeys = list(load_config(settings.config_path).journeys)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    journey = journey or journeys[0]
    if journey not in journeys:
        raise click.BadParameter(
            f"{journey!r} is not a configured journey; choose one of {', '.join(journeys)}",
            param_hint="--journey",
        )
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    since = since or today - timedelta(days=30)
    until = until or today + timedelta(days=1)
    if since >= until:
        raise click.BadParameter(f"--since {since} is not before --until {until}")
    try:
        if output == "json":
            client = connect(settings.clickhouse_url)
            try:
                click.echo(as_json(read_map(client, journey, since, until)))
            finally:
                client.close()
            return
        found = write_report(settings.clickhouse_url, journey, since, until, html_path)
    except Exception as exc:  # unreachable server, missing views: say which and where
        raise click.ClickException(f"{settings.clickhouse_url}: {exc}") from None
    click.echo(as_text(found))
    click.echo(f"\nHTML report: {html_path.resolve()}")


@main.command("bench-views")
@click.option("--touchpoints", default=1_000_000, show_default=True)
@click.option("--weeks", default=8, show_default=True, help="weeks of history they span")
@click.option("--seed", default=7, show_default=True)
@click.option("--runs", default=5, show_default=True, help="queries per view")
@click.option("--reuse", is_flag=True, help="time the data of the last run again")
@_work_dir_option("bench-views")
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


@main.command("load-collector")
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


@main.command("local-broker")
@click.option("--port", type=int, default=9092, show_default=True)
def local_broker(port: int) -> None:
    """Run the local Kafka-compatible broker (tansu, memory storage) until Ctrl-C."""
    from streams.dev.local_stack import LocalBroker

    broker = LocalBroker(port=port)
    broker.start()
    click.echo(f"broker ready: kafka://{broker.bootstrap} (memory storage; Ctrl-C stops it)")
    try:
        sys.exit(broker.process.wait())
    except KeyboardInterrupt:
        broker.stop()
