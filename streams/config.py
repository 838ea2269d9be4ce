"""The parcours configuration file (journeys.yaml): load, validate, explain errors.

The file is checked against `schemas/journeys.schema.json`; a violation is
reported with the file, the line of the offending key and a hint at the fix,
because the person reading it is editing YAML, not JSON Schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import yaml

from streams.settings import SCHEMAS_DIR

CONFIG_SCHEMA_PATH = SCHEMAS_DIR / "journeys.schema.json"


class ConfigError(ValueError):
    """A configuration file is unusable; the message says where and how to fix it."""


@dataclass(frozen=True)
class TouchpointType:
    name: str
    phase: str
    channel: str | None


@dataclass(frozen=True)
class Config:
    path: Path
    touchpoint_types: dict[str, TouchpointType]


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
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping with a 'touchpoint_types' key")

    validator = jsonschema.Draft202012Validator(orjson.loads(CONFIG_SCHEMA_PATH.read_bytes()))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        raise ConfigError(_explain(path, root_node, error))

    types = {
        name: TouchpointType(name=name, phase=spec["phase"], channel=spec.get("channel"))
        for name, spec in data["touchpoint_types"].items()
    }
    return Config(path=path, touchpoint_types=types)


def _explain(path: Path, root_node: yaml.Node | None, error: jsonschema.ValidationError) -> str:
    keys = list(error.absolute_path)
    line = _line_of(root_node, keys)
    where = ".".join(str(k) for k in keys) or "(top level)"
    fix = _FIXES.get(error.validator, "")
    if error.validator == "enum":
        fix = "use one of: " + ", ".join(map(str, error.validator_value))
    elif error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        fix = f"remove or rename it; allowed keys here: {', '.join(allowed)}"
    return f"{path}:{line}: {where}: {error.message}" + (f" ({fix})" if fix else "")


_FIXES = {
    "required": "add the missing key",
    # Every pattern in the config schema is a name rule.
    "pattern": "names are lower_snake_case, starting with a letter",
    "type": "check the value's type",
    "minProperties": "declare at least one entry",
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
