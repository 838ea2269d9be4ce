"""`parcours bench`: throughput of the pipeline with journeys on, against the pure core.

In one run, on the same synthetic events:
  core      ingest + journey steps called in-process (no Kafka, no Faust): the ceiling
            the Python logic itself sets;
  pipeline  the real worker on the local broker and embedded ClickHouse, once with one
            event per message and once with batch envelopes: events pre-produced, then
            timed from the first consumed message until every touchpoint is in
            ClickHouse; journeys are timed until they stop changing.
Figures: events/s, the ratio pipeline/core, and the worker's peak memory (RSS).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from streams.config import load_config
from streams.events import EventParser
from streams.ingest import IngestOutcome, RawMessage, ingest_batch, kafka_partition
from streams.local_stack import LocalBroker
from streams.produce import as_messages, produce
from streams.settings import TOUCHPOINTS, Settings
from streams.stitching import DueIndex, Message, StepResult, journey_step
from streams.synth import generate

PARTITIONS = 4


@dataclass
class Figure:
    mode: str
    events: int
    messages: int
    seconds: float
    events_per_second: float
    journeys_settled_seconds: float | None = None
    worker_peak_rss_mb: float | None = None


class Core:
    """Ingest and journey steps in-process (no Kafka, no Faust), batch by batch, as the
    agents call them, with state in dicts."""

    def __init__(self) -> None:
        self.settings = Settings()
        self.config = load_config(self.settings.config_path)
        self.parser = EventParser(self.config.touchpoint_types, max_age_seconds=0)
        self.seen: dict = {}
        self.states: dict = {}
        self.watermarks: dict = {}
        self.due = DueIndex()
        self.offset = 0

    def step(self, chunk: list[tuple[bytes, bytes]]) -> tuple[IngestOutcome, StepResult]:
        raw = [
            RawMessage(k, v, TOUCHPOINTS, kafka_partition(k.decode(), PARTITIONS), self.offset + i)
            for i, (k, v) in enumerate(chunk)
        ]
        self.offset += len(chunk)
        outcome = ingest_batch(
            raw,
            self.parser,
            self.config.phases,
            lambda key, _p: self.seen.get(key),
            lambda key: kafka_partition(key, PARTITIONS),
            now_ms=int(time.time() * 1000),
            dedupe_window_ms=int(self.settings.dedupe_window_seconds * 1000),
            dedupe_max_ids=self.settings.dedupe_max_ids_per_key,
        )
        for key, (_, ids) in outcome.seen_updates.items():
            self.seen[key] = ids
        resolved = [  # through JSON, as on the topic
            Message(None, p, 0, orjson.loads(orjson.dumps({"events": evs})))
            for p, evs in outcome.forward.items()
        ]
        result = journey_step(
            self.config,
            resolved,
            lambda key, _p: self.states.get(key),
            self.watermarks,
            self.due,
            wall_ms=int(time.time() * 1000),
        )
        for key, (_, state) in result.states.items():
            self.states[key] = state
        return outcome, result


def run_core(messages: list[tuple[bytes, bytes]], events: int, batch: int = 2000) -> Figure:
    core = Core()
    started = time.perf_counter()
    for start in range(0, len(messages), batch):
        core.step(messages[start : start + batch])
    seconds = time.perf_counter() - started
    return Figure("core (in-process)", events, len(messages), seconds, events / seconds)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_pipeline(
    mode: str, messages: list[tuple[bytes, bytes]], events: int, work: Path, timeout: float
) -> Figure:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with LocalBroker(log_path=work / "broker.log") as broker:
        produce(broker.bootstrap, TOUCHPOINTS, messages)  # all there before the worker starts
        with broker.worker(work, PARCOURS_MAX_AGE_SECONDS="0") as worker:
            deadline = time.monotonic() + timeout
            consumed = ("parcours_messages_consumed_total", (("topic", TOUCHPOINTS),))
            while worker.metrics().get(consumed, 0) == 0:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the worker consumed nothing:\n{worker.log_tail()}")
                time.sleep(0.02)
            started = time.perf_counter()
            worker.wait_for_rows({"touchpoints": events}, timeout)
            seconds = time.perf_counter() - started
            worker.wait_until_quiet("journeys", quiet_seconds=2.0, timeout=timeout)
            settled = time.perf_counter() - started - 2.0
            rss = peak_rss_mb(worker.process.pid)
    return Figure(mode, events, len(messages), seconds, events / seconds, settled, rss)


def run_bench(
    customers: int, envelope: int, seed: int, data_dir: Path, timeout: float, as_json: bool
) -> list[Figure]:
    # Live traffic is dense: customers arrive over ten minutes, acting every 5 to 20 s,
    # so a producer flushing every 30 s has several events of a customer to batch.
    events = generate(customers, seed=seed, arrivals_seconds=600, max_gap_seconds=20)
    singles = as_messages(events)
    batched = as_messages(events, envelope_size=envelope, window_ms=30_000)
    say = (lambda *_: None) if as_json else print
    say(f"parcours bench: {len(events):,} events of {customers:,} customers")
    figures = [run_core(singles, len(events))]
    say(f"  core:      {figures[-1].events_per_second:,.0f} events/s")
    for mode, messages in (
        ("pipeline, 1 event/message", singles),
        (f"pipeline, envelopes of ≤{envelope}", batched),
    ):
        figures.append(run_pipeline(mode, messages, len(events), data_dir / "bench", timeout))
        say(f"  {mode}: {figures[-1].events_per_second:,.0f} events/s")
    if as_json:
        print(json.dumps([asdict(f) for f in figures], indent=2))
    else:
        print_table(figures)
    return figures


def print_table(figures: list[Figure]) -> None:
    core = figures[0].events_per_second
    print(
        f"\n{'mode':<32} {'events':>8} {'messages':>9} {'seconds':>8} {'events/s':>10} "
        f"{'vs core':>7} {'journeys settled s':>19} {'worker peak RSS MB':>19}"
    )
    for f in figures:
        settled = "" if f.journeys_settled_seconds is None else f"{f.journeys_settled_seconds:.1f}"
        rss = "" if f.worker_peak_rss_mb is None else f"{f.worker_peak_rss_mb:.0f}"
        print(
            f"{f.mode:<32} {f.events:>8,} {f.messages:>9,} {f.seconds:>8.2f} "
            f"{f.events_per_second:>10,.0f} {f.events_per_second / core:>7.2f} "
            f"{settled:>19} {rss:>19}"
        )
