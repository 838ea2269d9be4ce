"""The `surveys`, `follow_ups`, `segments` and `health` sections of journeys.yaml, as
plain data.

`streams.config` validates the file against its JSON Schema first; this module turns
the three sections into dataclasses and finds what the schema cannot: names that refer
to undeclared touchpoints, journeys, stages or leaks.
"""

from __future__ import annotations

from streams.config.durations import duration_ms
from streams.config.rules import (
    DEFAULT_MAX_WAIT_MS,
    DEFAULT_SEGMENT,
    HEALTH_WEIGHTS,
    FollowUpRule,
    FollowUps,
    Health,
    QuietHours,
    Segments,
    SurveyRule,
    Surveys,
    Tier,
)

_ms = duration_ms


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
        once_per_journey=spec.get("once_per_journey", True),
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
        named: list[tuple[list[str | int], str]] = (
            [(["touchpoint"], rule["touchpoint"])] if "touchpoint" in rule else []
        )
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
