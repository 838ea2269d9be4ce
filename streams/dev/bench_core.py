"""The in-process core `parcours bench` times: ingest and journey steps, no Kafka, no Faust.

It imports only the core and its config, so a child timing or counting it (see
streams.dev.bench_compare) starts quickly, which counts under callgrind.
"""

from __future__ import annotations

import time

import orjson

from streams.config import Config, load_config
from streams.config.settings import TOUCHPOINTS, Settings
from streams.core.events import EventParser
from streams.core.ingest import IngestOutcome, RawMessage, ingest_batch, kafka_partition
from streams.core.stitching import DueIndex, Folds, Message, StepResult, journey_step
from streams.pipeline.gc_tuning import tune_gc


class Core:
    """Ingest and journey steps in-process (no Kafka, no Faust), batch by batch, as the
    agents call them, with state in dicts; garbage collection tuned as in the worker."""

    def __init__(self, partitions: int = 4, config: Config | None = None) -> None:
        self.settings = Settings()
        self.partitions = partitions
        self.config = config or load_config(self.settings.config_path)
        self.parser = EventParser(self.config.touchpoint_types, max_age_seconds=0)
        self.seen: dict = {}
        self.states: dict = {}
        self.watermarks: dict = {}
        self.due = DueIndex()
        self.folds = Folds(self.settings.fold_cache_keys)
        self.offset = 0
        self.ingest_seconds = 0.0  # of the steps' time: parse, validate, dedupe
        self.journey_seconds = 0.0  # ... and the journey step (identity, customer steps)
        tune_gc()

    def partition_of(self, key: str) -> int:
        return kafka_partition(key, self.partitions)

    def step(
        self, chunk: list[tuple[bytes, bytes]], wall_ms: int | None = None
    ) -> tuple[IngestOutcome, StepResult]:
        """One batch of `touchpoints` messages through ingest and the journey step; the
        wall clock is now unless given."""
        wall_ms = int(time.time() * 1000) if wall_ms is None else wall_ms
        raw = [
            RawMessage(k, v, TOUCHPOINTS, self.partition_of(k.decode()), self.offset + i)
            for i, (k, v) in enumerate(chunk)
        ]
        self.offset += len(chunk)
        started = time.perf_counter()
        outcome = ingest_batch(
            raw,
            self.parser,
            self.config.phases,
            lambda key, _p: self.seen.get(key),
            self.partition_of,
            now_ms=wall_ms,
            dedupe_window_ms=int(self.settings.dedupe_window_seconds * 1000),
            dedupe_max_ids=self.settings.dedupe_max_ids_per_key,
        )
        for key, (_, ids) in outcome.seen_updates.items():
            self.seen[key] = ids
        # Each customer's events are ingested on their own partition (the messages are
        # keyed by customer), so they go on in memory, as in the worker's one pass
        # (streams.pipeline.runner), not through the touchpoints-resolved topic.
        resolved = [Message(None, p, 0, {"events": evs}) for p, evs in outcome.forward.items()]
        ingested = time.perf_counter()
        result = journey_step(
            self.config,
            resolved,
            lambda key, _p: self.states.get(key),
            self.watermarks,
            self.due,
            wall_ms=wall_ms,
            folds=self.folds,
        )
        self.journey_seconds += time.perf_counter() - ingested
        self.ingest_seconds += ingested - started
        for key, (_, state) in result.states.items():
            if state is None:
                self.states.pop(key, None)
            else:
                self.states[key] = state  # the in-memory table holds the objects
        return outcome, result

    def state_bytes_per_customer(self) -> float:
        """Serialized state (journey state and seen ids, as the changelogs hold it) per key."""
        keys = self.states.keys() | self.seen.keys()
        size = sum(len(orjson.dumps(v.to_json())) for v in self.states.values())
        size += sum(len(orjson.dumps(v)) for v in self.seen.values())
        return size / max(1, len(keys))
