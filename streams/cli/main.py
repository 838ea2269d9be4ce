"""The `parcours` command line: one module per command group."""

from __future__ import annotations

import click

from streams.cli import data, services, tools


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="parcours", prog_name="parcours")
def main() -> None:
    """parcours: customer touchpoints to journeys, leaks and surveys, on Kafka and ClickHouse."""


for command in (
    services.worker,
    services.collector,
    services.dispatcher,
    services.new_secret,
    services.spec,
    data.init,
    data.check_config,
    data.replay,
    data.report,
    data.query,
    tools.demo,
    tools.simulate,
    tools.bench,
    tools.bench_views,
    tools.bench_memory,
    tools.load_collector,
    tools.local_broker,
):
    main.add_command(command)
