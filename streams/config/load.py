"""The parcours configuration file (journeys.yaml): load, validate, explain errors.

The file is checked against `schemas/journeys.schema.json`; a violation is
reported with the file, the line of the offending key and a hint at the fix,
because the person reading it is editing YAML, not JSON Schema.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import yaml

from streams.config.durations import duration_ms
from streams.config.rules import ANY_JOURNEY, Config, Journey, LeakRule, TouchpointType
from streams.config.sections import (
    first_survey_problem,
    follow_ups_from,
    health_from,
    segments_from,
    surveys_from,
)
from streams.config.settings import SCHEMAS_DIR
from streams.config.yaml_files import load_yaml

CONFIG_SCHEMA_PATH = SCHEMAS_DIR / "journeys.schema.json"


class ConfigError(ValueError):
    """A configuration file is unusable; the message says where and how to fix it."""


def load_config(path: Path | str) -> Config:
    """Read and validate a configuration file; raise ConfigError naming file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; pass an existing file with --config or PARCOURS_CONFIG"
        ) from None
    try:
        data, root_node = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping with a 'touchpoint_types' key")

    validator = jsonschema.Draft202012Validator(orjson.loads(CONFIG_SCHEMA_PATH.read_bytes()))
    errors = list(validator.iter_errors(data))
    error = _misspelt_key(errors) or jsonschema.exceptions.best_match(errors)
    if error is not None:
        raise ConfigError(_explain(path, root_node, error))

    types = {
        name: TouchpointType(name, spec["phase"], spec.get("channel"), spec.get("signal", False))
        for name, spec in data["touchpoint_types"].items()
    }
    journeys = {name: _journey(name, spec) for name, spec in data["journeys"].items()}
    problem = (
        _first_semantic_problem(types, data["journeys"])
        or _first_leak_problem(journeys, data.get("leaks", {}))
        or first_survey_problem(data, set(types), journeys, set(data.get("leaks", {})))
    )
    if problem:
        keys, message = problem
        raise ConfigError(
            f"{path}:{_line_of(root_node, keys)}: {'.'.join(map(str, keys))}: {message}"
        )
    event_time = data.get("event_time", {})
    return Config(
        path=path,
        touchpoint_types=types,
        journeys=journeys,
        leaks={name: _leak(name, spec, journeys) for name, spec in data.get("leaks", {}).items()},
        allowed_lateness_ms=duration_ms(event_time.get("allowed_lateness", "60s")),
        idle_timeout_ms=duration_ms(event_time.get("idle_timeout", "30s")),
        identity_window_ms=duration_ms(event_time.get("identity_window", "1d")),
        surveys=surveys_from(data.get("surveys", {})),
        follow_ups=follow_ups_from(data.get("follow_ups", {})),
        segments=segments_from(data.get("segments", {})),
        health=health_from(data.get("health", {})),
    )


def _journey(name: str, spec: dict) -> Journey:
    stage_of = {
        touchpoint: index
        for index, stage in enumerate(spec["stages"])
        for touchpoint in stage["touchpoints"]
    }
    return Journey(
        name=name,
        stages=tuple(stage["name"] for stage in spec["stages"]),
        stage_of=stage_of,
        entry=frozenset(spec["entry"]),
        goal=frozenset(spec["goal"]),
        expiry_ms=duration_ms(spec["expiry"]),
        goal_stage=max(stage_of.get(touchpoint, -1) for touchpoint in spec["goal"]),
        reentry=spec.get("reentry", "after_exit"),
        cooldown_ms=duration_ms(spec.get("cooldown", "0s")),
        blocked_entry=spec.get("blocked_entry", "attach"),
        after_goal=spec.get("after_goal", "attach"),
        close_on=frozenset(spec.get("close_on", [])),
        after_close=spec.get("after_close", "outside"),
    )


