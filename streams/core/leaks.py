"""Leaks: where a journey loses its customer, decided in event time. Pure.

Each rule keeps a small partial state per journey instance (a `Tracker`), fed the
instance's touchpoints in order, and finds the first leak it describes, with the event
time at which that leak is decided (`due_ms`): a leak is reported once the watermark
reaches it, when no touchpoint that could still arrive on time can change the answer. A
rule finds at most one leak per journey, and a leak's id is its rule and the touchpoint
it is about (not the journey, whose id an identity merge may change), so it is reported
once whatever the order of arrival, the batch sizes, merges or restarts.

    absence  after an `after` touchpoint at t, none of `expect` in [t, t + within):
             due at t + within
    repeat   `count` of `touchpoint` within `within`, no `unless` since the first:
             due just after the last of them
    stall    the journey reaches a stage at t and no later stage in [t, t + limit),
             while not completed: due at t + limit
    score    a `touchpoint` carrying a metric and a score that meet `scores` (a
             detractor's survey response): due just after it

A rule names one journey, or `any`: every journey its touchpoints belong to.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from streams.config import Config, Journey, LeakRule
from streams.config.rules import ANY_JOURNEY
from streams.core.state import Event


@dataclass(frozen=True)
class Leak:
    rule: LeakRule
    journey_id: str
    due_ms: int
    anchor: Event  # the touchpoint the leak is about


@functools.lru_cache(maxsize=1 << 16)  # hashed again for every open journey on each step
def leak_id(rule: str, anchor_event_id: str) -> str:
    return hashlib.blake2b(f"{rule}/{anchor_event_id}".encode(), digest_size=12).hexdigest()


class Tracker:
    """One rule's partial state over one journey instance, fed its touchpoints in order:
    O(1) per touchpoint (absence keeps its open waits)."""

    def __init__(self, rule: LeakRule, stage_of: dict[str, int]) -> None:
        self.rule = rule
        self.stage_of = stage_of
        self.found: tuple[int, Event] | None = None  # (due, anchor), once decided for good

    def fresh(self) -> Tracker:
        return type(self)(self.rule, self.stage_of)

    def feed(self, event: Event, completed_ms: int | None) -> None:
        raise NotImplementedError

    def reopened(self) -> None:
        """The journey was re-opened after its goal."""

    def pending(self, completed_ms: int | None) -> tuple[int, Event] | None:
        return self.found

    def leak(self, journey_id: str, completed_ms: int | None) -> Leak | None:
        found = self.pending(completed_ms)
        return None if found is None else Leak(self.rule, journey_id, *found)


class _Absence(Tracker):
    def __init__(self, rule: LeakRule, stage_of: dict[str, int]) -> None:
        super().__init__(rule, stage_of)
        self.waits: list[Event] = []  # `after` touchpoints no `expect` has answered yet
        self.first = True

    def feed(self, event: Event, completed_ms: int | None) -> None:
        rule = self.rule
        if self.found is None and event.type in rule.expect and self.waits:
            # Answers every wait still open at its time; the first one that ran out is the leak.
            self.waits = [w for w in self.waits if w.ts_ms + rule.within_ms <= event.ts_ms]
            if self.waits:
                self.found = (self.waits[0].ts_ms + rule.within_ms, self.waits[0])
        if rule.after == "entry":  # the first touchpoint, unless it is itself expected
            anchors = self.first and event.type not in rule.expect
        else:
            anchors = event.type == rule.after
        if anchors and self.found is None:
            self.waits.append(event)
        self.first = False

    def pending(self, completed_ms: int | None) -> tuple[int, Event] | None:
        if self.found is not None or not self.waits:
            return self.found
        return self.waits[0].ts_ms + self.rule.within_ms, self.waits[0]


class _Repeat(Tracker):
    def __init__(self, rule: LeakRule, stage_of: dict[str, int]) -> None:
        super().__init__(rule, stage_of)
        self.counted: list[Event] = []

    def feed(self, event: Event, completed_ms: int | None) -> None:
        rule = self.rule
        if self.found is not None:
            return
        if event.type in rule.unless:
            self.counted = []
        elif event.type == rule.touchpoint:
            self.counted = [e for e in self.counted if event.ts_ms - e.ts_ms < rule.within_ms]
            self.counted.append(event)
            if len(self.counted) >= rule.count:
                # +1: a touchpoint at the same time still counts
                self.found = (event.ts_ms + 1, self.counted[0])


class _Stall(Tracker):
    def __init__(self, rule: LeakRule, stage_of: dict[str, int]) -> None:
        super().__init__(rule, stage_of)
        self.limits = dict(rule.stage_limits_ms)
        self.furthest = -1
        self.since: Event | None = None
        self.done = False  # progress after the goal, or a stall decided: nothing changes

    def feed(self, event: Event, completed_ms: int | None) -> None:
        if self.done:
            return
        stage = self.stage_of[event.type]
        if stage <= self.furthest:
            return
        since, limit = self.since, self.limits.get(self.furthest)
        if since is not None and limit is not None and event.ts_ms >= since.ts_ms + limit:
            self.found, self.done = (since.ts_ms + limit, since), True  # progress came too late
            return
        self.furthest, self.since = stage, event
        if completed_ms is not None and event.ts_ms >= completed_ms:
            self.done = True

    def reopened(self) -> None:
        if self.found is None:
            self.done = False

    def pending(self, completed_ms: int | None) -> tuple[int, Event] | None:
        if self.done:
            return self.found
        since, limit = self.since, self.limits.get(self.furthest)
        if since is None or limit is None:
            return None
        if completed_ms is not None and completed_ms < since.ts_ms + limit:
            return None
        return since.ts_ms + limit, since


class _Score(Tracker):
    def feed(self, event: Event, completed_ms: int | None) -> None:
        rule = self.rule
        if self.found is not None or event.type != rule.touchpoint or not event.extras:
            return
        metric, score = event.extras.get("metric"), event.extras.get("score")
        if not isinstance(score, int | float):
            return
        for name, op, bound in rule.scores:
            if metric == name and (score <= bound if op == "<=" else score >= bound):
                self.found = (event.ts_ms + 1, event)
                return


TRACKERS: dict[str, type[Tracker]] = {
    "absence": _Absence,
    "repeat": _Repeat,
    "stall": _Stall,
    "score": _Score,
}


_CACHE: dict[tuple[int, str], tuple[Config, tuple[Tracker, ...]]] = {}


def _trackers(config: Config, journey: str) -> tuple[Tracker, ...]:
    stage_of = config.journeys[journey].stage_of
    return tuple(
        TRACKERS[rule.kind](rule, stage_of)
        for rule in config.leaks.values()
        if rule.journey == journey
        or (rule.journey == ANY_JOURNEY and _watches(rule) <= stage_of.keys())
    )


def trackers_for(config: Config, journey: str) -> tuple[Tracker, ...]:
    """Blank trackers of the rules that watch `journey` (a rule of `journey: any` watches
    every journey its touchpoints belong to); `Tracker.fresh` copies one per instance."""
    cached = _CACHE.get((id(config), journey))
    if cached is None or cached[0] is not config:  # a config is frozen: cache by identity
        cached = _CACHE[(id(config), journey)] = (config, _trackers(config, journey))
    return cached[1]


def _watches(rule: LeakRule) -> set[str]:
    named = {t for t in (rule.after, rule.touchpoint) if t is not None and t != "entry"}
    return named | set(rule.expect) | set(rule.unless)


def leak_row(leak: Leak, customer_key: str, journey: Journey, now_ms: int) -> dict:
    rule = leak.rule
    return {
        "leak_id": leak_id(rule.name, leak.anchor.event_id),
        "rule": rule.name,
        "kind": rule.kind,
        "category": rule.category,
        "severity": rule.severity,
        "customer_key": customer_key,
        "journey_id": leak.journey_id,
        "journey": journey.name,
        "stage": journey.stages[journey.stage_of[leak.anchor.type]],
        "anchor_event_id": leak.anchor.event_id,
        "anchor_type": leak.anchor.type,
        "anchor_ms": leak.anchor.ts_ms,
        "due_ms": leak.due_ms,
        "detected_ms": now_ms,
    }
