"""Commands that run parcours' services: the worker, the collector, the dispatcher."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from streams.cli.options import (
    BROKER_OPTION,
    CLICKHOUSE_OPTION,
    CONFIG_OPTION,
    broker_errors,
    checked_config,
    one_line_errors,
    ready_folder,
    settings_needing,
)


@click.command()
@BROKER_OPTION
@CLICKHOUSE_OPTION
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
    settings = settings_needing("broker", "clickhouse_url", **overrides)
    import asyncio

    from streams.clickhouse.client import ClickHouseUrlError, client_args
    from streams.edge.produce import reach_broker
    from streams.pipeline.worker import run_worker

    checked_config(settings)  # report bad input here, before Faust buries it in logs
    ready_folder(settings.data_dir, "PARCOURS_DATA_DIR")  # Faust makes only its last level
    with one_line_errors(ClickHouseUrlError):
        client_args(settings.clickhouse_url)
    # Faust logs an unreachable broker as a traceback and exits 0: ask first (for a
    # while: in a compose file the broker may be starting too).
    with broker_errors(settings.broker):
        asyncio.run(reach_broker(settings.broker, settings.broker_wait_seconds))
    run_worker(settings, loglevel=loglevel)


@click.command()
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
    the broker has acknowledged. Also GET /healthz, /metrics and /openapi.json (the
    API as OpenAPI 3.1; `parcours spec openapi` prints it).
    """
    import asyncio

    from streams.config.settings import TOUCHPOINTS, TOUCHPOINTS_DLQ
    from streams.core.events import parser_for
    from streams.edge.collector import (
        CollectorConfigError,
        CollectorSettings,
        parse_write_keys,
        serve,
    )
    from streams.edge.produce import MAX_ENVELOPE_BYTES

    settings = settings_needing("broker", **overrides)
    config = checked_config(settings)
    with one_line_errors(CollectorConfigError):
        collector_settings = CollectorSettings(
            write_keys=parse_write_keys(settings.write_keys),
            max_body_bytes=settings.max_message_bytes,
            # The worker refuses messages over the same limit: envelopes stay under it.
            max_envelope_bytes=min(MAX_ENVELOPE_BYTES, settings.max_message_bytes),
            partitions=settings.partitions,
            max_in_flight=settings.collector_max_in_flight,
            max_per_client=settings.collector_max_per_client,
            max_per_key=settings.collector_max_per_key,
            header_timeout_seconds=settings.collector_header_timeout_seconds,
            body_timeout_seconds=settings.collector_body_timeout_seconds,
            cors_origins=frozenset(
                o.strip() for o in settings.cors_origins.split(",") if o.strip()
            ),
        )

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


@click.command()
@BROKER_OPTION
@click.option(
    "--destinations",
    "destinations_path",
    type=click.Path(path_type=Path),
    envvar="PARCOURS_DESTINATIONS",
    required=True,
    help="YAML file of webhooks and templates (see streams/edge/README.md) "
    "[env PARCOURS_DESTINATIONS]",
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

    Reads `survey-invitations` (and `follow-ups` for destinations that take them);
    POSTs each item (JSON from the destination's template, signed as Standard Webhooks,
    webhook-id = invitation id) to every destination, with jittered retries that honour
    Retry-After, a rate limit, and the `dispatch-dlq` topic after the last attempt. A
    ledger makes restarts skip what was delivered. Stops on Ctrl-C or SIGTERM. Make a
    signing secret with `parcours new-secret`.
    """
    import asyncio
    import logging

    from streams import metrics
    from streams.edge.destinations import DestinationsError, load_destinations
    from streams.edge.dispatcher import run_dispatcher

    settings = settings_needing("broker", **overrides)
    with one_line_errors(DestinationsError):
        destinations = load_destinations(destinations_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    port = metrics.serve(metrics_port)
    ledger = ledger or settings.data_dir / "dispatcher" / "ledger.db"
    ready_folder(ledger.parent, "--ledger's folder")
    click.echo(
        f"dispatcher: {len(destinations)} destination(s), ledger {ledger}"
        + (f", metrics on :{port}/metrics" if port else "")
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_dispatcher(settings, destinations, ledger, group))


@click.command("new-secret")
def new_secret() -> None:
    """Print a new webhook signing secret (whsec_ + base64 of 32 random bytes).

    Give it to the receiver and to the dispatcher (PARCOURS_WEBHOOK_SECRET, or the
    variable a destination's secret_env names). To rotate, set both secrets, separated
    by a space: each request is signed with each, and the receiver accepts either.
    """
    from streams.edge.destinations import new_secret as make

    click.echo(make())


@click.command("spec")
@click.argument("name", type=click.Choice(["openapi", "asyncapi"]))
def spec(name: str) -> None:
    """Print a published spec as JSON, its schemas filled in.

    openapi: the collector's HTTP API (POST /v1/events, /healthz, errors) and the
    webhooks the dispatcher sends; the collector also serves it at /openapi.json.
    asyncapi: the Kafka topics (touchpoints, dead letters, invitations, follow-ups).
    """
    import orjson

    from streams.edge.specs import spec_document

    click.echo(orjson.dumps(spec_document(name), option=orjson.OPT_INDENT_2).decode())
