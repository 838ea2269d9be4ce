"""Commands over data: check a configuration, replay a file, read the journey map."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.cli.options import (
    BROKER_OPTION,
    CLICKHOUSE_OPTION,
    CONFIG_OPTION,
    broker_errors,
    checked_config,
    one_line_errors,
    settings_needing,
)
from streams.core.text import printable

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client


@click.command("check-config")
@click.argument("path", type=click.Path(path_type=Path), required=False)
def check_config(path: Path | None) -> None:
    """Validate a journeys.yaml (default: the configured one) and say what it declares."""
    settings = settings_needing(config_path=path)
    config, path = checked_config(settings), settings.config_path
    click.echo(
        f"{path}: OK, {len(config.touchpoint_types)} touchpoint types, "
        f"{len(config.journeys)} journeys"
    )
    for journey in config.journeys.values():
        click.echo(f"  {journey.name}: {' → '.join(journey.stages)}")
        closes = f", after close: {journey.after_close}" if journey.close_on else ""
        click.echo(f"    re-entry: {journey.reentry}, after goal: {journey.after_goal}{closes}")


# What `parcours init` copies: the configuration a deployment edits, and its examples.
EXAMPLE_FILES = ("journeys.yaml", "examples/helpdesk.yaml", "mappings/helpdesk.yaml")


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="overwrite files that are already there")
def init(folder: Path, force: bool) -> None:
    """Write an editable copy of the example configuration into FOLDER.

    FOLDER/journeys.yaml (touchpoint types, journeys, leaks, surveys, guardrails),
    FOLDER/examples/helpdesk.yaml (support journeys for the Helpdesk log) and
    FOLDER/mappings/helpdesk.yaml (its CSV columns, for `parcours replay`). Then:
    `parcours check-config FOLDER/journeys.yaml`, and run the worker with
    PARCOURS_CONFIG=FOLDER/journeys.yaml.
    """
    from streams.config.settings import SCHEMAS_DIR

    targets = [(SCHEMAS_DIR / name, folder / name) for name in EXAMPLE_FILES]
    there = [str(target) for _, target in targets if target.exists()]
    if there and not force:
        raise click.ClickException(
            f"{', '.join(there)} already there; pass --force to overwrite, or pick another folder"
        )
    for source, target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        click.echo(f"wrote {target}")
    click.echo(
        f"next: parcours check-config {folder / 'journeys.yaml'}, then run the worker with "
        f"PARCOURS_CONFIG={folder / 'journeys.yaml'}"
    )


@click.command()
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
    from streams.config.settings import TOUCHPOINTS
    from streams.core.events import EventParser
    from streams.edge.replay import InputError, MappingError, print_summary
    from streams.edge.replay import replay as run_replay

    settings = settings_needing("broker", broker=broker, config_path=config_path)
    config = checked_config(settings)
    with one_line_errors(MappingError, InputError), broker_errors(settings.broker):
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
    print_summary(summary, settings.topic(TOUCHPOINTS))


@click.command()
@CLICKHOUSE_OPTION
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
    type=click.Choice(["text", "html", "json"]),
    default="text",
    show_default=True,
    help="text: the map in the terminal, and the HTML page; html: the page only; json: "
    "the map's data on stdout",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path),
    default=Path(".parcours/report.html"),
    show_default=True,
    help="where to write the HTML page (with --format text or html)",
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
    (charts as inline SVG: it opens without a network). Without --since and --until,
    the last 30 days; if no journey opened then, the days the data spans (and it says so).
    """
    from streams.clickhouse.client import connect, masked
    from streams.clickhouse.report import as_json, as_text, read_map
    from streams.clickhouse.report_html import save_html

    settings = settings_needing(
        "clickhouse_url", clickhouse_url=clickhouse_url, config_path=config_path
    )
    journeys = list(checked_config(settings).journeys)
    journey = journey or journeys[0]
    if journey not in journeys:
        raise click.BadParameter(
            f"{journey!r} is not a configured journey; choose one of {', '.join(journeys)}",
            param_hint="--journey",
        )
    try:
        client = connect(settings.clickhouse_url, create=False)
        try:
            since, until = _report_range(client, journey, since, until)
            found = read_map(client, journey, since, until)
        finally:
            client.close()
    except click.ClickException:
        raise
    except Exception as exc:  # unreachable server, missing views: say which and where
        text = str(exc)
        if "UNKNOWN_FUNCTION" in text or "UNKNOWN_TABLE" in text:
            text = (
                "no parcours tables here; a worker creates them when it starts against this "
                "URL (or run `parcours demo` for a filled local store)"
            )
        raise click.ClickException(f"{masked(settings.clickhouse_url)}: {text}") from None
    if output == "json":
        click.echo(as_json(found))
        return
    save_html(found, html_path)
    if output == "text":
        click.echo(as_text(found))
        click.echo()
    click.echo(f"HTML report: {html_path.resolve()}")


def _report_range(
    client: Client, journey: str, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    """The report's [since, until): as given; by default the last 30 days, or the data's
    days when no journey opened in those (said on stderr, so JSON output stays clean)."""
    from datetime import UTC, timedelta

    from streams.clickhouse.report import data_range, journeys_opened

    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    chosen = since or today - timedelta(days=30), until or today + timedelta(days=1)
    if chosen[0] >= chosen[1]:
        raise click.BadParameter(f"--since {chosen[0]} is not before --until {chosen[1]}")
    if since or until or journeys_opened(client, journey, *chosen):
        return chosen
    spanned = data_range(client, journey)
    if spanned is None:
        click.echo(f"no {journey} journeys in this store yet", err=True)
        return chosen
    days = " to ".join(f"{d:%Y-%m-%d}" for d in (spanned[0], spanned[1] - timedelta(days=1)))
    click.echo(
        f"no {journey} journeys opened in the last 30 days; showing {days}, the days the "
        "data spans (choose with --since and --until)",
        err=True,
    )
    return spanned


@click.command()
@CLICKHOUSE_OPTION
@click.argument("sql")
def query(clickhouse_url: str | None, sql: str) -> None:
    """Run one SQL query on parcours' ClickHouse and print the result as a table.

    Takes the worker's URLs: chdb://path (the embedded engine; after `make demo`,
    chdb://.parcours/demo/clickhouse) or http://user:pass@host:8123/db. The views and a
    query for each: schemas/clickhouse/README.md.
    """
    from streams.clickhouse.client import connect, masked
    from streams.core.text import table

    settings = settings_needing("clickhouse_url", clickhouse_url=clickhouse_url)
    try:
        client = connect(settings.clickhouse_url, create=False)
        try:
            result = client.query(sql)
        finally:
            client.close()
    except Exception as exc:  # a bad query or an unreachable server: one line
        raise click.ClickException(
            f"{masked(settings.clickhouse_url)}: {printable(str(exc), 500)}"
        ) from None
    names = list(result.column_names)
    if not names:
        click.echo("(no rows)")
        return
    click.echo(table(names[0], names[1:], [tuple(row) for row in result.result_rows]))
    click.echo(f"({len(result.result_rows):,} rows)")
