"""journeys.yaml loading: the default is valid; errors name file, line, key and fix."""

from __future__ import annotations

import re

import pytest

from streams.config import ConfigError, duration_ms, load_config
from streams.config.durations import duration_text
from streams.config.settings import SCHEMAS_DIR
from streams.dev.synth import generate

BASE = """\
touchpoint_types:
  visit: {phase: before}
  buy: {phase: during}
journeys:
  shop:
    stages:
      - {name: browse, touchpoints: [visit]}
      - {name: bought, touchpoints: [buy]}
    entry: [visit]
    goal: [buy]
    expiry: 2h
"""


def write(tmp_path, text):
    path = tmp_path / "journeys.yaml"
    path.write_text(text)
    return path


def test_the_default_config_declares_every_type_the_demo_emits():
    types = load_config(SCHEMAS_DIR / "journeys.yaml").touchpoint_types
    emitted = {event["type"] for event in generate(2000, seed=1)}
    assert emitted - set(types) == set()
    assert len(emitted) >= 10
    assert types["purchase"].phase == "during"


def test_the_default_journeys_have_the_stages_cx_teams_map():
    journeys = load_config(SCHEMAS_DIR / "journeys.yaml").journeys
    assert journeys["purchase"].stages == (
        "awareness",
        "consideration",
        "checkout",
        "purchase",
        "delivery",
        "post_purchase",
    )
    # ...and the ticket's closure, recorded after the goal (help desks close weeks later)
    assert journeys["support_resolution"].stages == ("contact", "follow_up", "resolved", "closure")
    assert journeys["support_resolution"].goal == frozenset({"ticket_resolved"})
    assert journeys["onboarding"].stages == ("signup", "first_use", "activated")


def test_a_minimal_config_loads_with_its_durations(tmp_path):
    config = load_config(write(tmp_path, BASE))
    shop = config.journeys["shop"]
    assert shop.stage_of == {"visit": 0, "buy": 1}
    assert shop.expiry_ms == 7_200_000
    assert config.allowed_lateness_ms == 60_000


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("1.5m", 90_000), ("7d", 604_800_000)])
def test_durations(text, ms):
    assert duration_ms(text) == ms
    assert duration_ms(duration_text(ms)) == ms  # written back in its largest whole unit


def test_durations_are_written_in_their_largest_whole_unit():
    assert [duration_text(ms) for ms in (30 * 86_400_000, 5_400_000, 90_000, 1500)] == [
        "30d",
        "90m",
        "90s",
        "1.5s",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  buy: {phase: during}",
            "  buy: {phase: later}",
            [":3:", "touchpoint_types.buy.phase", "use one of: before, during, after"],
        ),
        (
            "  buy: {phase: during}",
            "  buy: {phase: during, colour: red}",
            [":3:", "'colour' was unexpected", "allowed keys here: channel, phase, signal"],
        ),
        ("  visit: {phase: before}", "  Bad-Name: {phase: before}", [":1:", "lower_snake_case"]),
        ("journeys:", "trips:", ["'journeys' is a required property", "add the missing key"]),
        (
            "expiry: 2h",
            "expiry: -2h",
            [":11:", "journeys.shop.expiry", "'-2h' is not a duration", "like 90s, 30m, 2h"],
        ),
        (
            "  buy: {phase: during}",
            "  buy: {phase: during, chanel: web}",
            [":3:", "touchpoint_types.buy: unknown key `chanel`, did you mean `channel`?"],
        ),
        (
            "touchpoints: [buy]}",
            "touchpoints: [buy, refund]}",
            [":8:", "journeys.shop.stages.1.touchpoints.1", "'refund' is not declared"],
        ),
        (
            "goal: [buy]",
            "goal: [visit2]",
            [":10:", "journeys.shop.goal.0", "'visit2' is in no stage", "add it to a stage"],
        ),
        (
            "  buy: {phase: during}",
            "  buy: {phase: during}\n  wave: {phase: after}",
            [":4:", "touchpoint_types.wave", "in no journey", "signal: true"],
        ),
        (
            "{name: bought, touchpoints: [buy]}",
            "{name: browse, touchpoints: [buy]}",
            [":8:", "stage 'browse' appears twice"],
        ),
        (
            "{name: bought, touchpoints: [buy]}",
            "{name: bought, touchpoints: [visit]}",
            [":8:", "already in stage 'browse'"],
        ),
        ("expiry: 2h", "expiry: 2h\n  [oops", ["not valid YAML"]),
    ],
)
def test_errors_point_at_the_line_and_say_how_to_fix(tmp_path, old, new, expected):
    assert old in BASE
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, BASE.replace(old, new)))
    message = str(error.value)
    assert message.startswith(str(tmp_path / "journeys.yaml"))
    for part in expected:
        assert part in message, message
    assert "does not match" not in message  # a regex is no help to a user


