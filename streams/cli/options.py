"""What the commands share: options, the hint for a missing service, and turning the
errors a user can fix into one clear line."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from streams.config import Config, ConfigError, load_config
from streams.config.settings import Settings
from streams.core.text import printable

LOCAL_STACK_HINT = """\
No {what} given. Point the worker at your services:
  parcours worker --broker kafka://host:9092 --clickhouse http://user:pass@host:8123/db
(or set KAFKA_BROKER and CLICKHOUSE_URL). To try everything locally instead:
  parcours demo                      # broker + embedded ClickHouse + worker, then a summary
  parcours local-broker --port 9092  # a local Kafka-compatible broker in this terminal
  parcours worker --broker kafka://127.0.0.1:9092 --clickhouse chdb://.parcours/clickhouse"""

NEEDED = {"broker": "broker", "clickhouse_url": "ClickHouse URL"}

BROKER_OPTION = click.option(
    "--broker", help="Kafka bootstrap, e.g. kafka://host:9092 [env KAFKA_BROKER]"
)
CLICKHOUSE_OPTION = click.option(
    "--clickhouse",
    "clickhouse_url",
    help="http://user:pass@host:8123/db or chdb://path [env CLICKHOUSE_URL]",
)
CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="journeys.yaml [env PARCOURS_CONFIG; default schemas/journeys.yaml]",
)


def shown_option(name: str, default: object, kind: click.ParamType, help: str) -> Callable:
    """An option whose default --help shows, checked against `kind` (a range)."""
    return click.option(name, default=default, show_default=True, type=kind, help=help)


def share_option(name: str, default: float, help: str) -> Callable:
    """A share between 0 and 1, e.g. --abandon-rate 0.25."""
    return shown_option(name, default, click.FloatRange(0.0, 1.0), help)


def work_dir_option(folder: str) -> Callable:
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        default=Path(".parcours"),
        show_default=True,
        help=f"writes under DATA_DIR/{folder}, wiped first",
    )


def settings_needing(*needed: str, **overrides: object) -> Settings:
    """Settings from the environment and the flags; a usage error naming what is missing
    (`broker`, `clickhouse_url`) and how to start the local stack instead."""
    settings = Settings().with_overrides(**overrides)
    for name in needed:
        if not getattr(settings, name):
            raise click.UsageError(LOCAL_STACK_HINT.format(what=NEEDED[name]))
    return settings


@contextmanager
def one_line_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Errors of these kinds (bad configuration and the like) as one line, exit code 1."""
    caught: tuple[type[Exception], ...] = (ConfigError, *kinds)
    try:
        yield
    except caught as exc:
        # Messages quote files and values: no control characters reach the terminal.
        raise click.ClickException(printable(str(exc), 2000)) from None


def _not_bootstrap_failures(record: logging.LogRecord) -> bool:
    # aiokafka logs each failed bootstrap attempt before it raises; the raise is reported.
    return not str(record.msg).startswith('Unable connect to "')


@contextmanager
def broker_errors(bootstrap: str) -> Iterator[None]:
    """An unreachable broker as one line naming it and what to check, exit code 1."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addFilter(_not_bootstrap_failures)
    try:
        yield
    except KafkaConnectionError:
        raise click.ClickException(
            f"cannot reach the Kafka broker at {bootstrap}; check --broker or KAFKA_BROKER, "
            "or start one with `parcours local-broker`"
        ) from None
    except (KafkaError, OSError) as exc:
        message = f"Kafka broker {bootstrap}: {printable(str(exc), 300)}"
        raise click.ClickException(message) from None
    finally:
        aiokafka_log.removeFilter(_not_bootstrap_failures)


def ready_folder(folder: Path, setting: str) -> Path:
    """`folder`, created with its parents if new; one clear line if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"{setting}={folder}: cannot create it ({exc.strerror}); set it to a folder "
            "you can write to"
        ) from None
    return folder


def checked_config(settings: Settings) -> Config:
    with one_line_errors():
        return load_config(settings.config_path)


def numbers(kind: type) -> Callable:
    """A callback parsing comma-separated positive numbers, e.g. --workers 1,2."""

    def parse(_ctx: object, param: click.Parameter, value: str) -> list:
        try:
            found = [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"{value!r}: give comma-separated numbers, e.g. 1,2") from None
        if any(n <= 0 for n in found):
            raise click.BadParameter(f"{value!r}: every number must be above 0")
        return found

    return parse
