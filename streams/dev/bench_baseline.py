"""The baseline of `parcours bench`: a bare Faust agent that only decodes the messages.

It reads the same topic as the pipeline, one message at a time as a plain Faust agent
does, parses each with orjson and counts the events (an envelope holds several). Once
it has seen `BENCH_EXPECTED_EVENTS`, it writes the wall time to `BENCH_RESULT_FILE` and
keeps idling until stopped. What the pipeline adds
on top of this is the cost of parcours itself.

Run as `python -m streams.dev.bench_baseline` with KAFKA_BROKER, BENCH_TOPIC,
BENCH_EXPECTED_EVENTS, BENCH_RESULT_FILE and PARCOURS_DATA_DIR set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import faust
import orjson

from streams.pipeline.app import GROUP_TIMINGS, kafka_url


def create_app(broker: str, topic: str, expected: int, result: Path, data_dir: Path) -> faust.App:
    app = faust.App(
        f"parcours-bench-baseline-{os.getpid()}",
        broker=kafka_url(broker),
        store="memory://",
        datadir=str(data_dir),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        **GROUP_TIMINGS,  # as the pipeline's: its join is not what is measured
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    counted = {"events": 0}

    @app.agent(source)
    async def decode(stream: faust.StreamT) -> None:
        async for value in stream:
            doc = orjson.loads(value)
            counted["events"] += len(doc["events"]) if "events" in doc else 1
            if counted["events"] == expected:
                result.write_bytes(orjson.dumps({"events": expected, "finished_at": time.time()}))

    return app


def main() -> None:
    env = os.environ
    app = create_app(
        env["KAFKA_BROKER"],
        env["BENCH_TOPIC"],
        int(env["BENCH_EXPECTED_EVENTS"]),
        Path(env["BENCH_RESULT_FILE"]),
        Path(env["PARCOURS_DATA_DIR"]),
    )
    faust.Worker(app, loglevel="info", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