def test_a_misspelt_key_inside_one_of_several_shapes_is_named_not_another_shapes_need(tmp_path):
    """A leak rule is one of several shapes (absence, repeat, ...): `kindd` used to be
    reported as the absence shape's missing `touchpoint`."""
    shipped = (SCHEMAS_DIR / "journeys.yaml").read_text()
    assert "    kind: absence" in shipped
    path = tmp_path / "journeys.yaml"
    path.write_text(shipped.replace("    kind: absence", "    kindd: absence", 1))
    with pytest.raises(ConfigError, match=re.escape("unknown key `kindd`, did you mean `kind`?")):
        load_config(path)


def test_signal_types_may_stay_out_of_journeys(tmp_path):
    text = BASE.replace(
        "  buy: {phase: during}", "  buy: {phase: during}\n  wave: {phase: after, signal: true}"
    )
    assert load_config(write(tmp_path, text)).touchpoint_types["wave"].signal


def test_a_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ConfigError, match="PARCOURS_CONFIG"):
        load_config(tmp_path / "absent.yaml")


SURVEYS = """\
surveys:
  quiet_hours: {from: "21:00", to: "08:00", time_zone: Europe/Paris}
  rules:
    after_buying:
      trigger: completion
      journey: shop
      stage: bought
      metric: csat
"""


def test_survey_rules_load_with_their_guardrails(tmp_path):
    config = load_config(write(tmp_path, BASE + SURVEYS))
    rule = config.surveys.rules["after_buying"]
    assert (rule.trigger, rule.journey, rule.stage, rule.channel) == (
        "completion",
        "shop",
        "bought",
        "preferred",
    )
    assert config.surveys.quiet_hours.start_minute == 21 * 60
    assert config.segments.default == "default" and config.health.window_ms == 90 * 86_400_000


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("stage: bought", "stage: shipped", [":18:", "rules.after_buying.stage", "its stages are"]),
        ("journey: shop", "journey: trip", [":17:", "journey 'trip' is not declared"]),
        (
            "trigger: completion\n      journey: shop\n      stage: bought",
            "trigger: leak\n      leak: nothing",
            [":17:", "rules.after_buying.leak", "'nothing' is not declared under `leaks`"],
        ),
        (
            "trigger: completion\n      journey: shop\n      stage: bought",
            "trigger: touchpoint",
            [":15:", "'touchpoint' is a required property"],
        ),
        ("time_zone: Europe/Paris", "time_zone: Mars/Base", [":13:", "IANA name"]),
        ('from: "21:00"', 'from: "9pm"', [":13:", "quiet_hours.from"]),
        ("metric: csat", "metric: csat\n      sample: 1.5", [":20:", "sample"]),
        (
            "metric: csat",
            "metric: csat\n      delay: 45d",
            [":20:", "rules.after_buying.delay", "not shorter than surveys.max_wait (30d)"],
        ),
        (
            "metric: csat",
            "metric: csat\n      unless_surveyed_within: soon",
            [":20:", "unless_surveyed_within"],
        ),
    ],
)
def test_survey_errors_point_at_the_line_and_say_how_to_fix(tmp_path, old, new, expected):
    text = BASE + SURVEYS
    assert old in text
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text.replace(old, new)))
    for part in expected:
        assert part in str(error.value), str(error.value)


BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_an_alias_bomb_is_refused_before_anything_walks_it(tmp_path):
    from streams.edge.destinations import DestinationsError, load_destinations
    from streams.edge.replay import MappingError, load_mapping

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB + "touchpoint_types: *i\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml:\d+: .*aliases expand to more than 100,000"):
        load_config(path)
    with pytest.raises(DestinationsError, match="aliases expand"):
        load_destinations(path, env={})
    with pytest.raises(MappingError, match="aliases expand"):
        load_mapping(path)
    # Aliases that expand to a sane size still work.
    small = tmp_path / "small.yaml"
    small.write_text("a: &a [1, 2]\nb: [*a, *a]\n")
    from streams.config.yaml_files import load_yaml

    assert load_yaml(small.read_text())[0] == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
