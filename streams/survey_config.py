"""The `surveys`, `follow_ups`, `segments` and `health` sections of journeys.yaml, as
plain data.

`streams.config` validates the file against its JSON Schema first; this module turns
the three sections into dataclasses and finds what the schema cannot: names that refer
to undeclared touchpoints, journeys, stages or leaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.durations import duration_ms
from streams.follow_ups import FollowUpRule, FollowUps

SURVEY_CHANNELS = ("email", "sms", "in_app")
DEFAULT_SEGMENT = "default"
DEFAULT_MAX_WAIT_MS = 30 * 86_400_000


_ms = duration_ms


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


def surveys_from(spec: dict) -> Surveys:
    cap = spec.get("contact_cap", {})
    quiet = spec.get("quiet_hours")
    return Surveys(
        rules={name: _rule(name, rule) for name, rule in spec.get("rules", {}).items()},
        opt_out=frozenset(spec.get("opt_out", [])),
        opt_in=frozenset(spec.get("opt_in", [])),
        cap_ms=_ms(cap["every"]) if "every" in cap else 0,
        channel_cap_ms={ch: _ms(every) for ch, every in cap.get("channels", {}).items()},
        quiet_hours=None
        if quiet is None
        else QuietHours(
            _minute(quiet["from"]), _minute(quiet["to"]), quiet.get("time_zone", "UTC")
        ),
        default_channel=spec.get("default_channel", "email"),
        max_wait_ms=_ms(spec["max_wait"]) if "max_wait" in spec else DEFAULT_MAX_WAIT_MS,
    )


def _rule(name: str, spec: dict) -> SurveyRule:
    sample = spec.get("sample", 1.0)
    return SurveyRule(
        name=name,
        trigger=spec["trigger"],
        metric=spec["metric"],
        channel=spec.get("channel", "preferred"),
        delay_ms=_ms(spec["delay"]) if "delay" in spec else 0,
        priority=spec.get("priority", 0),
        sample=tuple(sample.items()) if isinstance(sample, dict) else ((DEFAULT_SEGMENT, sample),),
        touchpoint=spec.get("touchpoint"),
        journey=spec.get("journey"),
        stage=spec.get("stage"),
        leak=spec.get("leak"),
        every_ms=_ms(spec["every"]) if "every" in spec else 0,
        touchpoints=frozenset(spec.get("touchpoints", [])),
        unless_open=frozenset(spec.get("unless_open", [])),
        unless_follow_up=spec.get("unless_follow_up", False),
        unless_surveyed_within_ms=_ms(spec["unless_surveyed_within"])
        if "unless_surveyed_within" in spec
        else 0,
    )


def follow_ups_from(spec: dict) -> FollowUps:
    return FollowUps(
        rules={
            name: FollowUpRule(
                name,
                leaks=frozenset(rule.get("leaks", [])),
                severities=frozenset(rule.get("severity", [])),
                priority=rule.get("priority", "medium"),
                due_ms=_ms(rule.get("due", "1d")),
            )
            for name, rule in spec.get("rules", {}).items()
        },
        close_on=frozenset(spec.get("close_on", [])),
    )


def _minute(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def segments_from(spec: dict) -> Segments:
    return Segments(
        from_events=spec.get("from_events", True),
        tiers=tuple(
            Tier(t["name"], t.get("orders"), t.get("value")) for t in spec.get("tiers", [])
        ),
        default=spec.get("default", DEFAULT_SEGMENT),
    )


def health_from(spec: dict) -> Health:
    return Health(
        window_ms=_ms(spec.get("window", "90d")),
        contacts=frozenset(spec.get("contacts", [])),
        weights={**HEALTH_WEIGHTS, **spec.get("weights", {})},
    )


def first_survey_problem(
    data: dict, types: set[str], journeys: dict, leaks: set[str]
) -> tuple[list, str] | None:
    """What the schema cannot say about surveys and health: (keys, message) or None."""

    def undeclared(keys: list, touchpoint: str) -> tuple[list, str] | None:
        if touchpoint in types:
            return None
        return keys, f"touchpoint {touchpoint!r} is not declared; add it under touchpoint_types"

    surveys = data.get("surveys", {})
    for key in ("opt_out", "opt_in"):
        for i, touchpoint in enumerate(surveys.get(key, [])):
            if problem := undeclared(["surveys", key, i], touchpoint):
                return problem
    for i, touchpoint in enumerate(data.get("health", {}).get("contacts", [])):
        if problem := undeclared(["health", "contacts", i], touchpoint):
            return problem
    quiet = surveys.get("quiet_hours", {})
    if "time_zone" in quiet and not _known_zone(quiet["time_zone"]):
        return ["surveys", "quiet_hours", "time_zone"], (
            f"{quiet['time_zone']!r} is not a time zone; use an IANA name like Europe/Paris"
        )
    max_wait = surveys.get("max_wait", "30d")
    for name, rule in surveys.get("rules", {}).items():
        where = ["surveys", "rules", name]
        if "delay" in rule and _ms(rule["delay"]) >= _ms(max_wait):
            return [*where, "delay"], (
                f"delay {rule['delay']} is not shorter than surveys.max_wait ({max_wait}): "
                "every invitation would expire; shorten the delay or raise max_wait"
            )
        named = [(["touchpoint"], rule["touchpoint"])] if "touchpoint" in rule else []
        named += [(["touchpoints", i], t) for i, t in enumerate(rule.get("touchpoints", []))]
        for keys, touchpoint in named:
            if problem := undeclared([*where, *keys], touchpoint):
                return problem
        if "journey" in rule and rule["journey"] not in journeys:
            return [*where, "journey"], (
                f"journey {rule['journey']!r} is not declared; use one of: {', '.join(journeys)}"
            )
        if "stage" in rule:
            journey = journeys.get(rule.get("journey"))
            if journey is None:
                return [*where, "stage"], "a stage needs the rule's `journey`"
            if rule["stage"] not in journey.stages:
                return [*where, "stage"], (
                    f"stage {rule['stage']!r} is not a stage of {journey.name!r}; its stages "
                    f"are: {', '.join(journey.stages)}"
                )
        for i, journey_name in enumerate(rule.get("unless_open", [])):
            if journey_name not in journeys:
                return [*where, "unless_open", i], (
                    f"journey {journey_name!r} is not declared; use one of: {', '.join(journeys)}"
                )
        if "leak" in rule and rule["leak"] not in leaks:
            return [*where, "leak"], (
                f"leak rule {rule['leak']!r} is not declared under `leaks`; use one of: "
                f"{', '.join(sorted(leaks)) or '(none declared)'}"
            )
    follow_ups = data.get("follow_ups", {})
    for i, touchpoint in enumerate(follow_ups.get("close_on", [])):
        if problem := undeclared(["follow_ups", "close_on", i], touchpoint):
            return problem
    for name, rule in follow_ups.get("rules", {}).items():
        for i, leak in enumerate(rule.get("leaks", [])):
            if leak not in leaks:
                return ["follow_ups", "rules", name, "leaks", i], (
                    f"leak rule {leak!r} is not declared under `leaks`; use one of: "
                    f"{', '.join(sorted(leaks)) or '(none declared)'}"
                )
    return None


def _known_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
