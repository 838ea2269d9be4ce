"""Run the parcours worker: check config, migrate ClickHouse, serve metrics, start Faust."""

from __future__ import annotations

import logging
import time

import faust

from streams import metrics
from streams.app import create_app
from streams.clickhouse import connect, migrate
from streams.config import load_config
from streams.settings import Settings
from streams.sink import ClickHouseSink

log = logging.getLogger(__name__)


def wait_for_migrations(sink: ClickHouseSink, url: str, timeout_seconds: float = 120.0) -> None:
    """Apply migrations, waiting for ClickHouse to come up (compose starts things together)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            applied = sink.run_sync(migrate)
            if applied:
                log.info("ClickHouse migrations applied: %s", ", ".join(applied))
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"ClickHouse at {url} is not usable: {exc}") from exc
            log.warning("waiting for ClickHouse at %s (%s)", url, exc)
            time.sleep(2.0)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    config = load_config(settings.config_path)
    sink = ClickHouseSink(lambda: connect(settings.clickhouse_url))
    wait_for_migrations(sink, settings.clickhouse_url)
    port = metrics.serve(settings.metrics_port)
    if port:
        log.info("metrics on :%d/metrics", port)
    app = create_app(settings, config, sink)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        sink.close()