def _leak(name: str, spec: dict, journeys: dict[str, Journey]) -> LeakRule:
    journey = _leak_journey(spec, journeys)
    return LeakRule(
        name=name,
        kind=spec["kind"],
        journey=spec["journey"],
        category=spec["category"],
        severity=spec["severity"],
        after=spec.get("after"),
        expect=frozenset(spec.get("expect", [])),
        touchpoint=spec.get("touchpoint"),
        count=spec.get("count", 0),
        unless=frozenset(spec.get("unless", [])),
        within_ms=duration_ms(spec["within"]) if "within" in spec else 0,
        stage_limits_ms=tuple(
            (journey.stages.index(stage), duration_ms(limit))
            for stage, limit in spec.get("stages", {}).items()
        ),
        scores=tuple(
            (metric, bound[:2], float(bound[2:]))
            for metric, bound in spec.get("scores", {}).items()
        ),
    )


def _leak_journey(spec: dict, journeys: dict[str, Journey]) -> Journey:
    """The journey a leak rule names; for `any`, the first one holding its touchpoints
    (stage names and expiry are checked against it)."""
    if spec["journey"] != ANY_JOURNEY:
        return journeys[spec["journey"]]
    named = {spec.get("after"), spec.get("touchpoint"), *spec.get("expect", [])} - {None, "entry"}
    return next(
        (j for j in journeys.values() if named <= j.stage_of.keys()), next(iter(journeys.values()))
    )


def _first_leak_problem(journeys: dict[str, Journey], leaks: dict[str, dict]) -> tuple | None:
    for name, spec in leaks.items():
        where = ["leaks", name]
        if spec["journey"] != ANY_JOURNEY and spec["journey"] not in journeys:
            return [*where, "journey"], (
                f"journey {spec['journey']!r} is not declared; use one of: "
                f"{', '.join(journeys)}, or `any`"
            )
        journey = _leak_journey(spec, journeys)
        if spec["journey"] == ANY_JOURNEY and spec["kind"] == "stall":
            return [*where, "journey"], "a stall rule watches the stages of one named journey"
        for key in ("after", "touchpoint"):
            if key == "after" and spec.get(key) == "entry":
                continue
            if key in spec and spec[key] not in journey.stage_of:
                return [*where, key], _not_in_journey(spec[key], journey)
        for key in ("expect", "unless"):
            for i, touchpoint in enumerate(spec.get(key, [])):
                if touchpoint not in journey.stage_of:
                    return [*where, key, i], _not_in_journey(touchpoint, journey)
        for stage, limit in spec.get("stages", {}).items():
            if stage not in journey.stages:
                return [*where, "stages", stage], (
                    f"stage {stage!r} is not a stage of {journey.name!r}; its stages are: "
                    f"{', '.join(journey.stages)}"
                )
            if duration_ms(limit) > journey.expiry_ms:
                return [*where, "stages", stage], _longer_than_expiry(limit, journey)
        if "within" in spec and duration_ms(spec["within"]) > journey.expiry_ms:
            return [*where, "within"], _longer_than_expiry(spec["within"], journey)
    return None


def _not_in_journey(touchpoint: str, journey: Journey) -> str:
    return (
        f"touchpoint {touchpoint!r} is in no stage of journey {journey.name!r}; leak rules "
        "watch the touchpoints of their journey"
    )


def _longer_than_expiry(text: str, journey: Journey) -> str:
    return (
        f"{text} is longer than the expiry of journey {journey.name!r}, which closes first; "
        "shorten it or lengthen the journey's expiry"
    )


