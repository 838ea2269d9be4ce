"""The rules journeys.yaml declares, as frozen dataclasses. Plain data, no logic.

`streams.config.load` builds them from the file; the core (streams.core) reads them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

SURVEY_CHANNELS = ("email", "sms", "in_app")
DEFAULT_SEGMENT = "default"
DEFAULT_MAX_WAIT_MS = 30 * 86_400_000
ANY_JOURNEY = "any"  # a leak rule's journey: every journey its touchpoints belong to
AFTER_GOAL = ("attach", "reopen", "new")


@dataclass(frozen=True)
class SurveyRule:
    """When to invite a customer to a survey (see the `surveys` section of journeys.yaml)."""

    name: str
    trigger: str  # touchpoint, completion, leak, relational
    metric: str
    channel: str = "preferred"  # email, sms, in_app, or the customer's preferred one
    delay_ms: int = 0
    priority: int = 0  # of several rules firing at once, the highest is sent
    sample: tuple[tuple[str, float], ...] = ((DEFAULT_SEGMENT, 1.0),)  # segment -> rate
    touchpoint: str | None = None  # on touchpoint
    journey: str | None = None  # on completion; narrows a touchpoint rule
    stage: str | None = None  # on completion: once the completed journey reaches it
    leak: str | None = None  # on leak
    every_ms: int = 0  # relational: at most once per this
    touchpoints: frozenset[str] = frozenset()  # relational: activity (empty: any)
    unless_open: frozenset[str] = frozenset()  # held while one of these journeys is open
    unless_follow_up: bool = False  # suppressed while a follow-up task is open
    unless_surveyed_within_ms: int = 0  # held until other rules sent nothing for this long
    once_per_journey: bool = True  # the duplicate guardrail: one invitation per journey

    def sample_rate(self, segment: str) -> float:
        rates = dict(self.sample)
        return rates.get(segment, rates.get(DEFAULT_SEGMENT, 1.0))


@dataclass(frozen=True)
class QuietHours:
    start_minute: int  # minutes after local midnight
    end_minute: int  # may be before start: the quiet time spans midnight
    time_zone: str = "UTC"  # when the customer's own is unknown


@dataclass(frozen=True)
class Surveys:
    rules: dict[str, SurveyRule] = field(default_factory=dict)
    opt_out: frozenset[str] = frozenset()
    opt_in: frozenset[str] = frozenset()
    cap_ms: int = 0  # at most one invitation per this, across rules and channels
    channel_cap_ms: dict[str, int] = field(default_factory=dict)  # ... and per channel
    quiet_hours: QuietHours | None = None
    default_channel: str = "email"
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS  # after the trigger, a held invitation expires

    @functools.cached_property
    def reach_ms(self) -> int:
        """How long a sent invitation matters to the guardrails."""
        waits = [r.unless_surveyed_within_ms for r in self.rules.values()]
        return max([self.cap_ms, *self.channel_cap_ms.values(), *waits])

    @functools.cached_property
    def index(self) -> SurveyIndex:
        """The rules by what fires them, so a step looks only at those that can."""
        index = SurveyIndex()
        for rule in self.rules.values():
            if rule.trigger == "touchpoint" and rule.touchpoint:
                index.on_touchpoint.setdefault(rule.touchpoint, []).append(rule)
            elif rule.trigger == "completion" and rule.journey:
                index.on_completion.setdefault(rule.journey, []).append(rule)
            elif rule.trigger == "leak" and rule.leak:
                index.on_leak.setdefault(rule.leak, []).append(rule)
            elif rule.trigger == "relational":
                index.relational.append(rule)
        return index


@dataclass
class SurveyIndex:
    """Survey rules by trigger: touchpoint type, completed journey, leak rule name."""

    on_touchpoint: dict[str, list[SurveyRule]] = field(default_factory=dict)
    on_completion: dict[str, list[SurveyRule]] = field(default_factory=dict)
    on_leak: dict[str, list[SurveyRule]] = field(default_factory=dict)
    relational: list[SurveyRule] = field(default_factory=list)


@dataclass(frozen=True)
class Tier:
    name: str
    orders: int | None = None  # reached with at least this many purchases
    value: float | None = None  # ... or this much spent


@dataclass(frozen=True)
class Segments:
    from_events: bool = True  # a segment carried by events (the CRM's) wins over tiers
    tiers: tuple[Tier, ...] = ()  # highest first
    default: str = DEFAULT_SEGMENT


HEALTH_WEIGHTS = {
    "leak_high": 15.0,
    "leak_medium": 8.0,
    "leak_low": 3.0,
    "detractor": 20.0,
    "promoter": -10.0,
    "contact": 5.0,
    "idle_day": 0.5,
}


@dataclass(frozen=True)
class Health:
    window_ms: int = 90 * 86_400_000
    contacts: frozenset[str] = frozenset()
    weights: dict[str, float] = field(default_factory=lambda: dict(HEALTH_WEIGHTS))


@dataclass(frozen=True)
class FollowUpRule:
    name: str
    leaks: frozenset[str] = frozenset()  # leak rules that need a person...
    severities: frozenset[str] = frozenset()  # ... or leaks of these severities
    priority: str = "medium"  # low, medium, high
    due_ms: int = 86_400_000

    def wants(self, leak: dict) -> bool:
        return leak["rule"] in self.leaks or leak["severity"] in self.severities


@dataclass(frozen=True)
class FollowUps:
    rules: dict[str, FollowUpRule]
    close_on: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TouchpointType:
    name: str
    phase: str
    channel: str | None
    signal: bool = False


@dataclass(frozen=True)
class Journey:
    """A configured journey: ordered stages, what opens it, what completes it."""

    name: str
    stages: tuple[str, ...]
    stage_of: dict[str, int]  # touchpoint type -> index of the stage it reaches
    entry: frozenset[str]
    goal: frozenset[str]
    expiry_ms: int
    goal_stage: int  # the furthest stage a goal reaches; later stages come after the goal
    # Re-entry: may an entry touchpoint start another instance? never; after_exit (once
    # the previous one completed or closed); always (an open one ends, a new one starts).
    reentry: str = "after_exit"
    # ... and not within this long after the previous instance's exit (after_exit) or
    # start (always).
    cooldown_ms: int = 0
    # An entry touchpoint that may not start an instance while one is open: attach (it
    # joins the open one) or ignore (counted, kept out of the journey).
    blocked_entry: str = "attach"
    # A touchpoint of a stage up to the goal's, after the goal: attach (joins the completed
    # instance), reopen (joins and re-opens it) or new (opens the next instance).
    after_goal: str = "attach"
    close_on: frozenset[str] = frozenset()  # touchpoints that close the instance they join
    # A touchpoint of the journey's types after a `close_on` touchpoint closed the
    # instance: outside (reported outside it; an entry opens the next if re-entry
    # allows), reopen (re-opens it until its expiry has passed) or new (opens the next
    # instance, whatever its type, if re-entry allows).
    after_close: str = "outside"


@dataclass(frozen=True)
class LeakRule:
    """Where a journey leaks (see the `leaks` section of journeys.yaml)."""

    name: str
    kind: str  # absence, repeat, stall, score
    journey: str  # or ANY_JOURNEY
    category: str
    severity: str
    after: str | None = None  # absence: the touchpoint that starts the wait ("entry": the first)
    expect: frozenset[str] = frozenset()  # absence: any of these ends it
    touchpoint: str | None = None  # repeat: the touchpoint counted
    count: int = 0  # repeat: how many make a leak
    unless: frozenset[str] = frozenset()  # repeat: any of these resets the count
    within_ms: int = 0
    stage_limits_ms: tuple[tuple[int, int], ...] = ()  # stall: (stage index, time allowed)
    scores: tuple[tuple[str, str, float], ...] = ()  # score: (metric, "<=" or ">=", bound)


@dataclass(frozen=True)
class Config:
    path: Path
    touchpoint_types: dict[str, TouchpointType]
    journeys: dict[str, Journey]
    leaks: dict[str, LeakRule] = field(default_factory=dict)
    allowed_lateness_ms: int = 60_000
    idle_timeout_ms: int = 30_000
    identity_window_ms: int = 86_400_000
    surveys: Surveys = field(default_factory=Surveys)
    follow_ups: FollowUps = field(default_factory=lambda: FollowUps({}))
    segments: Segments = field(default_factory=Segments)
    health: Health = field(default_factory=Health)

    @property
    def phases(self) -> dict[str, str]:
        """Touchpoint type -> phase (before / during / after the purchase)."""
        return {name: t.phase for name, t in self.touchpoint_types.items()}
