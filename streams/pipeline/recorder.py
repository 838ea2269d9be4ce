"""The worker's metrics, recorded once per batch by one object (in the spirit of Faust's
sensors): agents hand it what a batch did and know no metric themselves."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping

from streams import metrics
from streams.config import Config
from streams.core.events import LATE, PROCESSING_ERROR
from streams.core.eventtime import NEVER, Watermark
from streams.core.ingest import IngestOutcome
from streams.core.state import CustomerState
from streams.core.stitching import Message, StepResult
from streams.outputs import TABLES, count_outputs
from streams.pipeline import worker_metrics

log = logging.getLogger("parcours.worker")


class Recorder:
    def __init__(self, config: Config, input_topic: str) -> None:
        self.input_topic = input_topic
        self.answers = metrics.AnswerScores(
            worker_metrics.answer_subjects(config), config.touchpoint_types
        )
        self.resets = worker_metrics.BrokerResetWatch()
        worker_metrics.show_every_series(config, TABLES)
        metrics.RECORDS_REFETCHED.labels(input_topic)  # at 0: "none", not "no data"

    def ingested(
        self,
        message_times: Iterable[float],
        outcome: IngestOutcome,
        taken: list[dict],
        started: float,
    ) -> None:
        """An ingest batch: `message_times` are the Kafka timestamps (s) of its messages,
        `taken` the events it took for this partition's customers (`outcome.forward` holds
        the others'), `started` the perf_counter when it began."""
        done = time.time()
        message_times = list(message_times)
        metrics.MESSAGES_CONSUMED.labels(self.input_topic).inc(len(message_times))
        metrics.count_ingested(outcome.tally, outcome.counts["invalid"])
        # Every source seen is shown, at 0 if it keys right: "none", not "no data".
        forwarded = Counter({source: 0 for _type, _channel, source, _result in outcome.tally})
        forwarded.update(e["source"] for events in outcome.forward.values() for e in events)
        for source, n in forwarded.items():
            metrics.EVENTS_FORWARDED.labels(metrics.source_label(source)).inc(n)
        for letter in outcome.dead_letters:
            metrics.DEAD_LETTERS.labels(letter.rejection.reason).inc()
        metrics.observe_many(metrics.PROCESSING.labels("ingest"), (done - t for t in message_times))
        metrics.observe_many(metrics.EVENT_LAG, (done - e["ts_ms"] / 1000 for e in taken))
        self.answers.count(taken)
        metrics.INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)

    def journeys_stepped(
        self, messages: list[Message], result: StepResult, watermarks: dict[int, Watermark]
    ) -> None:
        """A journey-step batch, once its outputs are acknowledged."""
        for partition, mark in watermarks.items():
            if mark.value > NEVER:
                metrics.WATERMARK.labels(str(partition)).set(mark.value / 1000)
            if mark.journeys_ms > NEVER:
                metrics.JOURNEYS_WATERMARK.labels(str(partition)).set(mark.journeys_ms / 1000)
        metrics.LATE_EVENTS.inc(len(result.late))
        metrics.REPLAYED_EVENTS.inc(result.replayed)
        metrics.DEAD_LETTERS.labels(LATE).inc(len(result.late))
        late = Counter(
            (e["type"], e["channel"], metrics.source_label(e["source"])) for _, e in result.late
        )
        for labels, n in late.items():
            metrics.EVENTS.labels(*labels, "late").inc(n)
        metrics.DEAD_LETTERS.labels(PROCESSING_ERROR).inc(len(result.failed))
        metrics.IDENTITY_MERGES.inc(result.merged)
        count_outputs(result.rows)
        for (journey, what), n in result.transitions.items():
            metrics.JOURNEYS.labels(journey, what).inc(n)
        done = time.time()
        metrics.observe_many(
            metrics.PROCESSING.labels("journeys"),
            (
                done - event["ingested_ms"] / 1000
                for message in messages
                for event in message.doc.get("events", ())
                if "ingested_ms" in event
            ),
        )

    def state_scanned(self, states: Iterable[CustomerState | None], mine: set[int]) -> None:
        worker_metrics.scan_journey_state(states, mine)

    def offsets_scanned(self, ends: dict, committed: Mapping) -> None:
        """Consumer lag, and a broker that lost its data (told once in the log)."""
        worker_metrics.report_consumer_lag(ends, committed)
        for tp, now, before in self.resets.check(ends, committed):
            metrics.BROKER_RESETS.inc()
            log.warning(
                "the broker lost its data: %s partition %d starts over at offset %d (this "
                "worker was at %d). Lost with it: the messages on it not consumed yet, the "
                "changelogs of this worker's tables (state lives on in this process, but a "
                "worker started later will not find it), and the committed offsets. Events "
                "sent from now on are processed; resend what producers sent while the "
                "broker was down or before it was consumed.",
                tp.topic,
                tp.partition,
                now,
                before,
            )