def _first_semantic_problem(
    types: dict[str, TouchpointType], journeys: dict[str, dict]
) -> tuple[list, str] | None:
    """What the schema cannot say: references between sections. (keys, message) or None."""
    used: set[str] = set()
    for name, spec in journeys.items():
        seen_stages: dict[str, int] = {}
        placed: dict[str, str] = {}
        for i, stage in enumerate(spec["stages"]):
            if stage["name"] in seen_stages:
                return ["journeys", name, "stages", i, "name"], (
                    f"stage {stage['name']!r} appears twice; stage names are unique per journey"
                )
            seen_stages[stage["name"]] = i
            for j, touchpoint in enumerate(stage["touchpoints"]):
                where = ["journeys", name, "stages", i, "touchpoints", j]
                if touchpoint not in types:
                    return where, (
                        f"touchpoint {touchpoint!r} is not declared; add it under "
                        "touchpoint_types or fix the name"
                    )
                if touchpoint in placed:
                    return where, (
                        f"touchpoint {touchpoint!r} is already in stage {placed[touchpoint]!r}; "
                        "a touchpoint reaches one stage per journey"
                    )
                placed[touchpoint] = stage["name"]
        for role in ("entry", "goal", "close_on"):
            for j, touchpoint in enumerate(spec.get(role, [])):
                if touchpoint not in placed:
                    return ["journeys", name, role, j], (
                        f"{role} touchpoint {touchpoint!r} is in no stage of journey {name!r}; "
                        "add it to a stage's touchpoints"
                    )
        if spec.get("after_close", "outside") != "outside" and not spec.get("close_on"):
            return ["journeys", name, "after_close"], (
                f"after_close: {spec['after_close']} needs close_on (the touchpoints that "
                "close the journey); add close_on, or remove after_close"
            )
        used |= set(placed)
    for name, declared in types.items():
        if name not in used and not declared.signal:
            return ["touchpoint_types", name], (
                "touchpoint is in no journey; add it to a stage, or mark it `signal: true` "
                "if rules use it outside journeys"
            )
    return None


def _misspelt_key(errors: list[jsonschema.ValidationError]) -> jsonschema.ValidationError | None:
    """An unknown key close to an allowed one, wherever it hides (inside a oneOf branch, it
    would lose to the other branches' "required" errors): the likeliest fix is to spell it."""
    pending = list(errors)
    while pending:
        error = pending.pop(0)
        pending.extend(error.context or ())
        if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
            continue
        if any(_spellings(error).values()):
            return error
    return None


def _spellings(error: jsonschema.ValidationError) -> dict[str, str | None]:
    """Each unknown key of an additionalProperties error, with the allowed key it is
    closest to (None if none is close)."""
    allowed = error.schema.get("properties", {})
    return {
        key: next(iter(difflib.get_close_matches(key, allowed, n=1)), None)
        for key in error.instance
        if key not in allowed
    }


def _explain(path: Path, root_node: yaml.Node | None, error: jsonschema.ValidationError) -> str:
    keys = list(error.absolute_path)
    line = _line_of(root_node, keys)
    where = ".".join(str(k) for k in keys) or "(top level)"
    fix = _FIXES.get(error.validator, "")
    message = error.message
    if error.validator == "pattern":  # the regex would say less than an example
        what, fix = next(
            (said for marker, said in _PATTERNS.items() if marker in error.validator_value),
            ("a valid name", fix),
        )
        message = f"{error.instance!r} is not {what}"
    elif error.validator == "enum":
        fix = "use one of: " + ", ".join(map(str, error.validator_value))
    elif error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        guesses = {k: difflib.get_close_matches(k, allowed, n=1) for k in unknown}
        if unknown and all(guesses.values()):
            said = ", ".join(
                f"unknown key `{k}`, did you mean `{g[0]}`?" for k, g in guesses.items()
            )
            return f"{path}:{line}: {where}: {said}"
        fix = f"remove or rename it; allowed keys here: {', '.join(allowed)}"
    return f"{path}:{line}: {where}: {message}" + (f" ({fix})" if fix else "")


# The config schema's non-name patterns, told apart by a piece of their regex.
_PATTERNS = {
    "(s|m|h|d)$": ("a duration", "use a duration like 90s, 30m, 2h or 7d"),
    "(<=|>=)": ("a threshold", "write it like <= 6 or >= 9"),
    "[0-5][0-9]$": ("a time of day", "write it like 07:30 or 21:00 (24-hour clock)"),
}

_FIXES = {
    "required": "add the missing key",
    # Every pattern in the config schema is a name rule.
    "pattern": "names are lower_snake_case, starting with a letter",
    "type": "check the value's type",
    "minProperties": "declare at least one entry",
    "minItems": "list at least one",
    "uniqueItems": "remove the repeated name",
}


def _line_of(node: yaml.Node | None, keys: list[Any]) -> int:
    """1-based line of the YAML node at `keys`, or of its deepest existing parent."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            if pair is None:
                break
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line
