"""What the worker reports besides per-batch counts: label sets made visible up front,
a periodic scan of its state, and consumer lag."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping

from faust.types import TP

from streams import metrics
from streams.config import Config
from streams.core.events import REASONS
from streams.core.guardrails import (
    CAPPED,
    DUPLICATE,
    EXPIRED,
    HANDED_OFF,
    OPTED_OUT,
    OUTRANKED,
    RULE_REMOVED,
    SAMPLED_OUT,
)
from streams.core.journeys import OUTSIDE_REASONS
from streams.core.state import CustomerState

SUPPRESSION_REASONS = (
    OPTED_OUT,
    HANDED_OFF,
    DUPLICATE,
    OUTRANKED,
    SAMPLED_OUT,
    CAPPED,
    EXPIRED,
    RULE_REMOVED,
)
JOURNEY_OUTCOMES = ("opened", "completed", "expired", "superseded")
PROCESSING_STEPS = ("ingest", "journeys")


def show_every_series(config: Config, tables: Iterable[str]) -> None:
    """Create every series of a closed label set at 0, so that dashboards and alerts see
    "nothing happened" rather than "no data" (a rate over a missing series is empty)."""
    for reason in REASONS:
        metrics.DEAD_LETTERS.labels(reason)
    for step in PROCESSING_STEPS:
        metrics.PROCESSING.labels(step)
    for table in tables:
        for family in (
            metrics.SINK_ROWS,
            metrics.SINK_BATCHES,
            metrics.SINK_FAILURES,
            metrics.SINK_REJECTED,
        ):
            family.labels(table)
        metrics.SINK_BACKLOG.labels(table)
        metrics.SINK_LAST_WRITE.labels(table)
    for journey in config.journeys:
        for outcome in JOURNEY_OUTCOMES:
            metrics.JOURNEYS.labels(journey, outcome)
        for reason in OUTSIDE_REASONS:
            metrics.OUTSIDE_JOURNEYS.labels(journey, reason)
    for rule in config.leaks.values():
        metrics.LEAKS.labels(rule.name, rule.category)
    for name in config.surveys.rules:
        for reason in SUPPRESSION_REASONS:
            metrics.SURVEY_SUPPRESSIONS.labels(name, reason)
        for why in ("waiting", "held"):
            metrics.INVITATIONS_HELD.labels(name, why).set(0)
    for name in config.follow_ups.rules:
        for status in ("open", "closed"):
            metrics.FOLLOW_UPS.labels(name, status)
        metrics.FOLLOW_UPS_OPEN.labels(name).set(0)
        metrics.FOLLOW_UPS_OVERDUE.labels(name).set(0)


def answer_subjects(config: Config) -> dict[str, str]:
    """metric -> what the one survey rule of that metric asks about (see AnswerScores)."""
    subjects: dict[str, set[str]] = {}
    for rule in config.surveys.rules.values():
        subject = rule.touchpoint or rule.stage or rule.leak or "relationship"
        subjects.setdefault(rule.metric, set()).add(subject)
    return {metric: found.pop() for metric, found in subjects.items() if len(found) == 1}


def scan_journey_state(
    states: Iterable[CustomerState | None], partitions: set[int], now_ms: int | None = None
) -> None:
    """Count keys, retained touchpoints, open journeys (by journey and stage), held
    invitations, and open and overdue follow-up tasks (at wall time `now_ms`) of the
    states on `partitions` (the ones this process owns; standby copies are skipped)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    keys = events = 0
    open_journeys: Counter = Counter()
    tasks_open: Counter = Counter()
    tasks_overdue: Counter = Counter()
    held: Counter = Counter()
    for state in states:
        if not state or state.partition not in partitions:
            continue
        keys += 1
        events += len(state.events)
        contact = state.contact or {}
        for task in contact.get("tasks", {}).values():
            tasks_open[task["rule"]] += 1
            tasks_overdue[task["rule"]] += task["due_ms"] < now_ms
        for row in contact.get("held", ()):
            held[row["rule"], "held" if row.get("held_for") else "waiting"] += 1
        for emitted in state.emitted.values():
            if emitted.signature.status == "open":
                open_journeys[emitted.journey, emitted.stage] += 1
    metrics.STATE_KEYS.labels("journey-state").set(keys)
    metrics.STATE_EVENTS.set(events)
    for labels in _open_labels - open_journeys.keys():  # no journey is at that stage now
        metrics.JOURNEYS_OPEN.labels(*labels).set(0)
    for (journey, stage), n in open_journeys.items():
        metrics.JOURNEYS_OPEN.labels(journey, stage).set(n)
    _open_labels.update(open_journeys)
    for gauge, counts in (
        (metrics.FOLLOW_UPS_OPEN, tasks_open),
        (metrics.FOLLOW_UPS_OVERDUE, tasks_overdue),
    ):
        for rule in _task_rules | counts.keys():
            gauge.labels(rule).set(counts.get(rule, 0))
    _task_rules.update(tasks_open)
    for labels in _held_labels | held.keys():
        metrics.INVITATIONS_HELD.labels(*labels).set(held.get(labels, 0))
    _held_labels.update(held)


_open_labels: set[tuple[str, str]] = set()
_task_rules: set[str] = set()
_held_labels: set[tuple[str, str]] = set()


def report_consumer_lag(ends: dict, committed: Mapping) -> None:
    """Lag per topic partition: end offset (next to be written) minus committed offset."""
    metrics.CONSUMER_LAG.clear()  # partitions revoked in a rebalance are not ours any more
    for tp, end in ends.items():
        if end is None:
            continue
        done = committed.get(tp) or 0
        metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, end - done))


class BrokerResetWatch:
    """Notices a broker that lost its data (a restarted in-memory broker, a recreated
    topic): a partition's end offset falls below the offset committed on it, or the
    committed offset goes backwards. Each reset is reported once."""

    def __init__(self) -> None:
        self.highest: dict = {}  # topic partition -> highest committed offset seen
        self.told: dict = {}  # topic partition -> the stale committed offset reported

    def check(self, ends: dict, committed: Mapping) -> list[tuple[TP, int, int]]:
        """(topic partition, end or committed offset now, offset before) of new resets."""
        resets = []
        for tp, done in committed.items():
            if done is None:
                continue
            before = self.highest.get(tp, 0)
            end = ends.get(tp)
            if end is not None and end < done:
                if self.told.get(tp) != done:  # until a new commit replaces the stale one
                    resets.append((tp, end, done))
                    self.told[tp] = done
                self.highest[tp] = 0  # the new log starts over
            elif done < before:
                resets.append((tp, done, before))
                self.highest[tp] = done
            else:
                self.highest[tp] = done
        return resets
