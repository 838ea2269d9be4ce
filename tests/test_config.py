"""journeys.yaml loading: the default is valid; errors name file, line, key and fix."""

from __future__ import annotations

import pytest

from streams.config import ConfigError, load_config
from streams.settings import SCHEMAS_DIR
from streams.synth import generate


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "touchpoint_types:\n  a: {phase: before}\n  b:\n    phase: later\n",
            [":4:", "touchpoint_types.b.phase", "use one of: before, during, after"],
        ),
        (
            "touchpoint_types:\n  a: {phase: before, colour: red}\n",
            [":2:", "'colour' was unexpected", "allowed keys here: channel, phase"],
        ),
        ("touchpoint_types:\n  Bad-Name: {phase: before}\n", [":1:", "lower_snake_case"]),
        ("touchpoints:\n  a: {phase: before}\n", ["touchpoint_types", "required"]),
        ("touchpoint_types: [oops\n", ["not valid YAML"]),
    ],
)
def test_errors_point_at_the_line_and_say_how_to_fix(tmp_path, text, expected):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    message = str(error.value)
    assert message.startswith(str(tmp_path / "journeys.yaml"))
    for part in expected:
        assert part in message


def test_a_missing_file_says_how_to_point_at_one(tmp_path):
    with pytest.raises(ConfigError, match="PARCOURS_CONFIG"):
        load_config(tmp_path / "absent.yaml")
