"""Run the parcours worker: check config, migrate ClickHouse, serve metrics, start Faust."""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import faust

from streams import metrics
from streams.clickhouse.client import connect, migrate, write_stage_order
from streams.clickhouse.sink import ClickHouseSink
from streams.config import Config, load_config
from streams.config.settings import Settings
from streams.pipeline.app import create_app
from streams.pipeline.gc_tuning import tune_gc

log = logging.getLogger(__name__)


def wait_for_migrations(
    sink: ClickHouseSink, url: str, config: Config, timeout_seconds: float = 120.0
) -> None:
    """Apply migrations and record the journeys' stages, waiting for ClickHouse to come up
    (compose starts things together)."""
    stages = {name: list(journey.stages) for name, journey in config.journeys.items()}
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            applied = sink.run_sync(migrate)
            sink.run_sync(partial(write_stage_order, journeys=stages))
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
    sink = ClickHouseSink(
        lambda: connect(settings.clickhouse_url),
        max_backoff_seconds=settings.sink_max_backoff_seconds,
        fault_file=Path(settings.sink_fault_file) if settings.sink_fault_file else None,
    )
    wait_for_migrations(sink, settings.clickhouse_url, config)
    port = metrics.serve(settings.metrics_port)
    if port:
        log.info("metrics on :%d/metrics", port)
    app = create_app(settings, config, sink)
    tune_gc()  # after startup: what it allocated is frozen out of collections
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        sink.close()
