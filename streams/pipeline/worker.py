"""Run the parcours worker: check config, migrate ClickHouse, serve metrics, start Faust."""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import partial
from pathlib import Path

import faust

from streams import metrics
from streams.clickhouse.client import connect, masked, migrate, write_stage_order
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
                raise SystemExit(f"ClickHouse at {masked(url)} is not usable: {exc}") from exc
            log.warning("waiting for ClickHouse at %s (%s)", masked(url), exc)
            time.sleep(2.0)


STOP_GRACE_SECONDS = 8.0


class StoppingWorker(faust.Worker):
    """A Faust worker that stops within STOP_GRACE_SECONDS of SIGTERM in every state.

    Faust stops gracefully by waiting for each agent's batch in progress; a sink retrying
    an insert while ClickHouse is down never finishes its batch. Leaving the batch
    unfinished is safe: its offsets are committed only once it is written, so after the
    grace period the process exits as a kill would, and the next start writes the batch
    again (inserts carry deduplication tokens). Letting Faust drop the batch instead
    (`stream_wait_empty=False`) would commit offsets past it: measured, it lost the rows.
    """

    def _on_sigterm(self) -> None:
        _exit_after(STOP_GRACE_SECONDS)
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        _exit_after(STOP_GRACE_SECONDS)
        super()._on_sigint()


def _exit_after(seconds: float) -> None:
    def exit_now() -> None:
        log.warning(
            "still stopping after %.0fs (a batch waits for ClickHouse): exiting; its offsets "
            "are not committed, so the next start writes it",
            seconds,
        )
        logging.shutdown()
        os._exit(0)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


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
    worker = StoppingWorker(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    finally:
        sink.close()
